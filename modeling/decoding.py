"""NAT decoding as pure, batched tensor functions (PAPER.md, "Decoding"): top-k per position, ODD, length
candidates, GNMT length penalty, candidate selection, and AR rescoring in one teacher-forced pass.

Imports only torch: this file is copied next to saved weights for trust_remote_code users.
"""

import torch


def top_k_per_position(log_probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Args:
        log_probs (`torch.Tensor` of shape `(batch, tgt_len, vocab)`).
    Returns:
        values, indices: both `(batch, tgt_len, k)`, best first.
    """
    return log_probs.topk(k, dim=-1)


def odd_decode(
    topk_scores: torch.Tensor, topk_ids: torch.Tensor, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """ODD, optimal de-duplicated decoding: Viterbi over the k candidates of each position maximising the summed
    score under the constraint that no two adjacent output tokens are equal. The output keeps its length.

    Scores may be log-probabilities or raw logits: a per-position constant does not change the best path.

    Args:
        topk_scores (`torch.Tensor` of shape `(batch, tgt_len, k)`): candidate scores, best first.
        topk_ids (`torch.Tensor` of shape `(batch, tgt_len, k)`): candidate ids (distinct within a position).
        lengths (`torch.LongTensor` of shape `(batch,)`, *optional*): positions >= length are ignored.
    Returns:
        tokens (`torch.LongTensor` of shape `(batch, tgt_len)`; unspecified beyond `lengths`) and
        scores (`torch.Tensor` of shape `(batch,)`): the path's summed score over valid positions.
    """
    batch, tgt_len, k = topk_scores.shape
    if k < 2:
        raise ValueError("ODD needs k >= 2 candidates per position (with k = 1 a repeat may have no alternative).")
    if tgt_len == 0:
        return topk_ids.new_zeros(batch, 0), topk_scores.new_zeros(batch)
    if lengths is None:
        lengths = torch.full((batch,), tgt_len, dtype=torch.long, device=topk_ids.device)
    valid = torch.arange(tgt_len, device=lengths.device)[None, :] < lengths[:, None]  # (batch, tgt_len)
    # Where the argmax path has no equal neighbours it is the optimum under the constraint too: only rows with a
    # repeat need the Viterbi pass (exact, and most rows of a trained model).
    tokens = topk_ids[..., 0].clone()  # (batch, tgt_len)
    scores = (topk_scores[..., 0] * valid).sum(-1)
    repeats = ((tokens[:, 1:] == tokens[:, :-1]) & valid[:, 1:]).any(-1)  # (batch,)
    if bool(repeats.any()):
        rows = repeats.nonzero()[:, 0]
        tokens[rows], scores[rows] = _viterbi(topk_scores[rows], topk_ids[rows], valid[rows])
    return tokens, scores


def _viterbi(topk_scores: torch.Tensor, topk_ids: torch.Tensor, valid: torch.Tensor):
    """The ODD Viterbi pass over (batch, tgt_len, k) candidates; `valid` (batch, tgt_len) marks real positions."""
    batch, tgt_len, k = topk_scores.shape
    # clash[b, t, j, i]: candidate j at position t equals candidate i at position t-1
    clash = topk_ids[:, 1:, :, None] == topk_ids[:, :-1, None, :]  # (batch, tgt_len-1, k, k)
    penalty = clash.to(topk_scores.dtype) * torch.finfo(topk_scores.dtype).min / 4
    best = topk_scores[:, 0]  # (batch, k): best path score ending in candidate j
    backpointers = []
    for t in range(1, tgt_len):
        # (batch, k_current, k_previous)
        total = best[:, None, :] + penalty[:, t - 1]
        previous_best, previous = total.max(-1)  # (batch, k)
        step = previous_best + topk_scores[:, t]
        keep = valid[:, t, None]
        best = torch.where(keep, step, best)
        backpointers.append(torch.where(keep, previous, torch.arange(k, device=previous.device)))
    scores, last = best.max(-1)  # (batch,)
    scores = scores.to(topk_scores.dtype)
    chosen = [last]
    for pointer in reversed(backpointers):
        last = pointer.gather(1, last[:, None])[:, 0]
        chosen.append(last)
    ranks = torch.stack(chosen[::-1], dim=1)  # (batch, tgt_len)
    tokens = topk_ids.gather(2, ranks[..., None])[..., 0]
    return tokens, scores


def length_candidates(
    predicted_lengths: torch.Tensor, beam: int, min_length: int = 1, max_length: int = 256
) -> torch.Tensor:
    """The `beam` lengths around each prediction (beam 9: L-4 .. L+4), shifted, not clipped, so that they stay
    distinct inside `[min_length, max_length]`.

    Args:
        predicted_lengths (`torch.LongTensor` of shape `(batch,)`).
    Returns:
        `torch.LongTensor` of shape `(batch, beam)`, ascending.
    """
    if beam < 1:
        raise ValueError(f"length beam must be >= 1, got {beam}.")
    if max_length - min_length + 1 < beam:
        raise ValueError(
            f"A length beam of {beam} needs {beam} distinct lengths but only [{min_length}, {max_length}] is allowed;"
            " lower length_beam or raise max_length."
        )
    low = (predicted_lengths - beam // 2).clamp(min_length, max_length - beam + 1)  # (batch,)
    return low[:, None] + torch.arange(beam, device=predicted_lengths.device)[None, :]


def gnmt_length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT length penalty ((5 + L) / 6) ** alpha."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def select_best(scores: torch.Tensor, lengths: torch.Tensor | None = None, alpha: float | None = None) -> torch.Tensor:
    """Index of the best candidate per row; with `alpha`, log-prob scores are divided by the GNMT penalty first.

    Args:
        scores (`torch.Tensor` of shape `(batch, m)`); lengths (`(batch, m)`), needed with alpha.
    Returns:
        `torch.LongTensor` of shape `(batch,)`; ties go to the lowest index.
    """
    if alpha is not None:
        scores = scores / gnmt_length_penalty(lengths, alpha)
    return scores.argmax(-1)


def sequence_log_prob_from_logits(logits: torch.Tensor, target_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Sum of log p(target token) over non-PAD positions.

    Args:
        logits (`torch.Tensor` of shape `(batch, tgt_len, vocab)`): unnormalised (log_softmax is applied).
        target_ids (`torch.LongTensor` of shape `(batch, tgt_len)`).
    Returns:
        `torch.Tensor` of shape `(batch,)`.
    """
    log_probs = logits.float().log_softmax(-1)
    picked = log_probs.gather(-1, target_ids[..., None])[..., 0]  # (batch, tgt_len)
    return (picked * target_ids.ne(pad_token_id)).sum(-1)


@torch.no_grad()
def ar_rescore(
    ar_model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    candidates: torch.Tensor,
    pad_token_id: int,
    eos_token_id: int,
    decoder_start_token_id: int,
    alpha: float = 0.6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score every candidate with a seq2seq AR in one teacher-forced pass (each source encoded once).

    Args:
        ar_model: any `AutoModelForSeq2SeqLM` sharing the NAT's tokenizer.
        input_ids / attention_mask (`(batch, src_len)`): sources.
        candidates (`torch.LongTensor` of shape `(batch, m, tgt_len)`): EOS-terminated, PAD-padded.
        alpha: GNMT length-penalty exponent (paper: 0.6 En-De, 1.4 De-En).
    Returns:
        log_probs (`(batch, m)`): summed AR log-probabilities; normalised (`(batch, m)`): divided by the penalty.
    """
    batch, m, tgt_len = candidates.shape
    if attention_mask is None:
        attention_mask = input_ids.ne(pad_token_id).long()
    encoder = ar_model.get_encoder()
    states = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    flat = candidates.reshape(batch * m, tgt_len)  # (batch * m, tgt_len)
    decoder_input_ids = torch.cat([flat.new_full((batch * m, 1), decoder_start_token_id), flat[:, :-1]], dim=1)
    outputs = ar_model(
        encoder_outputs=(states.repeat_interleave(m, dim=0),),
        attention_mask=attention_mask.repeat_interleave(m, dim=0),
        decoder_input_ids=decoder_input_ids,
        decoder_attention_mask=flat.ne(pad_token_id).long(),
        use_cache=False,
    )
    log_probs = sequence_log_prob_from_logits(outputs.logits, flat, pad_token_id).view(batch, m)
    lengths = candidates.ne(pad_token_id).sum(-1)  # (batch, m), EOS included
    return log_probs, log_probs / gnmt_length_penalty(lengths, alpha)
