"""em_nat.evaluation (a run's test-set table, what examples/evaluate_em.py prints) and the presets of
examples/train_cli.py (em_nat.train_cli)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_models

import em_nat.train_cli as train_cli
from em_nat.evaluation import CT2_METHODS, NAT_METHODS, evaluate_run, read_test_set, write_test_results
from em_nat.hub import write_model_card
from em_nat.rendering import markdown_of_test_results

ROOT = Path(__file__).resolve().parents[1]
PRESET_DIR = str(ROOT / "examples" / "presets")
EVALUATE = str(ROOT / "examples" / "evaluate_em.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizer):
    """A run folder as the trainer leaves it: AR_0, a NAT per round, each round's metrics.json."""
    out = tmp_path_factory.mktemp("run")
    for t in range(3):
        ar, nat = tiny_models(tokenizer, seed=t)
        folder = out / f"round-{t}"
        nat.save_pretrained(folder / "nat")
        tokenizer.save_pretrained(folder / "nat")
        ar.save_pretrained(folder / "ar")
        tokenizer.save_pretrained(folder / "ar")
        (folder / "metrics.json").write_text(json.dumps({"em/round": t, "em/cm": 10.0 - t}))
    return out


def test_evaluate_run_scores_every_round_and_decoding(run_dir, pairs):
    sources, references = [s for s, _ in pairs[:6]], [t for _, t in pairs[:6]]
    result = evaluate_run(str(run_dir), sources, references, batch1_sentences=2, batch_size=4, warmup=0, ct2=False)
    names = [r["name"] for r in result["rows"]]
    expected = ["ar_greedy", "ar_beam5"] + [f"r{t}/{m}" for t in range(3) for m in NAT_METHODS]
    assert names == expected
    for row in result["rows"]:
        assert row["bleu"]["signature"].startswith("nrefs:1")
        assert 0.0 <= row["repeat_rate"] <= 1.0
        assert row["speedup_vs_ar_beam5_batch1"] > 0 and row["speedup_vs_ar_beam5_batch4"] > 0
    beam = result["rows"][1]
    assert beam["speedup_vs_ar_beam5_batch1"] == 1.0 and beam["speedup_vs_ar_beam5_batch4"] == 1.0
    assert [r["cm_train_targets"] for r in result["rows"]] == [None, None] + [10.0] * 3 + [9.0] * 3 + [8.0] * 3
    assert [r["model"] for r in result["rows"][2::3]] == ["NAT, raw data", "NAT, round 1 (KD)", "NAT, round 2 (EM)"]
    assert result["test_sentences"] == 6 and result["batch1_sentences"] == 2
    table = write_test_results(result, str(run_dir))
    assert sum(line.startswith("| ") for line in table.splitlines()) == len(expected) + 1  # header + a line a row
    assert (run_dir / "test_results.md").read_text().strip() == table.strip()
    assert json.loads((run_dir / "test_results.json").read_text())["rows"][0]["name"] == "ar_greedy"


def test_last_model_card_carries_the_test_results_and_the_data_terms(run_dir, pairs):
    import yaml

    sources, references = [s for s, _ in pairs[:6]], [t for _, t in pairs[:6]]
    result = evaluate_run(str(run_dir), sources, references, batch1_sentences=2, batch_size=4, warmup=0)
    teacher = str(run_dir / "round-0" / "ar")  # the preset starts from a trained teacher folder
    options = ["--preset", "multi30k-cpu", "--output_dir", str(run_dir), "--ar_model", teacher]
    _, em = train_cli.parse_args(options, PRESET_DIR)
    path = write_model_card(run_dir, em, result, example='He said "hi".')
    assert path == str(run_dir / "round-2" / "nat" / "README.md")
    card = Path(path).read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "cc-by-nc-4.0" and meta["datasets"] == ["multi30k"]
    test = [m for r in meta["model-index"][0]["results"] if r["dataset"]["split"] == "test" for m in r["metrics"]]
    decodings = ["argmax", "ODD", "LB 9 + ODD + AR rescoring"]
    assert [m["name"] for m in test] == [f"sacreBLEU ({d})" for d in decodings]
    round2 = {r["decoding"]: r["bleu"]["score"] for r in result["rows"] if r["round"] == 2}
    assert [m["value"] for m in test] == [round2[d] for d in decodings]
    section = card.split("## Results on the test data")[1].split("\n## ")[0]
    assert "| NAT, round 2 (EM) | ODD |" in section and "| AR, round 0 | beam 5 |" in section
    assert "round 1" not in section and "raw data" not in section  # only this round's NAT and the AR
    assert "1-best of AR_1, the AR trained on the NAT's round-1 selection (EM)" in card
    assert 'tokenizer(["He said \\"hi\\"."], return_tensors="pt")' in card  # the example stays valid Python


