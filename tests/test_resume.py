"""Exact, crash-safe resume of a phase: kills simulated deterministically at every point of a checkpoint write.

A "kill" is an exception raised from a monkeypatched hook; the killed trainer is dropped and a new one, on a freshly
built model, is started on the same folder, as a re-run of the same command would. Its final weights must equal those
of an uninterrupted run of the phase.
"""

import json
import os
import re
import shutil

import pytest
import torch
from accelerate import Accelerator
from conftest import tiny_models
from datasets import Dataset

from em_nat import EMTrainer, EMTrainingArguments
from em_nat.trainers import training
from em_nat.trainers.training import Example, PhaseConfig, PhaseTrainer

CONFIG = dict(
    learning_rate=3e-3, warmup_steps=3, max_steps=8, max_tokens=64, eval_steps=3, save_steps=3, keep="last", seed=3
)  # checkpoints after updates 3 and 6; 8 updates cross an epoch boundary (6 batches an epoch)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is several times faster than two on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Killed(Exception):
    """Stands for SIGKILL: raised from a hook, never caught by the trainer."""


def _examples(tokenizer, pairs):
    sources = tokenizer([s for s, _ in pairs])["input_ids"]
    targets = tokenizer(text_target=[t for _, t in pairs])["input_ids"]
    return [Example(s, t) for s, t in zip(sources, targets)]


def _trainer(tokenizer, pairs, folder, **overrides):
    _, nat = tiny_models(tokenizer)  # the same initial weights every time
    examples = _examples(tokenizer, pairs[:32])
    config = PhaseConfig(**{**CONFIG, **overrides})
    return PhaseTrainer(
        nat, examples, examples[:4], config, Accelerator(cpu=True), str(folder), tokenizer.pad_token_id, "nat"
    )


def _train(tokenizer, pairs, folder, **overrides):
    torch.manual_seed(11)  # the RNG state a fresh process would have; a resumed phase takes it from its checkpoint
    model, metrics = _trainer(tokenizer, pairs, folder, **overrides).train()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, metrics


_BASELINES = {}


def _uninterrupted(tokenizer, pairs, tmp_path_factory, **overrides):
    key = json.dumps(overrides, sort_keys=True)
    if key not in _BASELINES:
        _BASELINES[key] = _train(tokenizer, pairs, tmp_path_factory.mktemp("baseline") / "nat", **overrides)
    return _BASELINES[key]


def _count_updates(monkeypatch):
    """Record the updates the next run makes (to see where it resumed)."""
    done = []
    original = PhaseTrainer._after_update

    def counting(self, state, running):
        done.append(state["step"])
        original(self, state, running)

    monkeypatch.setattr(PhaseTrainer, "_after_update", counting)
    return done


def _assert_same_weights(resumed, expected):
    assert resumed.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.allclose(resumed[name], tensor, atol=1e-6, rtol=0), name


def _resume_and_compare(tokenizer, pairs, folder, baseline, monkeypatch, first_update, **overrides):
    monkeypatch.undo()
    done = _count_updates(monkeypatch)
    weights, metrics = _train(tokenizer, pairs, folder, **overrides)
    monkeypatch.undo()
    assert done == list(range(first_update, CONFIG["max_steps"] + 1)), "did not resume from the expected update"
    _assert_same_weights(weights, baseline[0])
    expected = baseline[1]
    assert metrics["nat/steps"] == expected["nat/steps"]
    assert [h["step"] for h in metrics["nat/history"]] == [h["step"] for h in expected["nat/history"]]
    for got, want in zip(metrics["nat/history"], expected["nat/history"]):
        assert got["nat/eval_loss"] == pytest.approx(want["nat/eval_loss"], abs=1e-6)
    if "nat/averaged_steps" in expected:
        assert metrics["nat/averaged_steps"] == expected["nat/averaged_steps"]
    leftovers = sorted(p for p in os.listdir(folder) if p.endswith((".new", ".old", ".trash", ".tmp")))
    assert not leftovers, f"a killed write's leftovers were not cleaned up: {leftovers}"


