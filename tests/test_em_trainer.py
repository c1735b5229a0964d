"""EMTrainer: two EM rounds of tiny models in-process, round folders, resume, bad input."""

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_SIZES, tiny_models
from datasets import Dataset, load_from_disk
from transformers import MarianMTModel

import em_nat
from em_nat import EMTrainer, EMTrainingArguments


def _dataset(pairs):
    return Dataset.from_dict({"translation": [{"src": s, "tgt": t} for s, t in pairs]})


def _args(tmp_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "run"),
        num_rounds=2,
        num_candidates=3,
        candidate_beam_size=4,
        ar_max_steps=30,
        nat_max_steps=30,
        warmup_steps=5,
        max_tokens=256,
        eval_steps=15,
        save_steps=10,
        ar_learning_rate=3e-3,
        nat_learning_rate=3e-3,
        max_target_length=24,
        eval_num_beams=2,
    )
    return EMTrainingArguments(**{**settings, **overrides})


def _models(tokenizer):
    return tiny_models(tokenizer)


def test_two_em_rounds_write_every_round(tokenizer, pairs, tmp_path):
    ar, nat = _models(tokenizer)
    args = _args(tmp_path)
    trainer = EMTrainer(ar, nat, tokenizer, _dataset(pairs), _dataset(pairs[:12]), args=args)
    metrics = trainer.train()
    assert set(metrics) == {"round-0", "round-1", "round-2"}
    for t in range(3):
        folder = tmp_path / "run" / f"round-{t}"
        assert (folder / "ar" / "model.safetensors").is_file() and (folder / "nat" / "model.safetensors").is_file()
        assert (folder / "nat" / "tokenizer.json").is_file()
        for name in ("ar", "nat"):  # the direction each saved model translates, for later --ar_model checks
            config = json.loads((folder / name / "config.json").read_text())
            assert (config["source_lang"], config["target_lang"]) == ("src", "tgt")
        saved = json.loads((folder / "metrics.json").read_text())
        assert saved["em/round"] == t
        assert "signature" in saved["eval/bleu_nat_odd"] and "nrefs:1" in saved["eval/bleu_ar_beam"]["signature"]
        assert saved["em/cm"] > 0 and saved["eval/cm_valid"] > 0
        assert saved["em/settings"]["num_candidates"] == 3
    data = load_from_disk(str(tmp_path / "run" / "round-1" / "data"))
    assert len(data) == len(pairs)
    assert all(len(c) == 3 for c in data["candidates"])
    for row in data.select(range(5)):
        assert row["selected"] == row["candidates"][row["selection"]]
        assert row["one_best"] == row["candidates"][0]
        best = max(range(3), key=lambda k: (row["nat_scores"][k], -k))
        assert row["selection"] == best
    assert 0.0 <= metrics["round-1"]["em/selection_differs_from_1best"] <= 1.0
    reloaded = em_nat.NATForConditionalGeneration.from_pretrained(tmp_path / "run" / "round-2" / "nat")
    assert reloaded.config.vocab_size == len(tokenizer)


def test_rerun_of_a_finished_run_trains_nothing(tokenizer, pairs, tmp_path, monkeypatch):
    ar, nat = _models(tokenizer)
    args = _args(tmp_path, num_rounds=1)
    EMTrainer(ar, nat, tokenizer, _dataset(pairs), _dataset(pairs[:6]), args=args).train()
    from em_nat.trainers import training

    def forbidden(*a, **k):
        raise AssertionError("a completed phase was trained again")

    monkeypatch.setattr(training.PhaseTrainer, "train", forbidden)
    ar, nat = _models(tokenizer)
    metrics = EMTrainer(ar, nat, tokenizer, _dataset(pairs), _dataset(pairs[:6]), args=args).train()
    assert set(metrics) == {"round-0", "round-1"}


