"""Decoding invariants (PAPER.md, "Decoding"): ODD against brute force, length windows at the edges, GNMT selection,
and AR rescoring in one pass against a per-candidate loop."""

import importlib.util
import itertools
from pathlib import Path

import pytest
import torch
from conftest import tiny_marian as build_tiny_marian

try:
    from em_nat.modeling import decoding
except ImportError:  # package not installed yet: load the file itself
    _spec = importlib.util.spec_from_file_location(
        "decoding", Path(__file__).resolve().parents[1] / "modeling" / "decoding.py"
    )
    decoding = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(decoding)

ar_rescore = decoding.ar_rescore
gnmt_length_penalty = decoding.gnmt_length_penalty
length_candidates = decoding.length_candidates
odd_decode = decoding.odd_decode
select_best = decoding.select_best
masked_sequence_log_prob = decoding._masked_sequence_log_prob  # what ar_rescore sums candidate scores with
top_k_per_position = decoding.top_k_per_position


def random_candidates(batch, tgt_len, k, vocab, seed, dtype=torch.float64):
    """Top-k candidates of random log-probabilities over a small vocabulary (adjacent collisions are frequent)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, tgt_len, vocab, generator=generator, dtype=dtype)
    return top_k_per_position(logits.log_softmax(-1), k)


def brute_force_odd(values, ids):
    """Best path of one example (tgt_len, k) by enumerating all k ** tgt_len paths."""
    tgt_len, k = values.shape
    best_score, best_tokens = None, None
    for path in itertools.product(range(k), repeat=tgt_len):
        tokens = [int(ids[t, j]) for t, j in enumerate(path)]
        if any(a == b for a, b in zip(tokens, tokens[1:])):
            continue
        score = sum(float(values[t, j]) for t, j in enumerate(path))
        if best_score is None or score > best_score:
            best_score, best_tokens = score, tokens
    return best_tokens, best_score


ODD_CASES = [
    (seed, tgt_len, k, vocab) for seed in range(4) for tgt_len in range(1, 7) for k in (2, 3) for vocab in (4, 6)
]


def test_odd_case_table_is_not_empty():
    assert len(ODD_CASES) == 96


@pytest.mark.parametrize("seed,tgt_len,k,vocab", ODD_CASES)
def test_odd_matches_brute_force(seed, tgt_len, k, vocab):
    values, ids = random_candidates(3, tgt_len, k, vocab, seed)
    tokens, scores = odd_decode(values, ids)
    assert tokens.shape == (3, tgt_len) and tokens.dtype == torch.long and scores.shape == (3,)
    for row in range(3):
        expected_tokens, expected_score = brute_force_odd(values[row], ids[row])
        assert tokens[row].tolist() == expected_tokens
        assert scores[row].item() == pytest.approx(expected_score, abs=1e-9)


def test_brute_force_cases_exercise_the_constraint():
    """The table above is only meaningful if many of its argmax paths have equal neighbours."""
    with_repeats = 0
    for seed, tgt_len, k, vocab in ODD_CASES:
        _, ids = random_candidates(3, tgt_len, k, vocab, seed)
        with_repeats += int((ids[:, 1:, 0] == ids[:, :-1, 0]).any(-1).sum())
    assert with_repeats >= 50


@pytest.mark.parametrize("k", [2, 3, 5])
def test_odd_never_leaves_equal_neighbours(k):
    values, ids = random_candidates(64, 40, k, 5, seed=k)
    assert (ids[:, 1:, 0] == ids[:, :-1, 0]).any()  # the argmax path has repeats to remove
    tokens, scores = odd_decode(values, ids)
    assert not (tokens[:, 1:] == tokens[:, :-1]).any()
    # every token is one of its position's candidates and the score is the sum of the chosen values
    chosen = tokens[..., None] == ids  # (batch, tgt_len, k)
    assert chosen.sum(-1).eq(1).all()
    assert torch.allclose(scores, (values * chosen).sum((1, 2)))


def test_odd_float32_logits_and_minus_inf_candidates():
    values, ids = random_candidates(16, 12, 3, 4, seed=7, dtype=torch.float32)
    values = values.clone()
    values[:, ::3, 1:] = float("-inf")  # e.g. masked special tokens reaching the top-k of a tiny vocabulary
    tokens, scores = odd_decode(values, ids)
    assert not (tokens[:, 1:] == tokens[:, :-1]).any()
    assert scores.dtype == torch.float32 and not scores.isnan().any()


def test_odd_is_argmax_without_adjacent_duplicates():
    ids = torch.tensor([[[3, 1, 2], [1, 3, 2], [2, 1, 3], [3, 2, 1]]])  # argmax path 3 1 2 3
    values = torch.tensor([[[-0.1, -2.0, -3.0], [-0.5, -1.0, -4.0], [-0.2, -2.5, -3.5], [-0.3, -1.5, -2.0]]])
    tokens, scores = odd_decode(values, ids)
    assert tokens.tolist() == [[3, 1, 2, 3]]
    assert scores.item() == pytest.approx(-1.1)
    values, ids = random_candidates(32, 15, 3, 50, seed=3)
    clean = ~(ids[:, 1:, 0] == ids[:, :-1, 0]).any(-1)
    assert clean.sum() > 10
    tokens, scores = odd_decode(values[clean], ids[clean])
    assert torch.equal(tokens, ids[clean][..., 0])
    assert torch.allclose(scores, values[clean][..., 0].sum(-1))


def test_odd_hand_built_repeat_takes_cheapest_replacement():
    # argmax 5 5 5: the best fix keeps the outer 5s and replaces the middle one with its runner-up
    ids = torch.tensor([[[5, 7], [5, 8], [5, 9]]])
    values = torch.tensor([[[-0.1, -3.0], [-0.2, -0.5], [-0.1, -3.0]]])
    tokens, scores = odd_decode(values, ids)
    assert tokens.tolist() == [[5, 8, 5]]
    assert scores.item() == pytest.approx(-0.7)


def test_odd_ties_prefer_lower_rank():
    ids = torch.tensor([[[4, 6], [4, 6]]])
    values = torch.tensor([[[-1.0, -1.0], [-1.0, -1.0]]])  # paths 4 6 and 6 4 tie
    tokens, _ = odd_decode(values, ids)
    assert tokens.tolist() == [[4, 6]]
    assert torch.equal(odd_decode(values, ids)[0], tokens)


def test_odd_batched_equals_one_by_one_and_ignores_padding():
    values, ids = random_candidates(6, 9, 3, 5, seed=11)
    lengths = torch.tensor([9, 1, 4, 0, 7, 2])
    tokens, scores = odd_decode(values, ids, lengths)
    # garbage (and -inf) beyond each length must not change anything
    garbage_values, garbage_ids = random_candidates(6, 9, 3, 5, seed=12)
    pad = torch.arange(9)[None, :] >= lengths[:, None]
    noisy_values = torch.where(pad[..., None], garbage_values, values)
    noisy_values[:, -1, 0] = torch.where(pad[:, -1], float("-inf"), noisy_values[:, -1, 0])
    noisy_ids = torch.where(pad[..., None], garbage_ids, ids)
    noisy_tokens, noisy_scores = odd_decode(noisy_values, noisy_ids, lengths)
    assert torch.equal(scores, noisy_scores)
    for row in range(6):
        length = int(lengths[row])
        alone_tokens, alone_score = odd_decode(values[row : row + 1, :length], ids[row : row + 1, :length])
        assert tokens[row, :length].tolist() == alone_tokens[0].tolist() == noisy_tokens[row, :length].tolist()
        assert scores[row].item() == pytest.approx(alone_score.item(), abs=1e-12)
        if length > 1:
            expected_tokens, expected_score = brute_force_odd(values[row, :length], ids[row, :length])
            assert alone_tokens[0].tolist() == expected_tokens
    assert scores[3].item() == 0.0  # an empty row scores nothing


def test_odd_rejects_single_candidate_and_handles_empty():
    values, ids = random_candidates(2, 5, 1, 4, seed=0)
    with pytest.raises(ValueError, match="k >= 2"):
        odd_decode(values, ids)
    tokens, scores = odd_decode(torch.zeros(2, 0, 3), torch.zeros(2, 0, 3, dtype=torch.long))
    assert tokens.shape == (2, 0) and scores.tolist() == [0.0, 0.0]


def test_top_k_per_position_shapes_and_order():
    log_probs = torch.randn(2, 5, 11).log_softmax(-1)
    values, indices = top_k_per_position(log_probs, 3)
    assert values.shape == indices.shape == (2, 5, 3)
    assert torch.equal(indices[..., 0], log_probs.argmax(-1))
    assert (values[..., :-1] >= values[..., 1:]).all()
    assert torch.equal(log_probs.gather(-1, indices), values)


LENGTH_CASES = [
    # (predicted, beam, min_length, max_length, expected)
    (20, 9, 1, 100, list(range(16, 25))),
    (20, 4, 1, 100, [18, 19, 20, 21]),
    (1, 9, 1, 100, list(range(1, 10))),
    (2, 9, 1, 100, list(range(1, 10))),
    (0, 9, 1, 100, list(range(1, 10))),
    (5, 9, 3, 100, list(range(3, 12))),
    (100, 9, 1, 100, list(range(92, 101))),
    (98, 9, 1, 100, list(range(92, 101))),
    (150, 9, 1, 100, list(range(92, 101))),
    (96, 9, 1, 100, list(range(92, 101))),
    (95, 9, 1, 100, list(range(91, 100))),
    (7, 9, 1, 9, list(range(1, 10))),
    (500, 9, 1, None, list(range(496, 505))),
    (20, 1, 1, 100, [20]),
    (0, 1, 1, 100, [1]),
    (130, 1, 1, 100, [100]),
]


def test_length_case_table_is_not_empty():
    assert len(LENGTH_CASES) == 16


@pytest.mark.parametrize("predicted,beam,min_length,max_length,expected", LENGTH_CASES)
def test_length_candidates(predicted, beam, min_length, max_length, expected):
    out = length_candidates(torch.tensor([predicted]), beam, min_length, max_length)
    assert out.dtype == torch.long and out.shape == (1, beam)
    assert out[0].tolist() == expected


def test_length_candidates_batched_and_distinct():
    predicted = torch.arange(0, 40)
    out = length_candidates(predicted, 9, 2, 35)
    assert out.shape == (40, 9)
    for row, length in enumerate(predicted.tolist()):
        assert out[row].tolist() == length_candidates(torch.tensor([length]), 9, 2, 35)[0].tolist()
    assert (out[:, 1:] - out[:, :-1]).eq(1).all()  # distinct and ascending
    assert out.min() == 2 and out.max() == 35


def test_length_candidates_rejects_too_small_range():
    with pytest.raises(ValueError, match="distinct lengths"):
        length_candidates(torch.tensor([3]), 9, 1, 8)
    with pytest.raises(ValueError, match=">= 1"):
        length_candidates(torch.tensor([3]), 0)


def test_gnmt_length_penalty():
    penalty = gnmt_length_penalty(torch.tensor([1, 7, 19]), 0.6)
    assert penalty.dtype == torch.float32
    assert torch.allclose(penalty, torch.tensor([1.0, 2.0**0.6, 4.0**0.6]))
    assert torch.equal(gnmt_length_penalty(torch.tensor([3, 40]), 0.0), torch.ones(2))


def test_select_best_is_the_argmax_with_ties_to_the_lowest_index():
    scores = torch.tensor([[-4.0, -5.0], [-5.0, -4.0]])
    assert select_best(scores).tolist() == [0, 1]
    assert select_best(torch.tensor([[-1.0, -1.0, -2.0]])).tolist() == [0]  # ties -> lowest index


def test_masked_sequence_log_prob_ignores_masked_positions():
    logits = torch.randn(2, 4, 7)
    targets = torch.tensor([[3, 5, 2, 0], [6, 2, 0, 0]])
    expected = [
        sum(logits[b].log_softmax(-1)[t, targets[b, t]].item() for t in range(4) if targets[b, t] != 0)
        for b in range(2)
    ]
    out = masked_sequence_log_prob(logits, targets, targets.ne(0))
    assert out.tolist() == pytest.approx(expected, abs=1e-5)
    # log-probabilities in, same answer; -100 padding and -inf logits at padded positions are fine
    labels = targets.masked_fill(targets.eq(0), -100)
    masked = logits.log_softmax(-1).masked_fill(targets.eq(0)[..., None], float("-inf"))
    assert masked_sequence_log_prob(masked, labels, labels.ne(-100)).tolist() == pytest.approx(expected, abs=1e-5)


PAD, EOS, START = 0, 2, 0


@pytest.fixture(scope="module")
def tiny_marian():
    return build_tiny_marian(vocab_size=50, eos_token_id=EOS)


def make_rescoring_batch():
    generator = torch.Generator().manual_seed(5)
    input_ids = torch.randint(3, 50, (3, 7), generator=generator)
    input_ids[:, -1] = EOS
    input_ids[1, 4:] = PAD  # a shorter source, right-padded
    input_ids[1, 3] = EOS
    attention_mask = input_ids.ne(PAD).long()
    batch, m, tgt_len = 3, 4, 9
    candidates = torch.randint(3, 50, (batch, m, tgt_len), generator=generator)
    lengths = torch.randint(1, tgt_len + 1, (batch, m), generator=generator)  # EOS included
    lengths[0, 0], lengths[2, 3] = 1, tgt_len
    positions = torch.arange(tgt_len)
    candidates = candidates.masked_fill(positions >= lengths[..., None], PAD)
    candidates = torch.where(positions == lengths[..., None] - 1, EOS, candidates)
    return input_ids, attention_mask, candidates, lengths


def loop_scores(model, input_ids, attention_mask, candidates):
    """The straightforward per-candidate computation, unpadded, one forward pass each."""
    out = torch.zeros(candidates.shape[:2], dtype=torch.float64)
    for b in range(candidates.shape[0]):
        source_length = int(attention_mask[b].sum())
        source = input_ids[b : b + 1, :source_length]
        for j in range(candidates.shape[1]):
            target = candidates[b, j][candidates[b, j].ne(PAD)][None]  # (1, L)
            shifted = torch.cat([torch.tensor([[START]]), target[:, :-1]], dim=1)
            with torch.no_grad():
                logits = model(input_ids=source, decoder_input_ids=shifted).logits
            out[b, j] = logits.log_softmax(-1).gather(-1, target[..., None]).sum().item()
    return out


def test_ar_rescore_matches_per_candidate_loop(tiny_marian):
    input_ids, attention_mask, candidates, lengths = make_rescoring_batch()
    log_probs, normalised = ar_rescore(tiny_marian, input_ids, attention_mask, candidates, PAD, EOS, START, alpha=0.6)
    expected = loop_scores(tiny_marian, input_ids, attention_mask, candidates)
    assert log_probs.shape == normalised.shape == (3, 4)
    assert torch.allclose(log_probs.double(), expected, atol=1e-4)
    assert torch.allclose(normalised, log_probs / ((5 + lengths.float()) / 6) ** 0.6)
    # the teacher-forced scores are those of a plain forward with labels (HF's own shifting and loss)
    labels = candidates[1, 2][candidates[1, 2].ne(PAD)][None]
    with torch.no_grad():
        loss = tiny_marian(input_ids=input_ids[1:2, :4], labels=labels).loss
    assert log_probs[1, 2].item() == pytest.approx(-loss.item() * labels.shape[1], abs=1e-4)


def test_ar_rescore_batched_equals_one_by_one_and_restores_mode(tiny_marian):
    input_ids, attention_mask, candidates, _ = make_rescoring_batch()
    tiny_marian.train()
    try:
        log_probs, normalised = ar_rescore(tiny_marian, input_ids, None, candidates, PAD, EOS, START, alpha=1.4)
        assert tiny_marian.training
    finally:
        tiny_marian.eval()
    for b in range(3):
        source_length = int(attention_mask[b].sum())
        width = int(candidates[b].ne(PAD).sum(-1).max())  # less padding than in the batch
        alone, alone_normalised = ar_rescore(
            tiny_marian,
            input_ids[b : b + 1, :source_length],
            None,
            candidates[b : b + 1, :, :width],
            PAD,
            EOS,
            START,
            alpha=1.4,
        )
        assert torch.allclose(alone[0], log_probs[b], atol=1e-4)
        assert torch.allclose(alone_normalised[0], normalised[b], atol=1e-4)