# ----- a) killed after an update, at or between checkpoints -----------------------------------------------------------


@pytest.mark.parametrize(
    "kill_after, resume_from, overrides",
    [
        (3, 3, {}),  # right after the checkpoint of update 3 was committed
        (5, 3, {"keep": "best"}),  # between checkpoints: updates 4-5 are redone; best/ is ahead of the checkpoint
        (7, 6, {"average_last": 3}),  # the weights of updates 3 and 6 to average are on disk, 8's is still to come
    ],
)
def test_phase_killed_after_an_update_resumes_to_the_same_weights(
    tokenizer, pairs, tmp_path, tmp_path_factory, monkeypatch, kill_after, resume_from, overrides
):
    baseline = _uninterrupted(tokenizer, pairs, tmp_path_factory, **overrides)
    original = PhaseTrainer._after_update

    def killed(self, state, running):
        original(self, state, running)
        if state["step"] == kill_after:
            raise Killed

    monkeypatch.setattr(PhaseTrainer, "_after_update", killed)
    folder = tmp_path / "nat"
    with pytest.raises(Killed):
        _train(tokenizer, pairs, folder, **overrides)
    state = json.loads((folder / "checkpoint" / "phase_state.json").read_text())
    assert state["step"] == resume_from
    _resume_and_compare(tokenizer, pairs, folder, baseline, monkeypatch, resume_from + 1, **overrides)


# ----- b) c) killed inside a checkpoint write ---------------------------------------------------------------------------