def test_output_dir_of_a_different_run_is_refused(tokenizer, pairs, tmp_path):
    ar, nat = _models(tokenizer)
    EMTrainer(
        ar, nat, tokenizer, _dataset(pairs), None, args=_args(tmp_path, num_rounds=1, train_raw_nat=False)
    ).train()
    ar, nat = _models(tokenizer)
    with pytest.raises(ValueError, match="different EM run.*num_candidates"):
        EMTrainer(
            ar, nat, tokenizer, _dataset(pairs), None, args=_args(tmp_path, num_candidates=2, train_raw_nat=False)
        )


def test_mismatched_ar_tokenizer_is_refused(tokenizer, pairs, tmp_path):
    _, nat = _models(tokenizer)
    other = em_nat.train_tokenizer(
        [t for p in pairs for t in p] + ["zebra quartz"] * 5, vocab_size=150, min_frequency=1
    )
    ar = em_nat.build_ar_model(other, nat.config)
    with pytest.raises(ValueError, match="must share one tokenizer|Tokenizer and model do not match"):
        EMTrainer(ar, nat, tokenizer, _dataset(pairs), None, args=_args(tmp_path))


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"en": "a", "de": "b"}], "languages"),
        ([{"src": "a b", "tgt": ""}], "empty side"),
    ],
)
def test_bad_datasets_are_refused_before_training(tokenizer, tmp_path, rows, message):
    ar, nat = _models(tokenizer)
    with pytest.raises(ValueError, match=message):
        EMTrainer(ar, nat, tokenizer, Dataset.from_dict({"translation": rows}), None, args=_args(tmp_path))


def test_missing_translation_column_is_refused(tokenizer, tmp_path):
    ar, nat = _models(tokenizer)
    with pytest.raises(ValueError, match="'translation' column"):
        EMTrainer(ar, nat, tokenizer, Dataset.from_dict({"text": ["a"]}), None, args=_args(tmp_path))


def test_arguments_work_with_hf_argument_parser():
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(EMTrainingArguments).parse_args_into_dataclasses(
        [
            "--output_dir",
            "x",
            "--num_candidates",
            "5",
            "--candidate_beam_size",
            "6",
            "--restart",
            "nat",
            "--train_final_ar",
            "false",
        ]
    )
    assert args.num_candidates == 5 and args.restart == "nat" and args.train_final_ar is False
    assert args.restarts("nat") and not args.restarts("ar")
    with pytest.raises(ValueError, match="candidate_beam_size"):
        EMTrainingArguments(output_dir="x", num_candidates=5, candidate_beam_size=4)


