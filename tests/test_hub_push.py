"""EM rounds pushed to a Hub-compatible server on 127.0.0.1: model cards, round branches, loading back, failures.

Every back-off wait goes to a fake clock (no test sleeps), and the retry tests count the server's requests exactly
with the shipped schedule (4 attempts, waits of 2, 4 and 8 s): they fail when retries are switched off.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_pairs, tiny_models
from datasets import Dataset
from hub_server import hub_env, start_hub_server
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, MarianMTModel, pipeline

import em_nat
from em_nat import EMTrainer, EMTrainingArguments, hub

SCHEDULE = [2.0, 4.0, 8.0]  # the shipped back-off: PUSH_ATTEMPTS = 4 attempts, the first wait 2 s, then doubled
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class FakeClock:
    """Stands in for `time.sleep`: records each wait and moves `now` on instead of sleeping."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    """The fake clock behind the pushes' default wait (the trainer pushes with `hub.wait`)."""
    fake = FakeClock()
    monkeypatch.setattr(hub, "wait", fake.sleep)
    return fake


@pytest.fixture
def server(tmp_path, monkeypatch, clock):
    running = start_hub_server(tmp_path / "hub")
    hub_env(monkeypatch, running.url, tmp_path / "hf_home")
    yield running
    running.shutdown()


def commit_posts(server, since: int = 0) -> int:
    """Commit requests the server received (failed ones included), from request number `since` on."""
    return sum(method == "POST" and "/commit/" in path for method, path in server.requests[since:])


def commit_statuses(server, since: int = 0) -> list[int]:
    """The status of each commit request the server answered, from answer number `since` on."""
    return [status for method, path, status in server.responses[since:] if method == "POST" and "/commit/" in path]


def assert_same_weights(local, remote):
    expected, actual = local.state_dict(), remote.state_dict()
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name


def assert_card_shows_decoding(card: str, nat):
    """Each NAT knob of the card's decoding table is what `nat.generate()` uses when not told otherwise."""
    settings = nat._decoding_config()  # what generate() uses when not told otherwise
    for knob in hub.NAT_DECODING_KNOBS:
        assert f"| `{knob}` | `{getattr(settings, knob)!r}` |" in card, knob


