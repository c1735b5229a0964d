"""Decoding functions: ODD against brute force, length windows, selection, AR rescoring, batching invariants."""

import itertools

import pytest
import torch
from em_nat.modeling.decoding import (
    ar_rescore,
    gnmt_length_penalty,
    length_candidates,
    odd_decode,
    select_best,
    top_k_per_position,
)

CASES = [(seed, length, k) for seed in range(6) for length in range(1, 7) for k in (2, 3)]


def _random_topk(seed, length, k, vocab=5, batch=1):
    generator = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(batch, length, vocab, generator=generator).log_softmax(-1)
    return top_k_per_position(log_probs, k)


def _brute_force(values, ids):
    """Best path without equal neighbours by enumerating all k^T paths (one example)."""
    length, k = values.shape
    best = None
    for ranks in itertools.product(range(k), repeat=length):
        tokens = [int(ids[t, r]) for t, r in enumerate(ranks)]
        if any(a == b for a, b in zip(tokens, tokens[1:])):
            continue
        score = sum(float(values[t, r]) for t, r in enumerate(ranks))
        if best is None or score > best[0] + 1e-9:
            best = (score, tokens)
    return best


def test_odd_cases_table_is_not_empty():
    assert len(CASES) == 72


@pytest.mark.parametrize("seed, length, k", CASES)
def test_odd_equals_brute_force(seed, length, k):
    values, ids = _random_topk(seed, length, k)
    tokens, scores = odd_decode(values, ids)
    best_score, best_tokens = _brute_force(values[0], ids[0])
    assert scores[0].item() == pytest.approx(best_score, abs=1e-5)
    assert tokens[0].tolist() == best_tokens


def test_odd_never_leaves_equal_neighbours():
    values, ids = _random_topk(0, 40, 3, vocab=4, batch=64)
    lengths = torch.randint(1, 41, (64,), generator=torch.Generator().manual_seed(1))
    tokens, _ = odd_decode(values, ids, lengths)
    assert (ids[..., 0][:, 1:] == ids[..., 0][:, :-1]).any()  # the input does have repeats to remove
    for row, length in zip(tokens, lengths):
        row = row[:length]
        assert not (row[1:] == row[:-1]).any()


def test_odd_equals_argmax_without_adjacent_duplicates():
    values, _ = _random_topk(3, 30, 3, vocab=10, batch=16)
    ids = torch.arange(30)[None, :, None] * 3 + torch.arange(3)[None, None, :]  # all distinct
    ids = ids.expand(16, -1, -1).clone()
    ids[:, 1::2, 1] = ids[:, 0:-1:2, 0]  # second choices repeat the left neighbour: tempting but never needed
    tokens, scores = odd_decode(values, ids)
    assert torch.equal(tokens, ids[..., 0])
    assert torch.allclose(scores, values[..., 0].sum(-1))


def test_odd_batched_equals_one_by_one_and_ignores_padding():
    values, ids = _random_topk(5, 12, 3, vocab=4, batch=8)
    lengths = torch.tensor([12, 1, 5, 7, 12, 3, 9, 2])
    tokens, scores = odd_decode(values, ids, lengths)
    garbage_values = values.clone()
    garbage_ids = ids.clone()
    for b, length in enumerate(lengths):
        garbage_values[b, length:] = 100.0  # padding must not matter
        garbage_ids[b, length:] = ids[b, 0, 0]
        single_tokens, single_score = odd_decode(values[b : b + 1, :length], ids[b : b + 1, :length])
        assert tokens[b, :length].tolist() == single_tokens[0].tolist()
        assert scores[b].item() == pytest.approx(single_score.item(), abs=1e-5)
    padded_tokens, padded_scores = odd_decode(garbage_values, garbage_ids, lengths)
    assert torch.allclose(padded_scores, scores)
    for b, length in enumerate(lengths):
        assert torch.equal(padded_tokens[b, :length], tokens[b, :length])


def test_odd_needs_two_candidates():
    values, ids = _random_topk(0, 4, 1)
    with pytest.raises(ValueError, match="k >= 2"):
        odd_decode(values, ids)


