"""The embedded synthetic task: determinism, disjoint splits, exact validity, real multi-modality, metrics."""

import importlib.util
import random
import statistics
from pathlib import Path

import pytest
from synthetic_checks import (
    canonical_target,
    count_valid_targets,
    exact_match_rate,
    is_valid_translation,
    oracle_multimodality_stats,
    synthetic,
    valid_targets,
)

try:
    from em_nat.metrics import corpus_bleu
except Exception:  # the package is not importable (yet, or broken elsewhere); metrics.py imports nothing from it
    _spec = importlib.util.spec_from_file_location(
        "em_nat_metrics_standalone", Path(__file__).resolve().parents[1] / "em_nat" / "metrics.py"
    )
    _metrics = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_metrics)
    corpus_bleu = _metrics.corpus_bleu

SyntheticTaskConfig = synthetic.SyntheticTaskConfig
build_synthetic_task = synthetic.build_synthetic_task

SMALL = dict(num_train=1500, num_valid=100, num_test=100)


@pytest.fixture(scope="module")
def task():
    return build_synthetic_task()  # the default config (about half a second)


@pytest.fixture(scope="module")
def train_pairs(task):
    return _pairs(task["train"])


@pytest.fixture(scope="module")
def small_task():
    return build_synthetic_task(SyntheticTaskConfig(seed=3, **SMALL))


def _pairs(split):
    return [(row["src"], row["tgt"]) for row in split["translation"]]


def test_splits_sizes_and_columns(task):
    config = SyntheticTaskConfig()
    assert set(task) == {"train", "validation", "test"}
    assert (task["train"].num_rows, task["validation"].num_rows, task["test"].num_rows) == (
        config.num_train,
        config.num_valid,
        config.num_test,
    )
    assert set(task["train"][0]["translation"]) == {"src", "tgt"}
    for split in ("validation", "test"):
        assert task[split].column_names == ["translation", "references"]


def test_deterministic_and_seed_dependent(small_task):
    again = build_synthetic_task(SyntheticTaskConfig(seed=3, **SMALL))
    for split in small_task:
        assert small_task[split].to_dict() == again[split].to_dict()
    other = build_synthetic_task(SyntheticTaskConfig(seed=4, **SMALL))
    assert _pairs(other["train"]) != _pairs(small_task["train"])


def test_split_sources_disjoint_and_unique(task, train_pairs):
    train = {src for src, _ in train_pairs}
    valid = [src for src, _ in _pairs(task["validation"])]
    test = [src for src, _ in _pairs(task["test"])]
    assert len(set(valid)) == len(valid) and len(set(test)) == len(test)
    assert not train & set(valid) and not train & set(test) and not set(valid) & set(test)


def test_every_target_and_reference_is_valid(task, train_pairs):
    for src, tgt in train_pairs[:2000]:
        assert is_valid_translation(src, tgt), (src, tgt)
    for split in ("validation", "test"):
        for row in task[split]:
            refs, tgt = row["references"], row["translation"]["tgt"]
            assert refs[0] == tgt
            assert len(refs) == len(set(refs)) and 1 <= len(refs) <= 8
            assert len(refs) == min(8, count_valid_targets(row["translation"]["src"]))
            assert all(is_valid_translation(row["translation"]["src"], ref) for ref in refs)


def test_sizes_are_those_of_a_tiny_task(task, train_pairs):
    lengths = [len(tgt.split()) for _, tgt in train_pairs]
    assert 5 <= statistics.median(lengths) <= 25
    vocab = {tok.rstrip(".,") for src, tgt in train_pairs for tok in (src + " " + tgt).split()}
    assert 200 < len(vocab) < 1000
    counts = [count_valid_targets(src) for src, _ in _pairs(task["validation"])]
    assert min(counts) >= 2  # every source is multi-modal
    assert 10 <= statistics.median(counts) <= 1000


def test_raw_training_data_is_multimodal(task, train_pairs):
    targets_by_source = {}
    for src, tgt in train_pairs:
        targets_by_source.setdefault(src, set()).add(tgt)
    assert len(targets_by_source) == task["train"].num_rows // 2  # each source twice by default
    differing = sum(len(t) > 1 for t in targets_by_source.values()) / len(targets_by_source)
    assert differing > 0.7
    stats = oracle_multimodality_stats(task["train"].select(range(2000)))
    assert stats["valid_rate"] == 1.0
    assert stats["canonical_rate"] < 0.3
    assert stats["choice_entropy_bits"] > 0.7