def test_run_without_a_raw_data_nat_is_scored_from_round_1(run_dir, pairs, tmp_path):
    """--train_raw_nat false leaves round-0 with the AR only; the tokenizer then comes from the AR folder."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "round-0" / "nat")
    sources, references = [s for s, _ in pairs[:4]], [t for _, t in pairs[:4]]
    result = evaluate_run(str(copy), sources, references, batch1_sentences=1, batch_size=4, warmup=0)
    assert sorted({r["round"] for r in result["rows"] if r["round"] is not None}) == [1, 2]


def test_evaluate_run_without_rounds_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="train first"):
        evaluate_run(str(tmp_path), ["a"], ["b"])


def test_multi30k_presets_fill_in_what_the_command_line_leaves_out(run_dir):
    teacher = str(run_dir / "round-0" / "ar")
    script, em = train_cli.parse_args(
        ["--preset", "multi30k-cpu", "--num_rounds", "3", "--ar_model", teacher], PRESET_DIR
    )
    assert not train_cli.is_synthetic(script) and script.preset == "multi30k-cpu" and script.ar_model == teacher
    assert train_cli.load_preset("multi30k-cpu", PRESET_DIR)["ar_model"] == "runs/multi30k-teacher-cpu/round-0/ar"
    assert not em.train_initial_ar and em.candidate_backend == "ctranslate2"
    assert script.train.endswith("multi30k_en_de/train") and script.test.endswith("multi30k_en_de/test")
    assert (em.source_lang, em.target_lang, em.output_dir) == ("en", "de", "runs/multi30k-cpu")
    assert em.num_rounds == 3  # the command line wins
    assert (script.d_model, script.encoder_layers, em.num_candidates) == (192, 3, 8)
    assert (em.hub_dataset_name, em.hub_license) == ("multi30k", "cc-by-nc-4.0")  # the data's non-commercial terms
    script, em = train_cli.parse_args(["--preset=multi30k-gpu"], PRESET_DIR)
    assert (script.d_model, script.encoder_layers, script.ffn_dim, script.attention_heads) == (256, 5, 1024, 4)
    assert em.num_candidates == 20 and em.candidate_beam_size == 20 and em.mixed_precision == "bf16"
    script, em = train_cli.parse_args([], PRESET_DIR)
    assert train_cli.is_synthetic(script) and em.output_dir == train_cli.DEFAULT_OUTPUT_DIR and em.source_lang == "src"


def test_lone_cpu_process_under_accelerate_launch_uses_every_core(monkeypatch):
    calls = []
    monkeypatch.setattr(train_cli.torch, "set_num_threads", calls.append)
    monkeypatch.setattr(train_cli.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train_cli.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    train_cli.use_all_cores_when_alone()
    assert calls == [2]
    monkeypatch.setenv("WORLD_SIZE", "2")  # several processes share the cores: leave their threads alone
    train_cli.use_all_cores_when_alone()
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # chosen by the user (--num_cpu_threads_per_process)
    train_cli.use_all_cores_when_alone()
    assert calls == [2]


def test_ct2_rows_of_ar_0_decode_like_generate_in_float32(run_dir, pairs):
    pytest.importorskip("ctranslate2", reason="CT2 rows need ctranslate2 (pip install 'em-nat[ct2]')")
    sources, references = [s for s, _ in pairs[:6]], [t for _, t in pairs[:6]]
    result = evaluate_run(str(run_dir), sources, references, batch1_sentences=2, batch_size=4, warmup=0)
    rows = {r["name"]: r for r in result["rows"]}
    assert set(CT2_METHODS) <= set(rows)
    assert rows["ct2_float32_greedy"]["bleu"] == rows["ar_greedy"]["bleu"]
    assert rows["ct2_float32_beam5"]["bleu"] == rows["ar_beam5"]["bleu"]
    assert (
        rows["ct2_int8_greedy"]["decoding"] == "CT2 int8 greedy" and rows["ct2_int8_greedy"]["model"] == "AR, round 0"
    )
    assert "| AR, round 0 | CT2 int8 beam 5 |" in markdown_of_test_results(result)


def _evaluate_command(*argv):
    return subprocess.run([sys.executable, EVALUATE, *argv], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("blank_side", ["source", "reference"])
def test_blank_test_line_is_refused_before_any_model_loads(tmp_path, capsys, blank_side):
    src, ref = tmp_path / "test.en", tmp_path / "test.de"
    lines = {
        "source": ["a dog .", "the cat .", "my friend ."],
        "reference": ["ein hund .", "die katze .", "mein freund ."],
    }
    lines[blank_side][1] = "   "  # whitespace only: blank after stripping
    src.write_text("\n".join(lines["source"]) + "\n")
    ref.write_text("\n".join(lines["reference"]) + "\n")
    blank_file = src if blank_side == "source" else ref
    sources, references = read_test_set(str(src), str(ref), drop_empty=True)
    assert sources == ["a dog .", "my friend ."] and references == ["ein hund .", "mein freund ."]
    assert "Dropped 1 of 3 test pairs" in capsys.readouterr().out
    with pytest.raises(ValueError) as error:
        read_test_set(str(src), str(ref))
    assert f"{blank_file} line 2" in str(error.value)
    assert "delete that line number from both" in str(error.value) and "--drop_empty" in str(error.value)


def test_evaluate_command_checks_the_test_files_and_the_run_before_loading_models(tmp_path):
    """examples/evaluate_em.py: a blank line, then a folder without a finished round, each stop argparse-style
    (exit 2) with the fix; --drop_empty drops the blank pair first."""
    src, ref = tmp_path / "test.en", tmp_path / "test.de"
    src.write_text("a dog .\n\nthe cat .\n")
    ref.write_text("ein hund .\nleer .\ndie katze .\n")
    argv = ["--run_dir", str(tmp_path / "no-run-here"), "--source", str(src), "--reference", str(ref)]
    blank = _evaluate_command(*argv)
    assert blank.returncode == 2 and f"{src} line 2" in blank.stderr and "Traceback" not in blank.stderr
    dropped = _evaluate_command(*argv, "--drop_empty")
    assert "Dropped 1 of 3 test pairs" in dropped.stdout
    assert dropped.returncode == 2 and "No finished round" in dropped.stderr and "train first" in dropped.stderr
    ref.write_text("ein hund .\n")
    with pytest.raises(ValueError, match="has 3 lines but .* has 1"):
        read_test_set(str(src), str(ref))
