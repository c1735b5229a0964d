"""NAT decoding as pure, batched tensor functions (PAPER.md, "Decoding").

1. `length_candidates`: the length beam, L-4 .. L+4 for m = 9 (or L alone), kept inside the allowed range.
2. `top_k_per_position`: the top-k tokens of every position after the one parallel decoder pass.
3. `odd_decode`: ODD, optimal de-duplicated decoding, a Viterbi pass over those k tokens that maximises the summed
   log-probability subject to no two adjacent tokens being equal. The output keeps its length.
4. `ar_rescore` + `select_best`: the AR teacher scores every candidate in one teacher-forced pass; scores are divided
   by the GNMT length penalty ((5 + L) / 6) ** alpha (`gnmt_length_penalty`) and the best candidate is kept.

Every function works on whole batches (CPU or CUDA) without Python loops over examples; only the Viterbi recursion
loops over time steps. This file imports only torch: it is copied next to saved weights for trust_remote_code users.
"""

import torch


def top_k_per_position(log_probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best tokens of every position, best first.

    Args:
        log_probs (`torch.Tensor` of shape `(batch, tgt_len, vocab)`):
            Log-probabilities or raw logits (any leading dimensions work; the top-k is over the last one).
        k (`int`):
            Candidates per position, at most `vocab`.

    Returns:
        `tuple(torch.Tensor, torch.LongTensor)`: `values` and `indices`, both of shape `(batch, tgt_len, k)`, sorted
        by decreasing value. The ids of one position are distinct.
    """
    return log_probs.topk(k, dim=-1)


def odd_decode(
    topk_log_probs: torch.Tensor, topk_ids: torch.Tensor, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """ODD, optimal de-duplicated decoding (PAPER.md, "Decoding", step 3).

    Viterbi over the k candidates of each position: the path maximising the summed score subject to no two adjacent
    output tokens being equal. A would-be duplicate becomes that position's next-best token, never a deletion, so
    the output keeps its length. Cost O(tgt_len * k^2), vectorised over the batch.

    Rows whose argmax path already has no equal neighbours are returned as the argmax (it is then the constrained
    optimum too); only the other rows run the Viterbi pass.

    Scores may be log-probabilities or raw logits: a per-position constant (the log-softmax normaliser) changes
    neither the best path nor, hence, the tokens; the returned scores are then sums of the given values.

    Ties are deterministic: among equally good paths, the earliest position where they differ takes the lower
    candidate rank. Candidates scored `-inf` are allowed: the path stays free of equal neighbours, its score `-inf`.

    Args:
        topk_log_probs (`torch.Tensor` of shape `(batch, tgt_len, k)`):
            Candidate scores, e.g. the values of [`top_k_per_position`].
        topk_ids (`torch.LongTensor` of shape `(batch, tgt_len, k)`):
            Candidate token ids; the k ids of one position must be distinct (as `topk` gives them).
        lengths (`torch.LongTensor` of shape `(batch,)`, *optional*):
            Valid positions per row; positions `>= length` are padding and are ignored, so a row gives the same
            result padded or not. Defaults to `tgt_len` for every row.

    Returns:
        `tuple(torch.LongTensor, torch.Tensor)`:
            - tokens of shape `(batch, tgt_len)`: the chosen ids (unspecified at padding positions);
            - scores of shape `(batch,)`: the chosen path's summed score over valid positions.

    Raises:
        `ValueError`: if `k < 2`. With a single candidate per position two equal adjacent argmaxes leave no valid
        path; decode with plain argmax (`topk_ids[..., 0]`) instead.
    """
    batch, tgt_len, k = topk_log_probs.shape
    if topk_ids.shape != topk_log_probs.shape:
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)} and scores {tuple(topk_log_probs.shape)} differ.")
    if k < 2:
        raise ValueError(
            f"ODD needs k >= 2 candidates per position, got k={k}: with one candidate two equal adjacent tokens have "
            "no alternative. Use argmax decoding (odd=False) or a larger top-k."
        )
    if tgt_len == 0:
        return topk_ids.new_zeros(batch, 0), topk_log_probs.new_zeros(batch)
    if lengths is None:
        valid = torch.ones(batch, tgt_len, dtype=torch.bool, device=topk_ids.device)  # (batch, tgt_len)
    else:
        positions = torch.arange(tgt_len, device=topk_ids.device)
        valid = positions[None, :] < lengths.to(topk_ids.device)[:, None]  # (batch, tgt_len)
    tokens = topk_ids[..., 0].clone()  # (batch, tgt_len), the argmax path
    scores = torch.where(valid, topk_log_probs[..., 0], 0).sum(-1)  # (batch,)
    repeats = ((tokens[:, 1:] == tokens[:, :-1]) & valid[:, 1:]).any(-1)  # (batch,)
    if bool(repeats.any()):
        rows = repeats.nonzero()[:, 0]  # (n,)
        if rows.numel() == batch:  # skip the gather/scatter copies, e.g. at batch size 1
            return _viterbi(topk_log_probs, topk_ids, valid)
        tokens[rows], scores[rows] = _viterbi(topk_log_probs[rows], topk_ids[rows], valid[rows])
    return tokens, scores


def _viterbi(
    topk_log_probs: torch.Tensor, topk_ids: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ODD Viterbi pass over `(batch, tgt_len, k)` candidates; `valid` `(batch, tgt_len)` marks real positions.

    The recursion runs from the last position to the first and the path is read off from the front, so among equally
    good paths the earliest position with a difference takes the lower-ranked candidate.
    """
    batch, tgt_len, k = topk_log_probs.shape
    work_dtype = torch.promote_types(topk_log_probs.dtype, torch.float32)
    # A finite floor for -inf candidates: every candidate then keeps a finite best continuation that avoids its equal
    # neighbour (k >= 2 distinct ids), so the max below never settles on a clash; tgt_len floors stay finite.
    floor = torch.finfo(work_dtype).min / (4 * tgt_len)
    gain = topk_log_probs.to(work_dtype).clamp(min=floor)  # (batch, tgt_len, k)
    gain = torch.where(valid[..., None], gain, 0)  # padding adds nothing
    # transition[b, t, i, j]: gain of candidate j at position t+1 after candidate i at position t; -inf on a repeat
    # (padding positions have no constraint)
    clash = (topk_ids[:, :-1, :, None] == topk_ids[:, 1:, None, :]) & valid[:, 1:, None, None]
    transition = torch.where(clash, float("-inf"), gain[:, 1:, None, :])  # (batch, tgt_len-1, k, k)
    suffix = gain.new_zeros(batch, k)  # (batch, k): best gain after position t given candidate i there
    pointers = []
    for step in reversed(transition.unbind(1)):  # step: (batch, k, k)
        suffix, pointer = (step + suffix.unsqueeze(1)).max(-1)  # (batch, k); ties -> lower rank
        pointers.append(pointer)
    current = (gain[:, 0] + suffix).argmax(-1, keepdim=True)  # (batch, 1)
    ranks = [current]
    for pointer in reversed(pointers):
        current = pointer.gather(1, current)  # (batch, 1)
        ranks.append(current)
    ranks = torch.cat(ranks, dim=1)[..., None]  # (batch, tgt_len, 1)
    tokens = topk_ids.gather(2, ranks)[..., 0]  # (batch, tgt_len)
    scores = torch.where(valid, topk_log_probs.gather(2, ranks)[..., 0], 0).sum(-1)  # (batch,)
    return tokens, scores


def length_candidates(
    predicted_lengths: torch.Tensor, beam: int, min_length: int = 1, max_length: int | None = None
) -> torch.Tensor:
    """The `beam` target lengths around each predicted length (PAPER.md, "Decoding", step 1).

    The window is L - beam//2 .. L + (beam - 1 - beam//2) (beam 9: L-4 .. L+4). Near the edges it is shifted, not
    clipped, so the lengths stay distinct inside `[min_length, max_length]`: at the short end the window starts at
    `min_length`, at the long end it ends at `max_length`. With `beam=1` the prediction is only clamped.

    Args:
        predicted_lengths (`torch.LongTensor` of shape `(batch,)`):
            Predicted lengths (e.g. the argmax of the length classifier).
        beam (`int`):
            Number of length candidates m, at least 1.
        min_length (`int`, defaults to 1):
            Shortest allowed length.
        max_length (`int`, *optional*):
            Longest allowed length; no upper bound when `None`.

    Returns:
        `torch.LongTensor` of shape `(batch, beam)`: distinct lengths, ascending along the last dimension.

    Raises:
        `ValueError`: if `beam < 1` or `[min_length, max_length]` holds fewer than `beam` lengths.
    """
    if beam < 1:
        raise ValueError(f"The length beam must be >= 1, got {beam}.")
    if max_length is not None and max_length - min_length + 1 < beam:
        raise ValueError(
            f"A length beam of {beam} needs {beam} distinct lengths but only [{min_length}, {max_length}] is allowed;"
            " lower the length beam or raise max_length."
        )
    highest_start = None if max_length is None else max_length - beam + 1
    start = (predicted_lengths.long() - beam // 2).clamp(min_length, highest_start)  # (batch,)
    return start[:, None] + torch.arange(beam, device=predicted_lengths.device)[None, :]  # (batch, beam)


def gnmt_length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """The GNMT length penalty ((5 + L) / 6) ** alpha (Wu et al., 2016).

    Args:
        lengths (`torch.Tensor` of any shape): sequence lengths L.
        alpha (`float`): the exponent; 0 gives 1 everywhere.

    Returns:
        `torch.FloatTensor` of the shape of `lengths`.
    """
    lengths = lengths if lengths.is_floating_point() else lengths.float()
    return ((5.0 + lengths) / 6.0) ** alpha


def select_best(scores: torch.Tensor) -> torch.Tensor:
    """Index of the best candidate of every row.

    Args:
        scores (`torch.Tensor` of shape `(batch, m)`):
            Candidate scores (higher is better), e.g. the length-normalised log-probabilities of [`ar_rescore`].

    Returns:
        `torch.LongTensor` of shape `(batch,)`: the argmax; ties go to the lowest index.
    """
    return scores.argmax(-1)


def _masked_sequence_log_prob(logits: torch.Tensor, target_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(target) where `mask` (batch, tgt_len) is true; masked-out ids may be anything, e.g. -100."""
    log_probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)  # (batch, tgt_len, vocab)
    index = target_ids.masked_fill(~mask, 0)[..., None]  # (batch, tgt_len, 1), in range for gather
    picked = log_probs.gather(-1, index)[..., 0]  # (batch, tgt_len)
    return torch.where(mask, picked, 0).sum(-1)  # where, not a product: -inf * 0 would be nan


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
    """Score every candidate with a seq2seq AR in one teacher-forced pass (PAPER.md, "Decoding", step 4).

    Each source is encoded once; its encoder states are repeated for its m candidates, and all batch * m
    candidates go through the decoder together. The decoder input is the candidate shifted right behind
    `decoder_start_token_id`; a candidate's tokens are scored up to and including its first EOS (or over its
    non-PAD tokens when it has no EOS), so right padding never changes a score (the decoder is causal). The model is
    put in eval mode for the call (dropout off) and restored afterwards.

    Args:
        ar_model ([`PreTrainedModel`]):
            Any `AutoModelForSeq2SeqLM`-like model with `get_encoder()` and `encoder_outputs` / `decoder_input_ids`
            in `forward`, sharing the candidates' vocabulary.
        input_ids (`torch.LongTensor` of shape `(batch, src_len)`):
            Source ids.
        attention_mask (`torch.LongTensor` of shape `(batch, src_len)`, *optional*):
            Source mask; `input_ids != pad_token_id` when `None`.
        candidates (`torch.LongTensor` of shape `(batch, m, tgt_len)`):
            Candidate translations, EOS-terminated and PAD-padded, without a start token.
        pad_token_id / eos_token_id / decoder_start_token_id (`int`):
            The AR's special ids (Marian starts decoding with PAD, BART with EOS).
        alpha (`float`, defaults to 0.6):
            GNMT length-penalty exponent (paper: 0.6 En-De, 1.4 De-En); L counts the scored tokens, EOS included.

    Returns:
        `tuple(torch.Tensor, torch.Tensor)`, both of shape `(batch, m)` and float32 (or wider):
            - log_probs: the summed AR log-probabilities of each candidate;
            - normalised: `log_probs` divided by the GNMT length penalty (pick with `argmax(-1)`).
    """
    batch, m, tgt_len = candidates.shape
    device = getattr(ar_model, "device", candidates.device)
    input_ids = input_ids.to(device)
    attention_mask = input_ids.ne(pad_token_id).long() if attention_mask is None else attention_mask.to(device)
    flat = candidates.reshape(batch * m, tgt_len).to(device)  # (batch * m, tgt_len)

    # Scored positions: up to the first EOS inclusive, else every non-PAD token (works when PAD == EOS too).
    positions = torch.arange(tgt_len, device=device)
    is_eos = flat.eq(eos_token_id)
    first_eos = torch.where(is_eos, positions, tgt_len).min(-1).values  # (batch * m,)
    lengths = torch.where(is_eos.any(-1), first_eos + 1, flat.ne(pad_token_id).sum(-1))  # (batch * m,)
    mask = positions[None, :] < lengths[:, None]  # (batch * m, tgt_len)

    decoder_input_ids = torch.cat([flat.new_full((batch * m, 1), decoder_start_token_id), flat[:, :-1]], dim=1)
    was_training = ar_model.training
    ar_model.eval()
    try:
        encoded = ar_model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        states = encoded[0].repeat_interleave(m, dim=0)  # (batch * m, src_len, d_model)
        # The encoder's own output class when it has one (BaseModelOutput), else the tuple form every HF
        # seq2seq forward also accepts.
        encoder_outputs = (
            type(encoded)(last_hidden_state=states) if hasattr(encoded, "last_hidden_state") else (states,)
        )
        logits = ar_model(
            encoder_outputs=encoder_outputs,
            attention_mask=attention_mask.repeat_interleave(m, dim=0),  # (batch * m, src_len)
            decoder_input_ids=decoder_input_ids,  # (batch * m, tgt_len)
            use_cache=False,
        ).logits  # (batch * m, tgt_len, vocab)
    finally:
        ar_model.train(was_training)
    log_probs = _masked_sequence_log_prob(logits, flat, mask).view(batch, m)  # (batch, m)
    penalty = gnmt_length_penalty(lengths.view(batch, m), alpha)  # (batch, m)
    return log_probs.to(candidates.device), (log_probs / penalty).to(candidates.device)