def test_length_window_in_the_middle_and_at_both_ends():
    predicted = torch.tensor([20, 1, 2, 5, 99, 100])
    windows = length_candidates(predicted, 9, min_length=1, max_length=100)
    assert windows[0].tolist() == list(range(16, 25))
    assert windows[1].tolist() == list(range(1, 10))  # short end: shifted, not clipped
    assert windows[2].tolist() == list(range(1, 10))
    assert windows[3].tolist() == list(range(1, 10))
    assert windows[4].tolist() == list(range(92, 101))  # long end
    assert windows[5].tolist() == list(range(92, 101))
    assert all(len(set(row.tolist())) == 9 for row in windows)
    assert length_candidates(torch.tensor([7, 300]), 1, 1, 100).tolist() == [[7], [100]]
    assert length_candidates(torch.tensor([3]), 4, 2, 50).tolist() == [[2, 3, 4, 5]]
    with pytest.raises(ValueError, match="distinct lengths"):
        length_candidates(predicted, 9, min_length=1, max_length=5)


def test_selection_picks_argmax_of_score_over_length_penalty():
    scores = torch.tensor([[-10.0, -11.0, -30.0]])
    lengths = torch.tensor([[5, 12, 40]])
    assert select_best(scores).item() == 0
    normalised = scores / gnmt_length_penalty(lengths, 1.0)
    assert normalised.argmax(-1).item() == 1 and select_best(scores, lengths, alpha=1.0).item() == 1
    assert select_best(torch.tensor([[-1.0, -1.0]])).item() == 0  # ties: lowest index
    assert gnmt_length_penalty(torch.tensor([7]), 0.6).item() == pytest.approx((12 / 6) ** 0.6)


@pytest.fixture
def tiny_marian():
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=50,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=0,
    )
    return MarianMTModel(config).eval()


def _loop_score(model, source, candidate):
    """Straightforward per-candidate teacher-forced log-probability."""
    target = candidate[candidate.ne(0)]
    decoder_input = torch.cat([torch.tensor([0]), target[:-1]])
    logits = model(input_ids=source[source.ne(0)][None], decoder_input_ids=decoder_input[None]).logits
    return logits.log_softmax(-1)[0].gather(-1, target[:, None]).sum().item()


def test_ar_rescore_matches_a_loop_and_batching(tiny_marian):
    generator = torch.Generator().manual_seed(0)
    sources = torch.randint(3, 50, (2, 6), generator=generator)
    sources[0, 4:] = 0
    sources[0, 3] = 2
    sources[1, 5] = 2
    candidates = torch.randint(3, 50, (2, 3, 7), generator=generator)
    lengths = torch.tensor([[7, 4, 2], [5, 6, 3]])
    for b in range(2):
        for m in range(3):
            candidates[b, m, lengths[b, m] - 1] = 2
            candidates[b, m, lengths[b, m] :] = 0
    raw, normalised = ar_rescore(tiny_marian, sources, sources.ne(0).long(), candidates, 0, 2, 0, alpha=0.6)
    for b in range(2):
        for m in range(3):
            assert raw[b, m].item() == pytest.approx(_loop_score(tiny_marian, sources[b], candidates[b, m]), abs=1e-4)
    assert torch.allclose(normalised, raw / gnmt_length_penalty(lengths, 0.6))
    one, _ = ar_rescore(tiny_marian, sources[1:], None, candidates[1:], 0, 2, 0)
    assert torch.allclose(one[0], raw[1], atol=1e-5)


def test_generate_with_rescoring_keeps_the_best_rescored_candidate(nat, tokenizer, pairs):
    from em_nat import build_ar_model

    torch.manual_seed(3)
    ar = build_ar_model(tokenizer, nat.config).eval()
    enc = tokenizer([pairs[0][0], pairs[7][0]], return_tensors="pt", padding=True)
    predicted = nat.generate(**enc, return_dict_in_generate=True).lengths
    out = nat.generate(**enc, length_beam=5, rescorer=ar, rescore_alpha=1.0, return_dict_in_generate=True)
    for b in range(2):
        source = {k: v[b : b + 1, : int(enc["attention_mask"][b].sum())] for k, v in enc.items()}
        window = length_candidates(predicted[b : b + 1], 5, 1, nat.config.max_position_embeddings)[0]
        best = None
        for length in window.tolist():  # each length candidate alone, then scored by the AR
            cand = nat.generate(**source, min_length=length, max_length=length)
            _, score = ar_rescore(ar, source["input_ids"], None, cand[:, None], 0, 2, 0, alpha=1.0)
            if best is None or score.item() > best[0]:
                best = (score.item(), cand[0])
        length = int(out.lengths[b])
        assert out.sequences[b, :length].tolist() == best[1].tolist()
        assert out.sequences_scores[b].item() == pytest.approx(best[0], abs=1e-4)
