"""The repeated-token rate (one definition, `em_nat.metrics.repeated_token_rate`) and ODD's promise, checked end to end:
no two equal neighbours from `generate(odd=True)`, with a length beam, through the pipeline and in the test tables."""

import json
from pathlib import Path

import pytest
from conftest import tiny_models
from transformers import pipeline

from em_nat.metrics import repeated_token_rate, structural_ids

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "sequences, ignore, expected",
    [
        ([[5, 5, 6]], (), 1 / 2),
        ([[5, 6, 7]], (), 0.0),
        ([[5, 5, 5, 5]], (), 1.0),
        ([[5, 6, 1, 0, 0]], (0, 1), 0.0),  # EOS and padding are not content: their runs are not repeats
        ([[5, 6, 1, 0, 0]], (), 1 / 4),  # counted, the padding run would be
        ([[5, 5, 1], [7, 8, 9, 1]], (1,), 1 / 3),  # pooled over sequences: 1 equal pair of 1 + 2 pairs
        ([[4], []], (), 0.0),  # no pairs at all
        ([], (), 0.0),
        ([[9, 9, 0, 0]], (0,), 1.0),
    ],
)
def test_repeated_token_rate_on_hand_built_ids(sequences, ignore, expected):
    assert repeated_token_rate(sequences, ignore) == pytest.approx(expected)


def test_structural_ids_are_pad_eos_and_bos(tokenizer):
    assert structural_ids(tokenizer) == {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id}
    assert tokenizer.unk_token_id not in structural_ids(tokenizer)


def _has_equal_neighbours(ids, ignore) -> bool:
    return repeated_token_rate([ids], ignore) > 0


@pytest.fixture(scope="module")
def sources(pairs):
    return [s for s, _ in pairs[:12]]


@pytest.fixture(scope="module")
def models(tokenizer):
    ar, nat = tiny_models(tokenizer, seed=1)
    return ar.eval(), nat.eval()


def test_argmax_of_the_untrained_nat_repeats_so_the_odd_checks_below_mean_something(models, tokenizer, sources):
    _, nat = models
    out = nat.generate(**tokenizer(sources, return_tensors="pt", padding=True), odd=False)
    assert repeated_token_rate(out.tolist(), structural_ids(tokenizer)) > 0.05


@pytest.mark.parametrize(
    "knobs",
    [
        {},
        {"odd_top_k": 2},
        {"length_beam": 5, "min_length": 10},
        {"length_beam": 5, "min_length": 10, "rescore": True},
    ],
)
def test_generate_with_odd_leaves_no_equal_neighbours(models, tokenizer, sources, knobs):
    ar, nat = models
    knobs = dict(knobs)
    if knobs.pop("rescore", False):
        knobs["rescorer"] = ar
    enc = tokenizer(sources, return_tensors="pt", padding=True)
    ignore = structural_ids(tokenizer)
    argmax = nat.generate(**enc, odd=False, **knobs)  # the same search without ODD repeats: the check has teeth
    assert [row for row in argmax.tolist() if _has_equal_neighbours(row, ignore)]
    out = nat.generate(**enc, odd=True, **knobs)
    assert out.shape[0] == len(sources)
    assert not [row for row in out.tolist() if _has_equal_neighbours(row, ignore)]


def test_pipeline_with_odd_leaves_no_equal_neighbours(models, tokenizer, sources):
    _, nat = models
    translator = pipeline("translation", model=nat, tokenizer=tokenizer)
    ignore = structural_ids(tokenizer)
    for knobs in ({}, {"length_beam": 3}):
        out = translator(sources, return_tensors=True, **knobs)
        assert len(out) == len(sources)
        assert not [o for o in out if _has_equal_neighbours(o["translation_token_ids"].tolist(), ignore)]
    argmax = translator(sources, return_tensors=True, odd=False)
    assert any(_has_equal_neighbours(o["translation_token_ids"].tolist(), ignore) for o in argmax)


def test_test_tables_report_no_repeats_for_odd_rows(models, tokenizer, sources, tmp_path):
    from em_nat.evaluation import evaluate_run
    from em_nat.rendering import markdown_of_test_results

    ar, nat = models
    folder = tmp_path / "round-0"
    for name, model in (("ar", ar), ("nat", nat)):
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
    (folder / "metrics.json").write_text(json.dumps({"em/round": 0, "em/cm": 1.0}))
    result = evaluate_run(str(tmp_path), sources, sources, batch1_sentences=1, batch_size=4, warmup=0)
    rates = {row["name"]: row["repeat_rate"] for row in result["rows"]}
    assert rates["r0/nat_argmax"] > 0.05
    assert rates["r0/nat_odd"] == 0.0 and rates["r0/nat_lb9_odd_rescore"] == 0.0
    table = markdown_of_test_results(result)
    assert (
        "| NAT, raw data | ODD |" in table and "| 0.0% |" in table.split("| NAT, raw data | ODD |")[1].split("\n")[0]
    )