def _kill_after_accelerate_state(monkeypatch, at_call):
    """Die right after `accelerator.save_state` wrote the weights, optimizer and RNG of the `at_call`-th checkpoint,
    before the phase state (update counter, data position, scheduler) is written."""
    real_save_state = Accelerator.save_state
    calls = []

    def save_state(self, *args, **kwargs):
        real_save_state(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == at_call:
            raise Killed

    monkeypatch.setattr(Accelerator, "save_state", save_state)


def _kill_state_write(monkeypatch, at_step, truncate=True):
    """Make the write of the phase state of update `at_step` die half-way through: a truncated JSON file is left
    (or, `truncate=False`, an empty one)."""
    real_dump = json.dump

    def dump(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == at_step and "scheduler" in obj:
            if truncate:
                text = json.dumps(obj)
                handle.write(text[: len(text) // 2])
                handle.flush()
            raise Killed
        return real_dump(obj, handle, *args, **kwargs)

    monkeypatch.setattr(json, "dump", dump)


@pytest.mark.parametrize("where", ["between_checkpoint_and_state", "inside_state_write"])
def test_phase_killed_inside_a_checkpoint_write_resumes_to_the_same_weights(
    tokenizer, pairs, tmp_path, tmp_path_factory, monkeypatch, where
):
    baseline = _uninterrupted(tokenizer, pairs, tmp_path_factory)
    if where == "between_checkpoint_and_state":
        _kill_after_accelerate_state(monkeypatch, at_call=2)  # the checkpoint of update 6
    else:
        _kill_state_write(monkeypatch, at_step=6)
    folder = tmp_path / "nat"
    with pytest.raises(Killed):
        _train(tokenizer, pairs, folder)
    # the checkpoint of update 6 was being written: the one of update 3 must be what resumes
    _resume_and_compare(tokenizer, pairs, folder, baseline, monkeypatch, first_update=4)


def test_phase_killed_between_the_renames_of_the_swap_rolls_forward(
    tokenizer, pairs, tmp_path, tmp_path_factory, monkeypatch
):
    """Killed after checkpoint/ became checkpoint.old/ and before checkpoint.new/ became checkpoint/: there is no
    checkpoint/ at all; the complete checkpoint.new/ (update 6) is taken."""
    baseline = _uninterrupted(tokenizer, pairs, tmp_path_factory)
    real_replace = os.replace
    folder = tmp_path / "nat"

    def replace(source, target):
        if str(source).endswith("checkpoint.new") and os.path.isdir(str(target) + ".old"):
            state = json.loads((folder / "checkpoint.new" / "phase_state.json").read_text())
            if state["step"] == 6:
                raise Killed
        return real_replace(source, target)

    monkeypatch.setattr(training.os, "replace", replace)
    with pytest.raises(Killed):
        _train(tokenizer, pairs, folder)
    assert not (folder / "checkpoint").exists() and (folder / "checkpoint.old").is_dir()
    _resume_and_compare(tokenizer, pairs, folder, baseline, monkeypatch, first_update=7)


# ----- damaged checkpoints: a clear error ------------------------------------------------------------------------------


def _damage_state(path):
    path.write_text(path.read_text()[:20])


def _damage_garbage(path):
    path.write_bytes(b"\x00\xff garbage \x80")


def _damage_weights(path):
    weights = path.parent / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


@pytest.mark.parametrize(
    "damage", [_damage_state, _damage_garbage, _damage_weights], ids=["truncated", "garbage", "weights"]
)
def test_damaged_only_checkpoint_gives_an_error_naming_it_and_the_recovery(
    tokenizer, pairs, tmp_path, monkeypatch, damage
):
    folder = tmp_path / "nat"
    _kill_after_accelerate_state(monkeypatch, at_call=2)
    with pytest.raises(Killed):
        _train(tokenizer, pairs, folder)
    monkeypatch.undo()
    state_file = folder / "checkpoint" / "phase_state.json"
    damage(state_file)  # not something a kill can do any more: a damaged disk, an older version's in-place write
    with pytest.raises(ValueError) as error:
        _train(tokenizer, pairs, folder)
    message = str(error.value)
    assert str(state_file) in message and f"Delete {folder / 'checkpoint'} to restart the nat phase" in message
    if damage is _damage_state:  # the recovery the message gives works
        shutil.rmtree(folder / "checkpoint")
        _, metrics = _train(tokenizer, pairs, folder)
        assert metrics["nat/steps"] == CONFIG["max_steps"]


# ----- em_state.json ---------------------------------------------------------------------------------------------------


def _em_trainer(tokenizer, pairs, tmp_path):
    ar, nat = tiny_models(tokenizer)
    data = Dataset.from_dict({"translation": [{"src": s, "tgt": t} for s, t in pairs]})
    args = EMTrainingArguments(output_dir=str(tmp_path / "run"), num_rounds=1, num_candidates=2, candidate_beam_size=2)
    return EMTrainer(ar, nat, tokenizer, data, None, args=args)


def test_em_state_killed_inside_its_write_keeps_the_previous_record(tokenizer, pairs, tmp_path, monkeypatch):
    trainer = _em_trainer(tokenizer, pairs, tmp_path)
    trainer._complete("round-0/ar", {"ar/steps": 3})
    path = tmp_path / "run" / "em_state.json"
    before = path.read_text()
    real_dump = json.dump

    def half_dump(obj, handle, *args, **kwargs):
        text = json.dumps(obj)
        handle.write(text[: len(text) // 2])
        handle.flush()
        raise Killed

    monkeypatch.setattr(json, "dump", half_dump)
    with pytest.raises(Killed):
        trainer._complete("round-0/nat")
    monkeypatch.setattr(json, "dump", real_dump)
    assert path.read_text() == before
    assert _em_trainer(tokenizer, pairs, tmp_path).state["completed"] == ["round-0/ar"]


def test_unreadable_em_state_gives_an_error_naming_it_and_the_recovery(tokenizer, pairs, tmp_path):
    path = tmp_path / "run" / "em_state.json"
    path.parent.mkdir()
    path.write_text('{"fingerprint": {"num_rou')
    with pytest.raises(
        ValueError, match=re.escape(str(path)) + r" is unreadable .*Delete it \(or pass --overwrite_output_dir\)"
    ):
        _em_trainer(tokenizer, pairs, tmp_path)