def test_zero_probabilities_give_the_unimodal_oracle():
    config = SyntheticTaskConfig(seed=1, synonym_prob=0, format_prob=0, reorder_prob=0, optional_word_prob=0, **SMALL)
    data = build_synthetic_task(config)
    assert all(tgt == canonical_target(src) for src, tgt in _pairs(data["train"]))
    stats = oracle_multimodality_stats(data["train"])
    assert stats["canonical_rate"] == 1.0 and stats["choice_entropy_bits"] == 0.0
    assert stats["mean_distinct_targets_per_repeated_source"] == 1.0


def test_valid_targets_enumeration(small_task):
    for src, _ in _pairs(small_task["validation"])[:40]:
        n = count_valid_targets(src)
        head = valid_targets(src, limit=5)
        assert head[0] == canonical_target(src) and len(head) == min(5, n)
        if n <= 2000:
            everything = valid_targets(src)
            assert len(everything) == len(set(everything)) == n  # no two choices give the same string
            assert everything[:5] == head
            assert valid_targets(src) == everything  # deterministic
            assert all(is_valid_translation(src, t) for t in everything[:: max(1, n // 20)])


def test_validity_checker_rejects_mode_mixing(small_task):
    rng = random.Random(0)
    mixed = total = dropped_valid = 0
    for row in small_task["validation"]:
        src, refs = row["translation"]["src"], row["references"]
        tokens = [ref.split() for ref in refs]
        # duplicated word ("the the house"): never valid
        a = tokens[0]
        i = rng.randrange(len(a))
        assert not is_valid_translation(src, " ".join(a[: i + 1] + a[i:]))
        # dropped word: rarely valid ("on" before a date is optional, "right now" may be "now")
        dropped_valid += is_valid_translation(src, " ".join(a[:i] + a[i + 1 :]))
        # position-wise mixing of two modes, as a NAT predicting every position independently does
        for b in tokens[1:]:
            hypothesis = [rng.choice([x, y]) for x, y in zip(a, b)] + a[len(b) :]
            if hypothesis not in (a, b):
                total += 1
                mixed += not is_valid_translation(src, " ".join(hypothesis))
    assert dropped_valid <= 0.1 * small_task["validation"].num_rows
    assert total > 100 and mixed / total > 0.6


def test_validity_checker_normalisation():
    src = "lasu te ka nina mo rume."
    assert is_valid_translation(src, "the dog sells nina.")
    assert is_valid_translation(src, "  the dog   sells nina . ")
    assert is_valid_translation("lasu te ka nina mo rume .", "the hound trades nina.")
    assert not is_valid_translation(src, "The dog sells nina.")
    assert not is_valid_translation(src, "the dog sells nina")
    assert set(valid_targets(src)) == {
        "the dog sells nina.",
        "the dog trades nina.",
        "the hound sells nina.",
        "the hound trades nina.",
    }
    with pytest.raises(ValueError):
        is_valid_translation("this is not the source language .", "x")


def test_multi_reference_bleu_on_the_references_column(small_task):
    rows = list(small_task["test"])
    refs = [row["references"] for row in rows]
    exact = corpus_bleu([r[0] for r in refs], refs)
    assert exact["score"] == pytest.approx(100.0)
    assert "nrefs:var" in exact["signature"] or "nrefs:8" in exact["signature"]
    # valid targets that are not among the references still score well; mode-mixed ones score lower
    unseen, broken = [], []
    for row, r in zip(rows, refs):
        src = row["translation"]["src"]
        other = next((t for t in valid_targets(src, limit=50) if t not in r), r[-1])
        unseen.append(other)
        words = other.split()
        broken.append(" ".join(words[:1] + words[:-1]))  # shifted by one: "the the big house"
    good, bad = corpus_bleu(unseen, refs), corpus_bleu(broken, refs)
    assert good["score"] > bad["score"] + 10
    assert exact_match_rate([row["translation"]["src"] for row in rows], unseen) == 1.0
    assert exact_match_rate([row["translation"]["src"] for row in rows], broken) == 0.0


def test_multi_reference_bleu_ragged_references_and_errors():
    result = corpus_bleu(
        ["the dog sells nina.", "a cat sees tom."], [["the dog sells nina."], ["a cat sees tom.", "a kitty sees tom."]]
    )
    assert result["score"] == pytest.approx(100.0) and "nrefs:var" in result["signature"]
    with pytest.raises(ValueError):
        corpus_bleu(["a"], [["a"], ["b"]])


def test_config_validation():
    with pytest.raises(ValueError):
        SyntheticTaskConfig(synonym_prob=1.5)
    with pytest.raises(ValueError):
        SyntheticTaskConfig(num_references=0)
