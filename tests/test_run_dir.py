"""RunDir, the owner of a run folder; run folders, presets and options written before the rename to one name, NAT
(`round-<t>/nar`, `eval/bleu_nar_odd`, `nar_max_steps`), stay readable and resumable."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import tiny_models
from datasets import Dataset

from em_nat import EMTrainer, EMTrainingArguments
from em_nat.evaluation import evaluate_run
from em_nat.run_dir import RunDir, modern_name, modernize
from em_nat.train_cli import parse_args

ROOT = Path(__file__).resolve().parents[1]
PRESET_DIR = str(ROOT / "examples" / "presets")


def _dataset(pairs):
    return Dataset.from_dict({"translation": [{"src": s, "tgt": t} for s, t in pairs]})


def test_layout_finished_rounds_and_metrics(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.finished_rounds() == [] and not run.has_state()
    with pytest.raises(FileNotFoundError, match="train first"):
        run.require_finished_rounds()
    run.write_metrics(2, {"em/cm": 3.0})
    run.write_metrics(0, {"em/cm": 5.0})
    (tmp_path / "run" / "round-1").mkdir()  # a round in progress: no metrics yet
    assert run.finished_rounds() == [0, 2]
    assert run.all_metrics() == {0: {"em/cm": 5.0}, 2: {"em/cm": 3.0}}
    assert run.model(1, "nat") == str(tmp_path / "run" / "round-1" / "nat")
    assert run.work(1, "nat") == str(tmp_path / "run" / "round-1" / "work" / "nat")
    with pytest.raises(ValueError, match="kind must be one of"):
        run.model(1, "nar")
    run.write_state({"completed": ["round-0/ar"]})
    assert run.read_state() == {"completed": ["round-0/ar"]}
    (tmp_path / "run" / "results.md").write_text("table")
    (tmp_path / "run" / "mine.txt").write_text("not the run's")
    removed = run.remove_outputs()
    assert sorted(Path(p).name for p in removed) == ["em_state.json", "results.md", "round-0", "round-1", "round-2"]
    assert (tmp_path / "run" / "mine.txt").is_file()


def test_old_names_are_read_as_new_names():
    assert modern_name("eval/bleu_nar_odd") == "eval/bleu_nat_odd"
    assert modern_name("nar/steps") == "nat/steps" and modern_name("time/nar_seconds") == "time/nat_seconds"
    assert modern_name("nar_max_steps") == "nat_max_steps" and modern_name("round-2/nar") == "round-2/nat"
    for unchanged in ("narrow", "binary", "eval/bleu_ar_beam", "train_raw_nat", "nat_glancing_ratio"):
        assert modern_name(unchanged) == unchanged
    state = {"completed": ["round-0/ar", "round-0/nar"], "fingerprint": {"restart": "nar", "nar_targets": "one_best"}}
    assert modernize(state) == {
        "completed": ["round-0/ar", "round-0/nat"],
        "fingerprint": {"restart": "nat", "nat_targets": "one_best"},
    }


def test_old_option_spellings_on_the_command_line_and_in_presets(tmp_path):
    preset = tmp_path / "old.json"
    preset.write_text(json.dumps({"nar_max_steps": 7, "restart": "nar", "output_dir": str(tmp_path / "r")}))
    _, em = parse_args(["--preset", str(preset), "--nar_learning_rate=0.001"], PRESET_DIR)
    assert (em.nat_max_steps, em.restart, em.nat_learning_rate) == (7, "nat", 0.001)
    assert EMTrainingArguments(output_dir="x", restart="nar").restart == "nat"


def _legacy_run(trained, old):
    """A copy of a finished run in the layout of before the rename: NAT folders `nar`, old metric keys, old state."""
    shutil.copytree(trained, old)
    for folder in old.glob("round-*/nat"):
        folder.rename(folder.parent / "nar")
    for path in [*old.glob("round-*/metrics.json"), old / "em_state.json"]:
        text = path.read_text()
        for new, legacy in (("bleu_nat_", "bleu_nar_"), ("repeat_rate_nat_", "repeat_rate_nar_"), ('"nat/', '"nar/')):
            text = text.replace(new, legacy)
        text = text.replace('/nat"', '/nar"').replace('"nat_', '"nar_').replace('"time/nat_', '"time/nar_')
        path.write_text(text)
    assert (
        "round-0/nar" in (old / "em_state.json").read_text()
        and '"nar_max_steps"' in (old / "em_state.json").read_text()
    )


def test_a_run_folder_from_before_the_rename_loads_evaluates_and_resumes(tokenizer, pairs, tmp_path):
    args = dict(
        num_rounds=1,
        num_candidates=2,
        candidate_beam_size=2,
        ar_max_steps=4,
        nat_max_steps=4,
        warmup_steps=1,
        max_tokens=256,
        save_steps=2,
        eval_steps=4,
        max_target_length=24,
        eval_num_beams=2,
    )
    train, valid = _dataset(pairs[:24]), _dataset(pairs[:6])
    ar, nat = tiny_models(tokenizer)
    trained = tmp_path / "new"
    EMTrainer(ar, nat, tokenizer, train, valid, args=EMTrainingArguments(output_dir=str(trained), **args)).train()
    old = tmp_path / "old"
    _legacy_run(trained, old)
    run = RunDir(old)
    assert run.model(1, "nat") == str(old / "round-1" / "nar") and run.has_model(1, "nat")
    assert "eval/bleu_nat_odd" in run.metrics(1) and "round-1/nat" in run.read_state()["completed"]
    sources, references = [s for s, _ in pairs[:4]], [t for _, t in pairs[:4]]
    result = evaluate_run(old, sources, references, batch1_sentences=1, batch_size=4, warmup=0, ct2=False)
    assert {r["round"] for r in result["rows"]} == {None, 0, 1}
    # resuming the old folder with today's options trains nothing again: every phase is complete
    stamps = {p: p.stat().st_mtime_ns for p in old.glob("round-*/*/model.safetensors")}
    ar, nat = tiny_models(tokenizer)
    EMTrainer(ar, nat, tokenizer, train, valid, args=EMTrainingArguments(output_dir=str(old), **args)).train()
    assert {p: p.stat().st_mtime_ns for p in old.glob("round-*/*/model.safetensors")} == stamps


def test_a_nat_phase_interrupted_before_the_rename_resumes_from_its_checkpoint(tmp_path):
    """round-<t>/work/nar (old code) is where a new EMTrainer looks for that NAT phase's checkpoint, so the phase goes
    on from its last update instead of update 0; a new run folder uses work/nat."""
    run = RunDir(tmp_path)
    assert run.work(1, "nat") == str(tmp_path / "round-1" / "work" / "nat")
    (tmp_path / "round-1" / "work" / "nar" / "checkpoint").mkdir(parents=True)
    assert run.work(1, "nat") == str(tmp_path / "round-1" / "work" / "nar")
    assert run.work(1, "ar") == str(tmp_path / "round-1" / "work" / "ar")
    (tmp_path / "round-1" / "work" / "nat").mkdir()
    assert run.work(1, "nat") == str(tmp_path / "round-1" / "work" / "nat")
