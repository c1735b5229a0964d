"""examples/evaluate_em.py (the test-set results table of a run) and the presets of examples/train_em.py."""

import json
import sys
from pathlib import Path

import pytest
from conftest import tiny_models

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import evaluate_em  # noqa: E402
import train_em  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizer):
    """A run folder as the trainer leaves it: AR_0, a NAT per round, each round's metrics.json."""
    out = tmp_path_factory.mktemp("run")
    for t in range(3):
        ar, nat = tiny_models(tokenizer, seed=t)
        folder = out / f"round-{t}"
        nat.save_pretrained(folder / "nar")
        tokenizer.save_pretrained(folder / "nar")
        ar.save_pretrained(folder / "ar")
        tokenizer.save_pretrained(folder / "ar")
        (folder / "metrics.json").write_text(json.dumps({"em/round": t, "em/cm": 10.0 - t}))
    return out


def test_evaluate_run_scores_every_round_and_decoding(run_dir, pairs):
    sources, references = [s for s, _ in pairs[:6]], [t for _, t in pairs[:6]]
    result = evaluate_em.evaluate_run(
        str(run_dir), sources, references, batch1_sentences=2, batch_size=4, warmup=0, ct2=False
    )
    names = [r["name"] for r in result["rows"]]
    expected = ["ar_greedy", "ar_beam5"] + [f"r{t}/{m}" for t in range(3) for m in evaluate_em.NAT_DECODINGS]
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
    table = evaluate_em.write_results(result, str(run_dir))
    assert sum(line.startswith("| ") for line in table.splitlines()) == len(expected) + 1  # header + a line a row
    assert (run_dir / "test_results.md").read_text().strip() == table.strip()
    assert json.loads((run_dir / "test_results.json").read_text())["rows"][0]["name"] == "ar_greedy"


def test_last_model_card_carries_the_test_results_and_the_data_terms(run_dir, pairs):
    import yaml

    sources, references = [s for s, _ in pairs[:6]], [t for _, t in pairs[:6]]
    result = evaluate_em.evaluate_run(str(run_dir), sources, references, batch1_sentences=2, batch_size=4, warmup=0)
    teacher = str(run_dir / "round-0" / "ar")  # the preset starts from a trained teacher folder
    _, em, _ = train_em.parse_args(["--preset", "multi30k-cpu", "--output_dir", str(run_dir), "--ar_model", teacher])
    path = train_em.write_model_card(em, result, example='He said "hi".')
    assert path == str(run_dir / "round-2" / "nar" / "README.md")
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
    assert "1-best of AR_1, the AR trained on the NAR's round-1 selection (EM)" in card
    assert 'tokenizer(["He said \\"hi\\"."], return_tensors="pt")' in card  # the example stays valid Python


