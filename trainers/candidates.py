"""The E-step side of EM (PAPER.md, "The EM loop"): AR beam candidates and the NAT's selection among them.

Candidates are generated in length-sorted batches sharded over processes and gathered, so every source is covered
exactly once whatever the number of processes. Selection keeps, for each source, the candidate with the highest
NAT total log-likelihood (length term included, not length-normalised); ties go to the better beam rank.
"""

import math
import os
import tempfile
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm


def cut_batches(order: list[int], sizes, max_tokens: int | None = None, max_sentences: int | None = None):
    """The one batching rule: consecutive indices of `order` grouped into batches of at most `max_sentences` whose
    padded size (batch size x longest `sizes[i]`) stays within `max_tokens` (either limit may be None)."""
    batches, batch, longest = [], [], 0
    for index in order:
        longest_if_added = max(longest, sizes[index])
        too_many = max_sentences is not None and len(batch) >= max_sentences
        too_big = max_tokens is not None and longest_if_added * (len(batch) + 1) > max_tokens
        if batch and (too_many or too_big):
            batches.append(batch)
            batch, longest_if_added = [], sizes[index]
        batch.append(index)
        longest = longest_if_added
    if batch:
        batches.append(batch)
    return batches


def length_sorted_batches(lengths: list[int], max_sentences: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most `max_sentences` (decoding and scoring)."""
    return cut_batches(sorted(range(len(lengths)), key=lambda i: lengths[i]), lengths, max_sentences=max_sentences)


def pad_rows(rows: list[list[int]], value: int, width: int | None = None) -> torch.Tensor:
    """The one padding helper: id lists as a (len(rows), width) long tensor, right-padded with `value`; `width`
    defaults to the longest row."""
    width = max(map(len, rows), default=0) if width is None else width
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def pad_sources(sources: list[list[int]], indices: list[int], pad_token_id: int, device):
    """(batch, src_len) input_ids and attention_mask for `indices`."""
    input_ids = pad_rows([sources[i] for i in indices], pad_token_id)
    return input_ids.to(device), input_ids.ne(pad_token_id).long().to(device)


def map_sharded(fn, batches: list[list[int]], accelerator: Accelerator, desc: str) -> dict:
    """Run `fn(indices) -> list[(index, result)]` on this process's share of `batches`; gather every process's
    results into one `{index: result}` dict, checking that no index came back twice."""
    mine = batches[accelerator.process_index :: accelerator.num_processes]
    results = []
    for indices in tqdm(mine, desc=desc, disable=not accelerator.is_local_main_process):
        results.extend(fn(indices))
    gathered = gather_object(results) if accelerator.num_processes > 1 else results
    by_index = dict(gathered)
    if len(by_index) != len(gathered):
        raise RuntimeError(f"{desc}: some sources were processed twice.")
    return by_index


def length_cap(longest_source: int, max_new_tokens: int, max_len_a: float = 0.0, max_len_b: int = 0) -> int:
    """New-token limit of an AR batch: `max_len_a * longest_source + max_len_b` (fairseq's --max-len-a/b), never
    above `max_new_tokens`; `max_len_a=0` keeps `max_new_tokens`. A weak AR can loop on a long source until the
    limit, and one such hypothesis keeps its whole batch decoding, so a cap tied to the source saves most of the
    time spent on long batches."""
    if max_len_a <= 0:
        return max_new_tokens
    return max(1, min(max_new_tokens, math.ceil(max_len_a * longest_source) + max_len_b))


def strip_generated(ids: torch.Tensor, pad_token_id: int, eos_token_id: int, start_token_id: int | None) -> list[int]:
    """AR output row -> target ids: drop the decoder start token, cut after the first EOS, drop padding."""
    tokens = ids.tolist()
    if start_token_id is not None and tokens and tokens[0] == start_token_id:
        tokens = tokens[1:]
    if eos_token_id in tokens:
        tokens = tokens[: tokens.index(eos_token_id) + 1]
    else:
        tokens = [t for t in tokens if t != pad_token_id] + [eos_token_id]
    return tokens


CANDIDATE_BACKENDS = ("transformers", "ctranslate2")


@dataclass(frozen=True)
class CandidateSettings:
    """How the E-step's AR candidates are generated.

    Args:
        num_candidates: N hypotheses kept per source; `beam_size` must be >= N.
        beam_size: beam width.
        max_new_tokens: hard limit on generated tokens (EOS included).
        max_sentences: sources per batch.
        max_len_a, max_len_b: per-batch length cap (`length_cap`).
        backend: "transformers" (`generate()`) or "ctranslate2" (the AR converted with `em_nat.export`, decoded by
            CTranslate2: float32 gives `generate()`'s beams, int8 is several times faster on CPU).
        compute_type: CTranslate2 weight type ("int8", "float32", ...); ignored by "transformers".
    """

    num_candidates: int
    beam_size: int
    max_new_tokens: int
    max_sentences: int = 64
    max_len_a: float = 0.0
    max_len_b: int = 0
    backend: str = "transformers"
    compute_type: str = "int8"

    def __post_init__(self):
        if self.beam_size < self.num_candidates:
            raise ValueError(f"beam_size ({self.beam_size}) must be >= num_candidates ({self.num_candidates}).")
        if self.backend not in CANDIDATE_BACKENDS:
            raise ValueError(f"candidate backend must be one of {CANDIDATE_BACKENDS}, got {self.backend!r}.")


def _greedy_scores(ar_model, out, eos_token_id):
    """Beam search's sequence score for greedy outputs (beam 1 has none): the mean log-probability of the generated
    tokens up to the first EOS included (length penalty 1)."""
    steps = ar_model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)  # (batch, steps)
    generated = out.sequences[:, -steps.shape[1] :]
    is_eos = generated.eq(eos_token_id).long()
    kept = (is_eos.cumsum(-1) - is_eos).eq(0)  # up to the first EOS, included
    return steps.masked_fill(~kept, 0.0).sum(-1) / kept.sum(-1).clamp(min=1)  # -inf after EOS (forced EOS) is dropped


def _transformers_beams(ar_model, settings: CandidateSettings, pad_token_id, eos_token_id, device):
    """`run(batch of (index, source ids)) -> [(index, (N candidates, N scores))]` with `generate()`."""
    ar_model.eval()
    start = getattr(ar_model.config, "decoder_start_token_id", None)
    n = settings.num_candidates

    def run(indices, sources):
        input_ids, attention_mask = pad_sources(sources, indices, pad_token_id, device)
        out = ar_model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            num_beams=settings.beam_size,
            num_return_sequences=n,
            max_new_tokens=length_cap(
                input_ids.shape[1], settings.max_new_tokens, settings.max_len_a, settings.max_len_b
            ),
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
        rows = out.sequences.view(len(indices), n, -1).cpu()  # (batch, N, out_len)
        sequence_scores = (
            out.sequences_scores if settings.beam_size > 1 else _greedy_scores(ar_model, out, eos_token_id)
        )
        scores = sequence_scores.view(len(indices), n).float().cpu().tolist()
        return [
            (i, ([strip_generated(rows[r, k], pad_token_id, eos_token_id, start) for k in range(n)], scores[r]))
            for r, i in enumerate(indices)
        ]

    return run


def _ctranslate2_beams(ar_model, tokenizer, settings: CandidateSettings, device, scratch: str):
    """As `_transformers_beams`, decoding with CTranslate2: the AR is saved and converted into `scratch` once."""
    from em_nat.export import convert_to_ct2, load_ct2_translator

    ar_dir, ct2_dir = os.path.join(scratch, "ar"), os.path.join(scratch, "ct2")
    ar_model.save_pretrained(ar_dir)
    tokenizer.save_pretrained(ar_dir)
    convert_to_ct2(ar_dir, ct2_dir)
    translator = load_ct2_translator(
        ct2_dir,
        device="cuda" if device.type == "cuda" else "cpu",
        device_index=device.index or 0,
        compute_type=settings.compute_type,
        intra_threads=torch.get_num_threads(),
    )
    length_penalty = getattr(ar_model.generation_config, "length_penalty", None)
    length_penalty = 1.0 if length_penalty is None else float(length_penalty)  # generate()'s default
    eos = tokenizer.eos_token_id
    # generate() with forced_eos_token_id (Marian's default) spends the last allowed step on EOS; CTranslate2 has no
    # such rule, so it stops one step earlier and the EOS is appended below: the same lengths either way
    forced_eos = getattr(ar_model.generation_config, "forced_eos_token_id", None) == eos

    def run(indices, sources):
        tokens = [tokenizer.convert_ids_to_tokens(sources[i]) for i in indices]
        cap = length_cap(max(map(len, tokens)), settings.max_new_tokens, settings.max_len_a, settings.max_len_b)
        results = translator.translate_batch(
            tokens,
            beam_size=settings.beam_size,
            num_hypotheses=settings.num_candidates,
            length_penalty=length_penalty,
            max_decoding_length=max(1, cap - 1) if forced_eos else cap,
            return_scores=True,
            return_end_token=True,
        )
        out = []
        for i, result in zip(indices, results):
            ids = [tokenizer.convert_tokens_to_ids(hypothesis) for hypothesis in result.hypotheses]
            ids = [row if row and row[-1] == eos else row + [eos] for row in ids]  # capped: EOS added, as generate's
            out.append((i, (ids, [float(score) for score in result.scores])))
        return out

    return run


@torch.no_grad()
def generate_candidates(
    ar_model, tokenizer, sources: list[list[int]], settings: CandidateSettings, accelerator: Accelerator
) -> tuple[list[list[list[int]]], list[list[float]]]:
    """Top-N AR beam hypotheses for every source, sharded over processes and gathered.

    Args:
        ar_model: an unwrapped `AutoModelForSeq2SeqLM`.
        tokenizer: its tokenizer (pad and EOS ids; token strings for CTranslate2).
        sources: tokenized sources (EOS-terminated id lists).
        settings: [`CandidateSettings`].
    Returns:
        `(candidates, scores)`: per source, N target id lists (EOS-terminated, best first) and their beam scores.
    """
    with tempfile.TemporaryDirectory(prefix="em-nat-candidates-") as scratch:
        if settings.backend == "ctranslate2":
            run = _ctranslate2_beams(ar_model, tokenizer, settings, accelerator.device, scratch)
        else:
            run = _transformers_beams(
                ar_model, settings, tokenizer.pad_token_id, tokenizer.eos_token_id, accelerator.device
            )
        batches = length_sorted_batches([len(s) for s in sources], settings.max_sentences)
        by_index = map_sharded(lambda indices: run(indices, sources), batches, accelerator, "AR candidates")
    if sorted(by_index) != list(range(len(sources))):
        raise RuntimeError(f"Candidate generation covered {len(by_index)} of {len(sources)} sources.")
    return [by_index[i][0] for i in range(len(sources))], [by_index[i][1] for i in range(len(sources))]


@torch.no_grad()
def translate(
    model,
    sources: list[list[int]],
    accelerator: Accelerator,
    pad_token_id: int,
    eos_token_id: int,
    max_sentences: int = 64,
    max_len_a: float = 0.0,
    max_len_b: int = 0,
    **generate_kwargs,
) -> list[list[int]]:
    """Generate one output per source with `model.generate(**generate_kwargs)` (AR or NAT), sharded and gathered.
    When `max_new_tokens` is given, each batch is capped by `length_cap(longest source, ...)`.

    Returns:
        per source, the output ids (EOS-terminated, no start token, no padding).
    """
    model.eval()
    start = getattr(model.config, "decoder_start_token_id", None)

    def run(indices):
        input_ids, attention_mask = pad_sources(sources, indices, pad_token_id, accelerator.device)
        kwargs = dict(generate_kwargs)
        if "max_new_tokens" in kwargs:
            kwargs["max_new_tokens"] = length_cap(input_ids.shape[1], kwargs["max_new_tokens"], max_len_a, max_len_b)
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs).cpu()
        return [(i, strip_generated(out[r], pad_token_id, eos_token_id, start)) for r, i in enumerate(indices)]

    batches = length_sorted_batches([len(s) for s in sources], max_sentences)
    by_index = map_sharded(run, batches, accelerator, "translate")
    return [by_index[i] for i in range(len(sources))]


@torch.no_grad()
def score_candidates(
    nat_model,
    sources: list[list[int]],
    candidates: list[list[list[int]]],
    accelerator: Accelerator,
    pad_token_id: int,
    max_sentences: int = 32,
) -> list[list[float]]:
    """NAT total log-likelihood of every candidate of every source, shape [num_sources][N].

    Candidates longer than the NAT can decode score -inf (they can never be selected).
    """
    nat_model.eval()
    limit = nat_model.config.max_position_embeddings

    def run(indices):
        input_ids, attention_mask = pad_sources(sources, indices, pad_token_id, accelerator.device)
        n = max(len(candidates[i]) for i in indices)
        longest = min(limit, max(len(c) for i in indices for c in candidates[i]))
        labels = torch.full((len(indices), n, longest), pad_token_id, dtype=torch.long)
        labels[:, :, 0] = nat_model.config.eos_token_id  # placeholder for missing or too long candidates
        usable = torch.zeros(len(indices), n, dtype=torch.bool)
        for row, i in enumerate(indices):
            for k, cand in enumerate(candidates[i]):
                if len(cand) <= limit:
                    labels[row, k, : len(cand)] = torch.tensor(cand)
                    usable[row, k] = True
        scores = nat_model.score_targets(input_ids, attention_mask, labels.to(accelerator.device)).float().cpu()
        scores = scores.masked_fill(~usable, float("-inf"))  # (batch, N)
        return [(i, scores[row, : len(candidates[i])].tolist()) for row, i in enumerate(indices)]

    batches = length_sorted_batches([len(s) for s in sources], max_sentences)
    by_index = map_sharded(run, batches, accelerator, "NAT scores")
    return [by_index[i] for i in range(len(sources))]


def select_targets(scores: list[list[float]]) -> list[int]:
    """Per source, the index of the best-scoring candidate; ties go to the better (lower) beam rank."""
    return [max(range(len(row)), key=lambda k: (row[k], -k)) for row in scores]
