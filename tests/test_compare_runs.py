"""examples/compare_runs.py (em_nat.rendering.runs_comparison): runs side by side from the files they wrote."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from em_nat.rendering import runs_comparison

ROOT = Path(__file__).resolve().parents[1]


def _bleu(score):
    return {"score": score, "signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"}


def _fake_run(folder: Path, valid_odd, test_odd=None, legacy=False, raw_nat=True):
    """A run folder as examples/train_em.py leaves it: round-t/metrics.json, model folders, test_results.json."""
    nat = "nar" if legacy else "nat"
    for t, odd in enumerate(valid_odd):
        (folder / f"round-{t}" / "ar").mkdir(parents=True)
        has_nat = raw_nat or t > 0
        if has_nat:
            (folder / f"round-{t}" / nat).mkdir()
            (folder / f"round-{t}" / nat / "config.json").write_text("{}")
        metrics = {"eval/bleu_ar_beam": _bleu(39.0), "em/cm": 40.0 / (t + 1)}
        if has_nat:
            metrics.update({f"eval/bleu_{nat}_odd": _bleu(odd), f"eval/bleu_{nat}_argmax": _bleu(odd - 2)})
        (folder / f"round-{t}" / "metrics.json").write_text(json.dumps(metrics))
    if test_odd is not None:
        rows = [{"name": "ar_beam5", "model": "AR, round 0", "decoding": "beam 5", "bleu": _bleu(40.0)}]
        labels = ["NAT, raw data", "NAT, round 1 (KD)", "NAT, round 2 (EM)"]
        for t, odd in enumerate(test_odd):
            rows.append({"name": f"r{t}/nat_odd", "model": labels[t], "decoding": "ODD", "bleu": _bleu(odd)})
            rows.append(
                {
                    "name": f"r{t}/nat_lb9_odd_rescore",
                    "model": labels[t],
                    "decoding": "LB 9 + ODD + AR rescoring",
                    "bleu": _bleu(odd + 2),
                }
            )
        (folder / "test_results.json").write_text(json.dumps({"rows": rows}))
    return folder


def test_two_runs_side_by_side_with_targets(tmp_path):
    first = _fake_run(tmp_path / "a", [20.0, 25.0, 26.0], test_odd=[21.0, 26.0, 28.0], legacy=True)
    second = _fake_run(tmp_path / "b", [19.0, 24.0], raw_nat=True)
    table = runs_comparison({"seed 0": first, "seed 1": second})
    assert "| NAT, round 2 (EM) | BLEU ODD | 26.00 | - |" in table  # an old 'nar' run read with today's keys
    assert "| NAT, round 1 (KD) | BLEU argmax | 23.00 | 22.00 |" in table
    assert "| NAT, round 2 (EM) | ODD | 28.00 | not scored |" in table
    assert (
        "- seed 0: last NAT / AR beam 5 = 0.700 with ODD, 0.750 with LB 9 + ODD + AR rescoring; EM > KD > raw (ODD): yes"
        in table
    )
    assert "- seed 1" not in table  # not scored on test: no target line


def test_the_order_check_is_strict_and_uses_the_rounds_a_run_has(tmp_path):
    tie = _fake_run(tmp_path / "tie", [20.0, 25.0, 25.0], test_odd=[21.0, 26.0, 26.0])
    assert "EM > KD > raw (ODD): no" in runs_comparison({"tie": tie})
    vanilla = _fake_run(tmp_path / "v", [0.0, 25.0, 26.0], test_odd=[21.0, 26.0, 27.0], raw_nat=False)
    (vanilla / "test_results.json").write_text(
        json.dumps(
            {
                "rows": [
                    r for r in json.loads((vanilla / "test_results.json").read_text())["rows"] if r["name"][:2] != "r0"
                ]
            }
        )
    )
    table = runs_comparison({"vanilla": vanilla})
    assert "EM > KD (ODD): yes; no raw-data NAT" in table and "| NAT, raw data |" not in table
    beside = runs_comparison({"glancing": tie, "vanilla": vanilla})
    assert "| NAT, raw data | ODD | 21.00 | - |" in beside  # scored on test, but no such model: "-", not "not scored"
    kd_only = _fake_run(tmp_path / "kd", [20.0, 25.0], test_odd=[21.0, 26.0])
    assert "EM > KD > raw (ODD): not measured" in runs_comparison({"kd": kd_only})


def test_a_folder_without_rounds_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No finished round"):
        runs_comparison({"x": tmp_path / "empty"})


@pytest.mark.parametrize(
    "argv, message",
    [(["runs/multi30k-cpu"], "give LABEL=RUN_DIR"), (["a=/no/such/run"], "no such run folder")],
)
def test_script_refuses_bad_arguments(argv, message):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "compare_runs.py"), *argv], capture_output=True, text=True
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_script_prints_and_writes_the_tables(tmp_path):
    run = _fake_run(tmp_path / "a", [20.0, 25.0, 26.0], test_odd=[21.0, 26.0, 28.0])
    command = [sys.executable, str(ROOT / "examples" / "compare_runs.py"), f"seed 0={run}"]
    result = subprocess.run(command + ["--output_md", str(tmp_path / "c.md")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        result.stdout.strip() == (tmp_path / "c.md").read_text().strip()
        and "EM > KD > raw (ODD): yes" in result.stdout
    )
