"""EM rounds pushed to a Hub-compatible server on 127.0.0.1: model cards, round branches, loading back, failures."""

import json

import pytest
import torch
import yaml
from conftest import tiny_models
from datasets import Dataset
from hub_server import hub_env, start_hub_server
from huggingface_hub import HfApi, hf_hub_download
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

import em_nat
from em_nat import EMTrainer, EMTrainingArguments, hub


@pytest.fixture
def server(tmp_path, monkeypatch):
    running = start_hub_server(tmp_path / "hub")
    hub_env(monkeypatch, running.url, tmp_path / "hf_home")
    monkeypatch.setattr(hub, "PUSH_BACKOFF_SECONDS", 0.0)
    yield running
    running.shutdown()


def _run(tokenizer, pairs, tmp_path, **overrides):
    ar, nat = tiny_models(tokenizer)
    settings = dict(
        output_dir=str(tmp_path / "run"),
        num_rounds=1,
        num_candidates=2,
        candidate_beam_size=2,
        ar_max_steps=10,
        nar_max_steps=10,
        warmup_steps=2,
        max_tokens=256,
        eval_steps=10,
        save_steps=10,
        max_target_length=24,
        eval_num_beams=2,
        push_to_hub=True,
        hub_model_id="test-user/em-nat-tiny",
        hub_ar_model_id="test-user/ar-tiny",
        hub_dataset_name="tiny-pairs",
        source_lang="en",
        target_lang="de",
    )
    data = Dataset.from_dict({"translation": [{"en": s, "de": t} for s, t in pairs]})
    args = EMTrainingArguments(**{**settings, **overrides})
    return EMTrainer(ar, nat, tokenizer, data, data.select(range(8)), args=args)


def test_each_round_is_pushed_with_a_model_card_and_loads_back(server, tokenizer, pairs, tmp_path):
    metrics = _run(tokenizer, pairs, tmp_path).train()
    api = HfApi()
    branches = {b.name for b in api.list_repo_refs("test-user/em-nat-tiny").branches}
    assert {"main", "round-0", "round-1"} <= branches
    card = open(hf_hub_download("test-user/em-nat-tiny", "README.md", revision="round-1")).read()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "translation"
    assert meta["language"] == ["en", "de"] and meta["datasets"] == ["tiny-pairs"] and "em-round-1" in meta["tags"]
    result = meta["model-index"][0]["results"][0]
    bleu = metrics["round-1"]["eval/bleu_nar_odd"]
    assert result["metrics"][0]["value"] == bleu["score"]
    assert result["metrics"][0]["args"]["signature"] == bleu["signature"]
    assert "EM round | 1 of 1" in card and "test-user/ar-tiny" in card and 'pipeline("translation"' in card
    assert "em-round-0" in open(hf_hub_download("test-user/em-nat-tiny", "README.md", revision="round-0")).read()
    # round 1's NAT loads back from the Hub and translates as the local folder does
    local = em_nat.NATForConditionalGeneration.from_pretrained(tmp_path / "run" / "round-1" / "nar")
    remote = AutoModelForSeq2SeqLM.from_pretrained("test-user/em-nat-tiny", revision="round-1")
    for name, tensor in local.state_dict().items():
        assert torch.equal(tensor, remote.state_dict()[name]), name
    translator = pipeline("translation", model="test-user/em-nat-tiny", revision="round-1")
    local_pipe = pipeline(
        "translation", model=local, tokenizer=AutoTokenizer.from_pretrained(tmp_path / "run" / "round-1" / "nar")
    )
    assert translator(pairs[0][0]) == local_pipe(pairs[0][0])
    assert AutoModelForSeq2SeqLM.from_pretrained("test-user/ar-tiny", revision="round-1") is not None


def test_failing_hub_is_retried_reported_and_keeps_local_checkpoints(server, tokenizer, pairs, tmp_path):
    server.fail_next(1000, status=503, path_contains="/commit/")
    trainer = _run(tokenizer, pairs, tmp_path)
    with pytest.raises(hub.HubPushError, match="(?s)rounds \\[0, 1\\] could not be pushed.*re-run the same command"):
        trainer.train()
    commits = [p for m, p in server.requests if m == "POST" and "/commit/" in p]
    assert len(commits) >= 2 * hub.PUSH_ATTEMPTS  # every round was retried
    run = tmp_path / "run"
    for t in (0, 1):  # training went on and every round is on disk
        assert (run / f"round-{t}" / "nar" / "model.safetensors").is_file()
        assert json.loads((run / f"round-{t}" / "metrics.json").read_text())["em/round"] == t
    state = json.loads((run / "em_state.json").read_text())["completed"]
    assert "round-1/saved" in state and "round-1/pushed" not in state
    # the Hub is back: the same command pushes the pending rounds without training again
    server.clear_failures()
    _run(tokenizer, pairs, tmp_path).train()
    branches = {b.name for b in HfApi().list_repo_refs("test-user/em-nat-tiny").branches}
    assert {"round-0", "round-1"} <= branches


def test_unreachable_hub_is_reported_and_keeps_local_checkpoints(server, tokenizer, pairs, tmp_path):
    server.shutdown()  # nothing listens at the endpoint any more
    with pytest.raises(hub.HubPushError, match="could not be pushed"):
        _run(tokenizer, pairs, tmp_path).train()
    for t in (0, 1):
        assert (tmp_path / "run" / f"round-{t}" / "nar" / "model.safetensors").is_file()