def test_run_without_a_raw_data_nat_is_scored_from_round_1(run_dir, pairs, tmp_path):
    """--train_raw_nat false leaves round-0 with the AR only; the tokenizer then comes from the AR folder."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "round-0" / "nar")
    sources, references = [s for s, _ in pairs[:4]], [t for _, t in pairs[:4]]
    result = evaluate_em.evaluate_run(str(copy), sources, references, batch1_sentences=1, batch_size=4, warmup=0)
    assert sorted({r["round"] for r in result["rows"] if r["round"] is not None}) == [1, 2]
    assert "em_ge_kd_ge_raw" not in result["targets"]


def _rows(ar_beam, raw, kd, em, em_rescored):
    bleu = {
        "ar_beam5": ar_beam,
        "r0/nat_odd": raw,
        "r1/nat_odd": kd,
        "r2/nat_odd": em,
        "r2/nat_lb9_odd_rescore": em_rescored,
    }
    return [
        {"name": name, "round": None if name.startswith("ar") else int(name[1]), "bleu": {"score": score}}
        for name, score in bleu.items()
    ]


def test_targets_are_checked_against_the_issue_thresholds():
    met = evaluate_em.check_targets(_rows(40.0, 20.0, 30.0, 36.5, 38.0))
    assert met["ratio_rescored"] == pytest.approx(0.95) and met["ratio_rescored_met"]
    assert met["ratio_odd"] == pytest.approx(36.5 / 40) and met["ratio_odd_met"] and met["em_ge_kd_ge_raw"]
    missed = evaluate_em.check_targets(_rows(40.0, 31.0, 30.0, 35.0, 37.9))
    assert not missed["ratio_rescored_met"] and not missed["ratio_odd_met"] and not missed["em_ge_kd_ge_raw"]


def test_evaluate_run_without_rounds_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="train first"):
        evaluate_em.evaluate_run(str(tmp_path), ["a"], ["b"])


def test_multi30k_presets_fill_in_what_the_command_line_leaves_out(run_dir):
    teacher = str(run_dir / "round-0" / "ar")
    script, em, synthetic = train_em.parse_args(
        ["--preset", "multi30k-cpu", "--num_rounds", "3", "--ar_model", teacher]
    )
    assert not synthetic and script.preset == "multi30k-cpu" and script.ar_model == teacher
    assert train_em.load_preset("multi30k-cpu")["ar_model"] == "runs/multi30k-teacher-cpu/round-0/ar"
    assert not em.train_initial_ar and em.candidate_backend == "ctranslate2"
    assert script.train.endswith("multi30k_en_de/train") and script.test.endswith("multi30k_en_de/test")
    assert (em.source_lang, em.target_lang, em.output_dir) == ("en", "de", "runs/multi30k-cpu")
    assert em.num_rounds == 3  # the command line wins
    assert (script.d_model, script.encoder_layers, em.num_candidates) == (192, 3, 8)
    assert (em.hub_dataset_name, em.hub_license) == ("multi30k", "cc-by-nc-4.0")  # the data's non-commercial terms
    script, em, _ = train_em.parse_args(["--preset=multi30k-gpu"])
    assert (script.d_model, script.encoder_layers, script.ffn_dim, script.attention_heads) == (256, 5, 1024, 4)
    assert em.num_candidates == 20 and em.candidate_beam_size == 20 and em.mixed_precision == "bf16"
    _, em, synthetic = train_em.parse_args([])
    assert synthetic and em.output_dir == train_em.DEFAULT_OUTPUT_DIR and em.source_lang == "src"


def test_lone_cpu_process_under_accelerate_launch_uses_every_core(monkeypatch):
    calls = []
    monkeypatch.setattr(train_em.torch, "set_num_threads", calls.append)
    monkeypatch.setattr(train_em.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train_em.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    train_em.use_all_cores_when_alone()
    assert calls == [2]
    monkeypatch.setenv("WORLD_SIZE", "2")  # several processes share the cores: leave their threads alone
    train_em.use_all_cores_when_alone()
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # chosen by the user (--num_cpu_threads_per_process)
    train_em.use_all_cores_when_alone()
    assert calls == [2]


def test_ct2_rows_of_ar_0_decode_like_generate_in_float32(run_dir, pairs):
    pytest.importorskip("ctranslate2", reason="CT2 rows need ctranslate2 (pip install 'em-nat[ct2]')")
    sources, references = [s for s, _ in pairs[:6]], [t for _, t in pairs[:6]]
    result = evaluate_em.evaluate_run(str(run_dir), sources, references, batch1_sentences=2, batch_size=4, warmup=0)
    rows = {r["name"]: r for r in result["rows"]}
    assert set(evaluate_em.CT2_DECODINGS) <= set(rows)
    assert rows["ar_ct2_float32_greedy"]["bleu"] == rows["ar_greedy"]["bleu"]
    assert rows["ar_ct2_float32_beam5"]["bleu"] == rows["ar_beam5"]["bleu"]
    assert (
        rows["ar_ct2_int8_greedy"]["decoding"] == "CT2 int8 greedy"
        and rows["ar_ct2_int8_greedy"]["model"] == "AR, round 0"
    )
    assert "| AR, round 0 | CT2 int8 beam 5 |" in evaluate_em.markdown(result)


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
    argv = ["--run_dir", str(tmp_path / "no-run-here"), "--source", str(src), "--reference", str(ref)]
    with pytest.raises(SystemExit) as exit_info:
        evaluate_em.main(argv)  # the run folder does not exist: the error comes before anything is loaded
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{blank_file} line 2" in err
    assert "delete that line number from both" in err and "--drop_empty" in err
    sources, references = evaluate_em.read_test_set(str(src), str(ref), drop_empty=True)
    assert sources == ["a dog .", "my friend ."] and references == ["ein hund .", "mein freund ."]
    assert "Dropped 1 of 3 test pairs" in capsys.readouterr().out


def test_drop_empty_is_an_option_of_the_command_line(tmp_path, monkeypatch):
    src, ref = tmp_path / "test.en", tmp_path / "test.de"
    src.write_text("a dog .\n\nthe cat .\n")
    ref.write_text("ein hund .\nleer .\ndie katze .\n")
    seen = {}
    monkeypatch.setattr(evaluate_em, "evaluate_run", lambda run_dir, sources, references, *a: seen.update(s=sources))
    monkeypatch.setattr(evaluate_em, "write_results", lambda result, run_dir: "table")
    evaluate_em.main(["--run_dir", str(tmp_path), "--source", str(src), "--reference", str(ref), "--drop_empty"])
    assert seen["s"] == ["a dog .", "the cat ."]
    ref.write_text("ein hund .\n")
    with pytest.raises(ValueError, match="has 3 lines but .* has 1"):
        evaluate_em.read_test_set(str(src), str(ref))