def test_continued_ar_and_untrained_final_ar(tokenizer, pairs, tmp_path):
    ar, nat = _models(tokenizer)
    args = _args(
        tmp_path, num_rounds=2, restart="nat", ar_continue_max_steps=7, train_final_ar=False, train_raw_nat=False
    )
    metrics = EMTrainer(ar, nat, tokenizer, _dataset(pairs), _dataset(pairs[:6]), args=args).train()
    assert metrics["round-1"]["ar/steps"] == 7  # AR_1 continued from AR_0 for ar_continue_max_steps updates
    assert metrics["round-2"]["ar/trained"] is False
    run = tmp_path / "run"
    ar1 = MarianMTModel.from_pretrained(run / "round-1" / "ar")
    ar2 = MarianMTModel.from_pretrained(run / "round-2" / "ar")
    assert all(torch.equal(a, b) for a, b in zip(ar1.state_dict().values(), ar2.state_dict().values()))
    # the last selection would feed no model: it is not made, the earlier one is
    assert (run / "round-1" / "data").is_dir() and not (run / "round-2" / "data").exists()
    assert "em/selection_differs_from_1best" in metrics["round-1"]
    assert "em/selection_differs_from_1best" not in metrics["round-2"]
    assert (run / "round-2" / "candidates").is_dir()  # round 2's NAT still learns the 1-best of AR_1's candidates


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process; reset it around a test that needs another one (as
    accelerate's own tests do)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_tensorboard_tracker_and_bf16_autocast(tokenizer, pairs, tmp_path, fresh_accelerate_state):
    ar, nat = _models(tokenizer)
    args = _args(
        tmp_path,
        num_rounds=1,
        report_to="tensorboard",
        mixed_precision="bf16",
        ar_max_steps=4,
        nat_max_steps=4,
        eval_steps=2,
        train_raw_nat=False,
    )
    metrics = EMTrainer(ar, nat, tokenizer, _dataset(pairs), _dataset(pairs[:6]), args=args).train()
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    assert metrics["round-1"]["em/settings"]["mixed_precision"] == "bf16"
    assert metrics["round-1"]["nat/loss"] > 0


def test_every_numeric_option_has_a_range():
    import dataclasses

    from em_nat.trainers.arguments import NUMERIC_RANGES

    numeric = {f.name for f in dataclasses.fields(EMTrainingArguments) if f.type in (int, float, "int", "float")}
    assert numeric and numeric == set(NUMERIC_RANGES)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("max_tokens", 0, "max_tokens must be >= 1, got 0"),
        ("eval_max_samples", 0, r"eval_max_samples must be >= 1 \(or -1\), got 0"),
        ("label_smoothing", 1.0, r"label_smoothing must be in \[0, 0.999\]"),
        ("ar_learning_rate", 0.0, "ar_learning_rate must be >="),
        ("num_rounds", -1, "num_rounds must be >= 0"),
        ("nat_glancing_ratio", "0.7:1.2", "nat_glancing_ratio must be a ratio in"),
    ],
)
def test_out_of_range_options_are_refused_with_the_option_and_range(option, value, message):
    with pytest.raises(ValueError, match=message):
        EMTrainingArguments(output_dir="x", **{option: value})


def test_fp16_without_a_gpu_is_refused():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: fp16 is valid here")
    with pytest.raises(ValueError, match="fp16' needs a CUDA GPU"):
        EMTrainingArguments(output_dir="x", mixed_precision="fp16")


def _quick(tmp_path, **overrides):
    return _args(tmp_path, num_rounds=1, train_raw_nat=False, ar_max_steps=2, nat_max_steps=2, **overrides)


@pytest.fixture
def finished_run(tokenizer, pairs, tmp_path):
    ar, nat = _models(tokenizer)
    args = _quick(tmp_path)
    EMTrainer(ar, nat, tokenizer, _dataset(pairs), None, args=args).train()
    return tmp_path, Path(args.output_dir)


def test_an_unrelated_run_with_as_many_pairs_is_not_resumed(finished_run, tokenizer, pairs):
    other = [(s, pairs[(i + 1) % len(pairs)][1]) for i, (s, _) in enumerate(pairs)]  # other pairs, as many
    ar, nat = _models(tokenizer)
    with pytest.raises(ValueError, match="holds a different EM run: train_data differs"):
        EMTrainer(ar, nat, tokenizer, _dataset(other), None, args=_quick(finished_run[0]))


def test_resuming_with_other_model_sizes_is_refused(finished_run, tokenizer, pairs):
    torch.manual_seed(0)
    nat = em_nat.build_nat_model(tokenizer, **{**TINY_SIZES, "d_model": 64})
    ar = em_nat.build_ar_model(tokenizer, nat.config)
    with pytest.raises(ValueError, match="holds a different EM run: ar_config differs.*d_model"):
        EMTrainer(ar, nat, tokenizer, _dataset(pairs), None, args=_quick(finished_run[0]))


def test_resuming_with_another_tokenizer_is_refused(finished_run, pairs):
    other = em_nat.train_tokenizer(
        [x for p in pairs for x in p] + ["zebra quartz"] * 3, vocab_size=120, min_frequency=1
    )
    ar, nat = _models(other)
    with pytest.raises(ValueError, match="holds a different EM run: (train_data|tokenizer|ar_config) differs"):
        EMTrainer(ar, nat, other, _dataset(pairs), None, args=_quick(finished_run[0]))


