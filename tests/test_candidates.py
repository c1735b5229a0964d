"""AR candidate generation: the per-batch length cap tied to the source (fairseq's --max-len-a/b)."""

import pytest
from accelerate import Accelerator
from conftest import tiny_models
from em_nat.trainers.candidates import generate_candidates, length_cap, translate

from em_nat import EMTrainingArguments


def test_length_cap_follows_the_longest_source_and_never_exceeds_the_limit():
    assert length_cap(10, 128) == 128  # off by default
    assert length_cap(10, 128, max_len_a=1.2, max_len_b=10) == 22
    assert length_cap(100, 128, max_len_a=1.2, max_len_b=10) == 128
    assert length_cap(3, 128, max_len_a=0.1, max_len_b=0) == 1


def _sources(tokenizer, pairs):
    return [tokenizer(s)["input_ids"] for s, _ in pairs[:6]]


def test_candidates_and_translations_stop_at_the_cap(tokenizer, pairs):
    ar, _ = tiny_models(tokenizer)  # random weights: it rarely ends on its own, so outputs run to the limit
    sources, accelerator = _sources(tokenizer, pairs), Accelerator(cpu=True)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    cap = length_cap(max(map(len, sources)), 40, 0.5, 1)
    free, _ = generate_candidates(ar, sources, 2, 2, accelerator, pad, eos, 40, max_sentences=8)
    capped, _ = generate_candidates(ar, sources, 2, 2, accelerator, pad, eos, 40, 8, max_len_a=0.5, max_len_b=1)
    longest = lambda rows: max(len(c) for cands in rows for c in cands)  # noqa: E731
    assert longest(capped) <= cap + 1 < longest(free)  # + EOS
    out = translate(ar, sources, accelerator, pad, eos, 8, max_len_a=0.5, max_len_b=1, num_beams=2, max_new_tokens=40)
    assert max(map(len, out)) <= cap + 1


def test_negative_length_cap_is_refused(tmp_path):
    with pytest.raises(ValueError, match="generation_max_len_a"):
        EMTrainingArguments(output_dir=str(tmp_path), generation_max_len_a=-1.0)
