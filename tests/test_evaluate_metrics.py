"""The `evaluate` modules shipped in em_nat/evaluate_metrics: loaded offline by local path, documented like a model
card, and computing exactly what `em_nat.metrics` computes (one implementation). The `Seq2SeqTrainer` use is in
tests/test_seq2seq_trainer.py."""

import configparser
import fnmatch
import socket
from pathlib import Path

import evaluate
import pytest

import em_nat
from em_nat import metrics

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(metrics.METRIC_MODULES)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The Hub is unreachable here: offline flags on, and any connection attempt fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access during a metric test: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)


def test_every_module_folder_is_listed_and_shipped_by_setup_cfg():
    folders = sorted(p.name for p in metrics.METRIC_MODULES_DIR.iterdir() if (p / f"{p.name}.py").is_file())
    assert folders == NAMES and len(NAMES) == 3
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    package_dir = dict(line.split("=") for line in config["options"]["package_dir"].split("\n") if "=" in line)
    assert {k.strip(): v.strip() for k, v in package_dir.items()}["em_nat"] == "em_nat"  # files relative to em_nat/
    patterns = config["options.package_data"]["em_nat"].split()
    for name in NAMES:
        relative = f"evaluate_metrics/{name}/{name}.py"
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


@pytest.mark.parametrize("name", NAMES)
def test_module_loads_offline_with_a_model_card_and_calls_em_nat_metrics(name):
    module = em_nat.load_metric(name)
    assert isinstance(module, evaluate.EvaluationModule)
    expected_type = "measurement" if name == "corpus_multimodality" else "metric"
    assert module.module_type == expected_type
    assert len(module.description) > 300 and "Limitations" in module.description
    assert "@inproceedings" in module.citation
    assert "Args:" in module.inputs_description and "Returns:" in module.inputs_description
    source = (metrics.METRIC_MODULES_DIR / name / f"{name}.py").read_text()
    assert "from em_nat.metrics import" in source  # a wrapper, not a second implementation


def test_unknown_module_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="'sacrebleu_signature'.*'repeated_tokens'.*'corpus_multimodality'"):
        em_nat.load_metric("sacrebleu")


HYPOTHESES = ["the cat sat on the mat .", "a dog runs in the park today .", "my friend paints a red ball ."]
SINGLE = ["the cat sat on the mat .", "a dog is running in the park .", "my friend paints the red ball ."]
MULTI = [
    ["the cat sat on the mat .", "a cat was on the mat ."],
    ["a dog is running in the park ."],  # lines may have different numbers of references
    ["my friend paints the red ball .", "my friend is painting a red ball .", "a friend paints a ball ."],
]


def test_sacrebleu_signature_matches_corpus_bleu_with_one_or_several_references():
    bleu = em_nat.load_metric("sacrebleu_signature", keep_in_memory=True)
    single = bleu.compute(predictions=HYPOTHESES, references=SINGLE)
    assert single == metrics.corpus_bleu(HYPOTHESES, SINGLE)
    assert single["signature"].startswith("nrefs:1|case:mixed") and 0 < single["score"] < 100
    multi = bleu.compute(predictions=HYPOTHESES, references=MULTI)
    assert multi == metrics.corpus_bleu(HYPOTHESES, MULTI)
    assert multi["signature"].startswith("nrefs:var|")  # sacreBLEU's mark for a variable number of references
    assert multi["score"] > single["score"]  # more references, more matched n-grams
    upper = [h.upper() for h in HYPOTHESES]
    assert bleu.compute(predictions=upper, references=MULTI, lowercase=True) == metrics.corpus_bleu(
        upper, MULTI, lowercase=True
    )
    assert bleu.compute(predictions=upper, references=MULTI, lowercase=True)["signature"].split("|")[1] == "case:lc"
    assert bleu.compute(predictions=SINGLE, references=SINGLE)["score"] == 100.0


def test_repeated_tokens_matches_repeated_token_rate():
    repeats = em_nat.load_metric("repeated_tokens", keep_in_memory=True)
    sequences, ignore = [[5, 5, 6, 7, 1], [8, 9, 1, 0]], [0, 1]
    assert repeats.compute(predictions=sequences, ignore_ids=ignore) == {"repeated_token_rate": 0.25}
    assert metrics.repeated_token_rate(sequences, ignore) == 0.25
    rows = [[4, 4, 4, 1, 0, 0], [3, 1, 0, 0, 0, 0], [7, 8, 7, 8, 8, 1]]
    assert repeats.compute(predictions=rows, ignore_ids=[0, 1])["repeated_token_rate"] == pytest.approx(
        metrics.repeated_token_rate(rows, [0, 1])
    )
    assert repeats.compute(predictions=rows)["repeated_token_rate"] == pytest.approx(
        metrics.repeated_token_rate(rows)  # padding counted when not ignored: the caller chooses
    )


def test_corpus_multimodality_matches_the_function_on_hand_values_and_nat_scores(nat, tokenizer, pairs):
    cm = em_nat.load_metric("corpus_multimodality", keep_in_memory=True)
    assert cm.compute(log_likelihoods=[-2.0, -4.0, -9.0]) == {"corpus_multimodality": 5.0}
    sources, targets = [s for s, _ in pairs[:5]], [t for _, t in pairs[:5]]
    batch = tokenizer(sources, text_target=targets, padding=True, return_tensors="pt")  # as in the README
    scores = nat.score_targets(**batch).tolist()
    result = cm.compute(log_likelihoods=scores)["corpus_multimodality"]
    assert result == pytest.approx(metrics.corpus_multimodality(scores)) and result > 0