def test_a_given_ar0_is_recorded_and_resuming_from_another_is_refused(tokenizer, pairs, tmp_path):
    """train_initial_ar false: round 0's metrics name AR_0 (path and weights digest); another AR_0 of the same
    config does not resume the run."""
    from em_nat.trainers.em_trainer import initial_ar_identity

    ar, nat = _models(tokenizer)
    ar.name_or_path = "teachers/ar0"
    args = _quick(tmp_path, train_initial_ar=False)
    metrics = EMTrainer(ar, nat, tokenizer, _dataset(pairs), None, args=args).train()
    recorded = metrics["round-0"]["em/initial_ar"]
    assert recorded == initial_ar_identity(ar) and recorded["name_or_path"] == "teachers/ar0"
    other_ar, nat = _models(tokenizer)
    with torch.no_grad():
        other_ar.get_input_embeddings().weight.add_(0.01)  # same config, other weights
    assert initial_ar_identity(other_ar)["weights_sha256"] != recorded["weights_sha256"]
    with pytest.raises(ValueError, match="holds a different EM run: initial_ar differs"):
        EMTrainer(other_ar, nat, tokenizer, _dataset(pairs), None, args=_quick(tmp_path, train_initial_ar=False))


def test_the_same_run_resumes_and_an_old_folder_without_the_new_entries_too(finished_run, tokenizer, pairs):
    base, run_dir = finished_run
    ar, nat = _models(tokenizer)
    EMTrainer(ar, nat, tokenizer, _dataset(pairs), None, args=_quick(base))  # same run: accepted
    state_path = run_dir / "em_state.json"
    state = json.loads(state_path.read_text())
    for key in ("train_data", "eval_data", "tokenizer", "ar_config", "nat_config"):
        del state["fingerprint"][key]
    state_path.write_text(json.dumps(state))
    ar, nat = _models(tokenizer)
    EMTrainer(ar, nat, tokenizer, _dataset(pairs), None, args=_quick(base))


def test_overwrite_starts_truly_fresh(finished_run, tokenizer, pairs):
    base, finished_run = finished_run
    stale = finished_run / "round-5"
    stale.mkdir()
    (finished_run / "results.md").write_text("old table")
    (finished_run / "notes.txt").write_text("the user's own file")
    ar, nat = _models(tokenizer)
    trainer = EMTrainer(
        ar,
        nat,
        tokenizer,
        _dataset(pairs),
        None,
        args=_quick(base, num_candidates=2, overwrite_output_dir=True),
    )
    assert not stale.exists() and not (finished_run / "round-1").exists()
    assert not (finished_run / "results.md").exists()
    assert (finished_run / "notes.txt").read_text() == "the user's own file"
    assert trainer.state["completed"] == []


def test_lengths_beyond_a_models_positions_are_refused_before_training(tokenizer, pairs, tmp_path):
    """A source longer than a model's positions (here a 5,000-word line, max_source_length above the positions) is
    refused at construction, naming the option and the bound, not an IndexError at the first step."""
    ar, nat = _models(tokenizer)
    limit = ar.config.max_position_embeddings
    long_pairs = [*pairs, (" ".join([pairs[0][0]] * 5000), pairs[0][1])]
    message = f"after truncation to max_source_length, but the AR's max_position_embeddings is {limit}"
    with pytest.raises(ValueError, match=message + f".*at most {limit}"):
        EMTrainer(ar, nat, tokenizer, _dataset(long_pairs), None, args=_quick(tmp_path, max_source_length=limit + 1))
    EMTrainer(ar, nat, tokenizer, _dataset(long_pairs), None, args=_quick(tmp_path, max_source_length=limit))