def _run(tokenizer, pairs, tmp_path, **overrides):
    ar, nat = tiny_models(tokenizer)
    settings = dict(
        output_dir=str(tmp_path / "run"),
        num_rounds=1,
        num_candidates=2,
        candidate_beam_size=2,
        ar_max_steps=10,
        nat_max_steps=10,
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


def test_each_round_is_pushed_with_a_model_card_and_loads_back(server, clock, tokenizer, pairs, tmp_path):
    metrics = _run(tokenizer, pairs, tmp_path).train()
    api = HfApi()
    branches = {b.name for b in api.list_repo_refs("test-user/em-nat-tiny").branches}
    assert {"main", "round-0", "round-1"} <= branches
    card = open(hf_hub_download("test-user/em-nat-tiny", "README.md", revision="round-1")).read()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "translation"
    assert meta["language"] == ["en", "de"] and meta["datasets"] == ["tiny-pairs"] and "em-round-1" in meta["tags"]
    result = meta["model-index"][0]["results"][0]
    bleu = metrics["round-1"]["eval/bleu_nat_odd"]
    assert result["metrics"][0]["value"] == bleu["score"]
    assert result["metrics"][0]["args"]["signature"] == bleu["signature"]
    assert "EM round | 1 of 1" in card and "test-user/ar-tiny" in card and 'pipeline("translation"' in card
    assert "em-round-0" in open(hf_hub_download("test-user/em-nat-tiny", "README.md", revision="round-0")).read()
    # every round's NAT and AR load back from the Hub with the local weights, tensor by tensor
    for t in (0, 1):
        for repo_id, folder, model_class in (
            ("test-user/em-nat-tiny", "nat", em_nat.NATForConditionalGeneration),
            ("test-user/ar-tiny", "ar", MarianMTModel),
        ):
            local = model_class.from_pretrained(tmp_path / "run" / f"round-{t}" / folder)
            remote = AutoModelForSeq2SeqLM.from_pretrained(repo_id, revision=f"round-{t}")
            assert type(remote) is model_class
            assert_same_weights(local, remote)
    # the card's decoding section is what the pushed NAT decodes with
    assert_card_shows_decoding(
        card, AutoModelForSeq2SeqLM.from_pretrained("test-user/em-nat-tiny", revision="round-1")
    )
    assert clock.sleeps == [] and server.pending_failures() == 0  # nothing was retried
    # round 1's NAT translates from the Hub as the local folder does
    local = em_nat.NATForConditionalGeneration.from_pretrained(tmp_path / "run" / "round-1" / "nat")
    translator = pipeline("translation", model="test-user/em-nat-tiny", revision="round-1")
    local_pipe = pipeline(
        "translation", model=local, tokenizer=AutoTokenizer.from_pretrained(tmp_path / "run" / "round-1" / "nat")
    )
    assert translator(pairs[0][0]) == local_pipe(pairs[0][0])


def test_failing_hub_is_retried_reported_and_keeps_local_checkpoints(server, clock, tokenizer, pairs, tmp_path):
    server.fail_next(1000, status=503, path_contains="/commit/")
    trainer = _run(tokenizer, pairs, tmp_path)
    with pytest.raises(hub.HubPushError, match="(?s)rounds \\[0, 1\\] could not be pushed.*after 4 attempts"):
        trainer.train()
    # 4 pushes (rounds 0 and 1 when saved, again at the end of the run) of 4 attempts each, every attempt stopped
    # by the failing commit of the NAT (a round's AR is not tried once its NAT failed); 3 waits per push
    assert commit_posts(server) == 4 * 4
    assert clock.sleeps == SCHEDULE * 4
    run = tmp_path / "run"
    for t in (0, 1):  # training went on and every round is on disk
        assert (run / f"round-{t}" / "nat" / "model.safetensors").is_file()
        assert json.loads((run / f"round-{t}" / "metrics.json").read_text())["em/round"] == t
    state = json.loads((run / "em_state.json").read_text())["completed"]
    assert "round-1/saved" in state and "round-1/pushed" not in state
    # the Hub is back: the same command pushes the pending rounds without training again
    server.clear_failures()
    _run(tokenizer, pairs, tmp_path).train()
    branches = {b.name for b in HfApi().list_repo_refs("test-user/em-nat-tiny").branches}
    assert {"round-0", "round-1"} <= branches


def test_unreachable_hub_is_reported_and_keeps_local_checkpoints(server, clock, tokenizer, pairs, tmp_path):
    server.shutdown()  # nothing listens at the endpoint any more
    with pytest.raises(hub.HubPushError, match="could not be pushed"):
        _run(tokenizer, pairs, tmp_path).train()
    assert clock.sleeps == SCHEDULE * 4  # 4 pushes (rounds 0 and 1, twice), each with the whole back-off
    for t in (0, 1):
        assert (tmp_path / "run" / f"round-{t}" / "nat" / "model.safetensors").is_file()


def _completed(run) -> list[str]:
    return json.loads((run / "em_state.json").read_text())["completed"]


def _weights_stamps(run) -> dict:
    return {path: path.stat().st_mtime_ns for path in run.glob("round-*/*/model.safetensors")}


def test_rerun_pushes_only_the_pending_rounds_and_trains_nothing(server, clock, tokenizer, pairs, tmp_path):
    """train(push=False) then push(): round 0 reaches the Hub, round 1 does not; the same run again pushes round 1
    only, each pending round tried once per push() with the whole back-off."""
    run = tmp_path / "run"
    server.fail_next(1000, status=503, path_contains="/commit/", method="POST", after=4)  # round 0: 2 + 2 commits
    trainer = _run(tokenizer, pairs, tmp_path)
    trainer.train(push=False)
    assert commit_posts(server) == 0 and not _completed(run)[-1].endswith("pushed")  # nothing pushed while training
    with pytest.raises(hub.HubPushError, match=r"(?s)rounds \[1\] could not be pushed.*same command again"):
        trainer.push()
    assert clock.sleeps == SCHEDULE and trainer.pending_pushes.keys() == {1}
    done = _completed(run)
    assert "round-0/pushed" in done and "round-1/pushed" not in done
    server.clear_failures()
    stamps, since = _weights_stamps(run), len(server.requests)
    again = _run(tokenizer, pairs, tmp_path)
    again.train(push=False)
    again.push()
    assert _weights_stamps(run) == stamps  # nothing trained again
    assert _completed(run) == done + ["round-1/pushed"]
    paths = [path for _, path in server.requests[since:]]
    assert not any("round-0" in path for path in paths)  # round 0 was not pushed again
    assert sum(path.endswith("/branch/round-1") for path in paths) == 2  # the NAT's and the AR's round-1 branch
    for repo_id in ("test-user/em-nat-tiny", "test-user/ar-tiny"):
        assert {"round-0", "round-1"} <= {b.name for b in HfApi().list_repo_refs(repo_id).branches}


def _script_data(folder) -> list[str]:
    """Train, validation and test TSV files of the tiny pairs; the data options of examples/train_em.py."""
    folder.mkdir()
    pairs = make_pairs()
    options = []
    for split, rows in (("train", pairs), ("validation", pairs[:8]), ("test", pairs[-6:])):
        (folder / f"{split}.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in rows))
        options += [f"--{split}", str(folder / f"{split}.tsv")]
    return options


def test_script_writes_every_local_output_then_reports_the_unreachable_hub(server, tmp_path, monkeypatch):
    """examples/train_em.py --push_to_hub --test with nothing listening at the Hub's address: the results table, the
    test scores and the model card are written, then the failed pushes are reported (exit status 1). The same command
    with the Hub back trains nothing and pushes the pending rounds, cards with the test results included. The script
    runs as a user runs it, in its own process (the shipped back-off, 2 + 4 + 8 s a round, really waits)."""
    from test_example_runs import TINY

    run = tmp_path / "run"
    argv = _script_data(tmp_path / "data") + ["--output_dir", str(run), *TINY, "--num_rounds", "1"]
    argv += "--ar_max_steps 6 --nat_max_steps 6 --push_to_hub --hub_model_id test-user/em-nat-script".split()
    argv += "--hub_ar_model_id test-user/ar-script".split()
    command = [sys.executable, str(EXAMPLES / "train_em.py"), *argv]
    server.shutdown()  # nothing listens at the endpoint any more
    first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "Hub push failed" in first.stderr and "rounds [0, 1] could not be pushed" in first.stderr
    for name in ("results.md", "results.json", "test_results.md", "test_results.json", "train.log"):
        assert (run / name).is_file(), name
    assert "Results on the test data" in (run / "round-1" / "nat" / "README.md").read_text()
    log = (run / "train.log").read_text()
    for attempt in range(1, 5):  # rounds 0 and 1, each tried with the whole back-off, after the local work
        assert log.count(f"attempt {attempt}/4 failed") == 2, attempt  # the NAT repo; its failure stops the round
    done = _completed(run)
    assert not any(phase.endswith("/pushed") for phase in done)
    # the Hub is back (at another address): the same command pushes rounds 0 and 1 and trains nothing
    back = start_hub_server(tmp_path / "hub-back")
    hub_env(monkeypatch, back.url, tmp_path / "hf_home_back")
    stamps = _weights_stamps(run)
    try:
        second = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
        assert second.returncode == 0, second.stderr[-3000:]
        assert _weights_stamps(run) == stamps
        assert _completed(run) == done + ["round-0/pushed", "round-1/pushed"]
        for repo_id in ("test-user/em-nat-script", "test-user/ar-script"):
            assert {"round-0", "round-1"} <= {b.name for b in HfApi().list_repo_refs(repo_id).branches}
        card = open(hf_hub_download("test-user/em-nat-script", "README.md", revision="round-1")).read()
        assert "Results on the test data" in card
        assert card == (run / "round-1" / "nat" / "README.md").read_text()  # the local card is the pushed one
    finally:
        back.shutdown()


def _saved_models(tokenizer, root):
    """A tiny NAT and Marian AR saved the trainer's way, in `root/nat` and `root/ar` (model and tokenizer)."""
    ar, nat = tiny_models(tokenizer)
    for folder, model in (("nat", nat), ("ar", ar)):
        model.save_pretrained(root / folder)
        tokenizer.save_pretrained(root / folder)
    return root / "nat", root / "ar"


@pytest.mark.parametrize("failing_commit", [0, 1], ids=["weights-commit-fails", "card-commit-fails"])
def test_push_that_fails_once_is_retried_once(server, tokenizer, tmp_path, failing_commit):
    server.lfs_threshold = 1024  # the weights go through the LFS batch API, as on the Hub
    card = ModelCard("---\nlicense: apache-2.0\n---\n\n# tiny\n")
    for folder, repo_id in zip(_saved_models(tokenizer, tmp_path / "round-0"), ("test-user/nat", "test-user/ar")):
        server.fail_next(1, status=503, path_contains="/commit/", method="POST", after=failing_commit)
        since, answered, clock = len(server.requests), len(server.responses), FakeClock()
        oid = hub.push_folder(str(folder), repo_id, 0, card, sleep=clock.sleep)
        # attempt 1 gets the 503 (on the weights' commit, or on the card's once the weights are in); attempt 2
        # commits what is missing (the client skips weights the repo already holds): 3 commit requests in all
        assert commit_posts(server, since) == 3 and server.pending_failures() == 0
        assert commit_statuses(server, answered) == ([503, 200, 200] if failing_commit == 0 else [200, 503, 200])
        assert clock.sleeps == [2.0]
        api = HfApi()
        assert [c.title for c in api.list_repo_commits(repo_id)] == [
            "Model card, EM round 0",
            "EM round 0",
            "initial commit",
        ]
        assert {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches} == {"main": oid, "round-0": oid}
        files = sorted(api.list_repo_files(repo_id, revision="round-0"))
        assert files == sorted(os.listdir(folder) + [".gitattributes", "README.md"])
        assert open(hf_hub_download(repo_id, "README.md", revision="round-0")).read() == str(card)
        for name in os.listdir(folder):
            remote_bytes = open(hf_hub_download(repo_id, name, revision="round-0"), "rb").read()
            assert remote_bytes == (folder / name).read_bytes(), name
        local = AutoModelForSeq2SeqLM.from_pretrained(folder)
        assert_same_weights(local, AutoModelForSeq2SeqLM.from_pretrained(repo_id, revision="round-0"))
    assert any(method == "PUT" and "/lfs-upload/" in path for method, path in server.requests)


def test_backoff_schedule_with_a_fake_clock(server, tmp_path):
    assert hub.backoff_delays() == SCHEDULE
    assert hub.backoff_delays(3, 0.5) == [0.5, 1.0] and hub.backoff_delays(1) == []
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"tiny": true}')
    card = ModelCard("# tiny")
    for failures in range(4):  # k failed attempts, then a successful one: the first k waits of the schedule
        server.fail_next(failures, status=503, path_contains="/commit/", method="POST")
        since, clock = len(server.requests), FakeClock()
        hub.push_folder(str(folder), f"test-user/fails-{failures}", 0, card, sleep=clock.sleep)
        assert clock.sleeps == SCHEDULE[:failures] and clock.now == sum(SCHEDULE[:failures])
        assert commit_posts(server, since) == failures + 2  # the failed ones, then the folder's and the card's
    # every attempt fails: 3 waits, none after the last attempt, then the error
    server.fail_next(4, status=503, path_contains="/commit/", method="POST")
    since, clock = len(server.requests), FakeClock()
    with pytest.raises(hub.HubPushError, match="(?s)after 4 attempts.*local checkpoint is intact"):
        hub.push_folder(str(folder), "test-user/fails-always", 0, card, sleep=clock.sleep)
    assert clock.sleeps == SCHEDULE and commit_posts(server, since) == 4 and server.pending_failures() == 0
    # the number of attempts and the first wait are parameters too
    server.fail_next(5, status=503, path_contains="/commit/", method="POST")
    clock = FakeClock()
    with pytest.raises(hub.HubPushError, match="after 3 attempts"):
        hub.push_folder(str(folder), "test-user/short", 0, card, max_attempts=3, backoff=0.5, sleep=clock.sleep)
    assert clock.sleeps == [0.5, 1.0]


def _card_args(tmp_path):
    return EMTrainingArguments(
        output_dir=str(tmp_path / "run"), num_rounds=2, source_lang="en", target_lang="de", eval_num_beams=5
    )


def test_model_card_decoding_section_is_the_saved_generation_config(tokenizer, tmp_path):
    args = _card_args(tmp_path)
    ar, nat = tiny_models(tokenizer)
    nat.generation_config.update(length_beam=3, odd=False, odd_top_k=5, rescore_alpha=1.25)
    ar.generation_config.num_beams = 4
    nat_folder = tmp_path / "run" / "round-2" / "nat"
    nat.save_pretrained(nat_folder)
    ar.save_pretrained(tmp_path / "run" / "round-2" / "ar")
    card = str(hub.build_model_card(2, args, {}, "test-user/nat", folder=str(nat_folder)))
    decoding = card.split("## Decoding settings")[1].split("## Usage")[0]
    for row in ("`length_beam` | `3`", "`odd` | `False`", "`odd_top_k` | `5`", "`rescore_alpha` | `1.25`"):
        assert f"| {row} |" in decoding
    assert "saved in this repo's `generation_config.json`" in decoding and "odd=True, length_beam=1" not in card
    # what the card says is what the model loaded from the folder decodes with
    assert_card_shows_decoding(decoding, em_nat.NATForConditionalGeneration.from_pretrained(nat_folder))
    # the folder defaults to the trainer's layout under output_dir
    assert str(hub.build_model_card(2, args, {}, "test-user/nat")) == card
    ar_card = str(hub.build_model_card(2, args, {}, "test-user/ar", kind="ar"))
    ar_decoding = ar_card.split("## Decoding settings")[1].split("## Usage")[0]
    assert "| `num_beams` | `4` |" in ar_decoding  # the saved default
    assert "`num_beams=5`" in ar_decoding  # what the validation BLEU used


def test_model_card_without_a_generation_config_shows_the_built_in_defaults(tokenizer, tmp_path):
    ar, nat = tiny_models(tokenizer)
    folder = tmp_path / "run" / "round-1" / "nat"
    nat.save_pretrained(folder)
    ar.save_pretrained(tmp_path / "run" / "round-1" / "ar")  # its generation_config.json sets no num_beams
    ar_card = str(hub.build_model_card(1, _card_args(tmp_path), {}, "test-user/ar", kind="ar"))
    assert "| `num_beams` | `1` (transformers' default) |" in ar_card
    os.remove(folder / "generation_config.json")
    card = str(hub.build_model_card(1, _card_args(tmp_path), {}, "test-user/nat"))
    assert "built in (this repo has no `generation_config.json`)" in card
    assert_card_shows_decoding(card, em_nat.NATForConditionalGeneration.from_pretrained(folder))


@pytest.mark.parametrize(
    "ratio, expected",
    [
        ("0", "AR_0 1-best (sequence-level KD), vanilla NAT training |"),
        ("0.5:0.3", "AR_0 1-best (sequence-level KD), glancing training (GLAT), ratio 0.5 falling linearly to 0.3"),
        ("0.3", "AR_0 1-best (sequence-level KD), glancing training (GLAT), ratio 0.3 |"),
    ],
)
def test_model_card_says_how_the_nat_was_trained(tmp_path, ratio, expected):
    args = EMTrainingArguments(
        output_dir=str(tmp_path / "run"), num_rounds=2, source_lang="en", target_lang="de", nat_glancing_ratio=ratio
    )
    card = str(hub.build_model_card(1, args, {}, "test-user/nat"))
    assert expected in card


@pytest.mark.parametrize(
    "round_index, metrics, expected",
    [
        (1, {"em/selection_differs_from_1best": 0.25}, "| selections differing from the AR 1-best | 25.0% |"),
        (0, {}, "| selections differing from the AR 1-best | none (round 0 trains on the real targets) |"),
        (2, {}, "no selection this round (the last round's AR was not trained: train_final_ar false)"),
    ],
)
def test_model_card_says_how_many_selections_left_the_1_best(tmp_path, round_index, metrics, expected):
    args = EMTrainingArguments(output_dir=str(tmp_path / "run"), num_rounds=2, source_lang="en", target_lang="de")
    assert expected in str(hub.build_model_card(round_index, args, metrics, "test-user/nat"))
