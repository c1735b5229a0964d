"""Where a NAT's BLEU gap to its AR comes from, measured on held-out pairs: the length it predicts, the choice among
its length candidates, or the tokens it fills in.

Rows (`diagnose`), all with ODD on one set of sentences:
- the AR with beam search (the reference point);
- the NAT at its predicted length (plain `generate()`);
- the NAT at the reference's length (an oracle length: what a perfect length head would give);
- the NAT with its length beam, rescored by the AR (`generate(length_beam=..., rescorer=ar)`);
- the same length candidates, each sentence's best by sentence BLEU against its reference (an oracle choice: what a
  perfect rescorer would give).
If the oracle rows sit close to the plain ones, neither the length head nor the rescorer is the limit: the tokens
the NAT fills in are. Oracle rows read the references, so they are diagnostics, never results.

`estep_by_n` measures what the number of candidates N buys the E-step, on a sample of training pairs: for each N,
the AR's N-best beam (the candidate phase `EMTrainer` runs), the NAT's choice among them (its selection phase), and
how the choice moves the NAT log-likelihood of its targets (the quantity the E-step maximises; its negative mean is
the CM of those targets) and their BLEU against the human references.
"""

import time
from collections import defaultdict

import torch

from em_nat.evaluation import BEAM_SIZE, LENGTH_BEAM, capped_ar_fn, make_batches
from em_nat.metrics import corpus_bleu
from em_nat.modeling.decoding import length_candidates


def reference_lengths(tokenizer, references: list[str], max_length: int) -> list[int]:
    """The NAT length (EOS included) of each reference under `tokenizer`, capped at `max_length` (the NAT's longest
    output): the length an oracle length head would predict."""
    eos = tokenizer.eos_token_id
    rows = tokenizer(text_target=references)["input_ids"]
    return [min(max_length, len(row) + (0 if row and row[-1] == eos else 1)) for row in rows]


@torch.inference_mode()
def decode_at_lengths(nat, ids: list[list[int]], lengths: list[int], batch_size: int = 64) -> list[list[int]]:
    """NAT + ODD output of every source at the given length (EOS included), one `generate()` call per batch of
    sources that share a length (`min_length = max_length = L`). Returns the ids per source, EOS-terminated."""
    if len(ids) != len(lengths):
        raise ValueError(f"{len(ids)} sources but {len(lengths)} lengths.")
    by_length = defaultdict(list)
    for index, length in enumerate(lengths):
        by_length[int(length)].append(index)
    outputs = [None] * len(ids)
    pad = nat.config.pad_token_id
    for length, indices in sorted(by_length.items()):
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            (batch,) = make_batches([ids[i] for i in chunk], len(chunk), pad)
            out = nat.generate(**batch, odd=True, length_beam=1, min_length=length, max_length=length)
            for i, row in zip(chunk, out.tolist()):
                outputs[i] = [t for t in row if t != pad]
    return outputs


def sentence_oracle(candidates: list[list[str]], references: list[str]) -> list[int]:
    """For each sentence, the index of its candidate with the highest sentence BLEU against its reference (the first
    among equals)."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(effective_order=True)
    picks = []
    for hyps, ref in zip(candidates, references):
        scores = [bleu.sentence_score(hyp, [ref]).score for hyp in hyps]
        picks.append(max(range(len(hyps)), key=scores.__getitem__))
    return picks


def length_report(predicted: list[int], reference: list[int], window: list[list[int]]) -> dict:
    """How well the length head does: share of exact predictions, mean absolute error (tokens), and the share of
    references whose length is among the length candidates."""
    n = len(predicted)
    return {
        "exact": sum(p == r for p, r in zip(predicted, reference)) / n,
        "mean_abs_error": sum(abs(p - r) for p, r in zip(predicted, reference)) / n,
        "in_window": sum(r in w for r, w in zip(reference, window)) / n,
    }


@torch.inference_mode()
def diagnose(
    nat,
    ar,
    tokenizer,
    sources: list[str],
    references: list[str],
    length_beam: int = LENGTH_BEAM,
    rescore_alpha: float = 0.6,
    batch_size: int = 64,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
) -> dict:
    """The rows of the module docstring: `{"rows": [{"name", "bleu"}...], "lengths": length_report(...),
    "signature": sacreBLEU's}`. The AR decodes with beam 5 under the run's length cap (`max_len_a`, `max_len_b`)."""
    if len(sources) != len(references) or not sources:
        raise ValueError(f"{len(sources)} sources and {len(references)} references: give as many of each, at least 1.")
    longest = nat.config.max_position_embeddings
    ids = tokenizer(sources, truncation=True, max_length=longest)["input_ids"]
    batches = make_batches(ids, batch_size, tokenizer.pad_token_id)

    def text(rows):
        return tokenizer.batch_decode(rows, skip_special_tokens=True)

    ar_fn = capped_ar_fn("ar_beam5", ar, longest, max_len_a, max_len_b)
    ar_out = [row for batch in batches for row in ar_fn(batch).tolist()]
    predicted, plain, rescored = [], [], []
    for batch in batches:
        out = nat.generate(**batch, odd=True, length_beam=1, return_dict_in_generate=True)
        predicted += out.lengths.tolist()
        plain += out.sequences.tolist()
        rescored += nat.generate(
            **batch, odd=True, length_beam=length_beam, rescorer=ar, rescore_alpha=rescore_alpha
        ).tolist()
    gold = reference_lengths(tokenizer, references, longest)
    at_gold = decode_at_lengths(nat, ids, gold, batch_size)
    shortest, last = nat._length_range(nat._decoding_config())  # the range generate() draws candidates from
    window = length_candidates(torch.tensor(predicted), length_beam, shortest, last).tolist()  # (n, beam)
    per_offset = [decode_at_lengths(nat, ids, [w[j] for w in window], batch_size) for j in range(length_beam)]
    candidates = [[text([per_offset[j][i]])[0] for j in range(length_beam)] for i in range(len(ids))]
    picks = sentence_oracle(candidates, references)
    rows = [
        (f"AR beam {BEAM_SIZE}", text(ar_out)),
        ("NAT + ODD, predicted length", text(plain)),
        ("NAT + ODD, reference length (oracle)", text(at_gold)),
        (f"NAT + LB {length_beam} + ODD + AR rescoring", text(rescored)),
        (
            f"NAT + LB {length_beam} + ODD, best candidate by sentence BLEU (oracle)",
            [hyps[pick] for hyps, pick in zip(candidates, picks)],
        ),
    ]
    scored = [{"name": name, "bleu": corpus_bleu(hyps, references)} for name, hyps in rows]
    return {
        "sentences": len(sources),
        "length_beam": length_beam,
        "rows": [{"name": r["name"], "bleu": r["bleu"]["score"]} for r in scored],
        "signature": scored[0]["bleu"]["signature"],
        "lengths": length_report(predicted, gold, window),
    }


@torch.inference_mode()
def estep_by_n(
    ar,
    nat,
    tokenizer,
    sources: list[str],
    references: list[str],
    num_candidates: tuple[int, ...] = (1, 4, 8, 20),
    backend: str = "ctranslate2",
    compute_type: str = "int8",
    max_sentences: int = 64,
    max_new_tokens: int = 96,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
) -> dict:
    """For each N (beam = N): the AR's N-best candidates of every source and the NAT's selection among them, with the
    same functions and settings `EMTrainer` uses. Rows: N; the share of sources whose selection is not the AR's
    1-best; the mean NAT log-likelihood (per sentence, length term included) of the 1-best and of the selection; the
    CM of the selected targets (minus the latter); corpus BLEU of the 1-best and of the selection against
    `references`; the mean selected length (tokens, EOS included); the seconds of each phase."""
    from accelerate import Accelerator

    from em_nat.metrics import corpus_multimodality
    from em_nat.trainers.candidates import CandidateSettings, generate_candidates, score_candidates, select_targets

    if len(sources) != len(references) or not sources:
        raise ValueError(f"{len(sources)} sources and {len(references)} references: give as many of each, at least 1.")
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    ids = tokenizer(sources, truncation=True, max_length=nat.config.max_position_embeddings)["input_ids"]
    rows = []
    for n in num_candidates:
        settings = CandidateSettings(
            num_candidates=n,
            beam_size=n,
            max_new_tokens=max_new_tokens,
            max_sentences=max_sentences,
            max_len_a=max_len_a,
            max_len_b=max_len_b,
            backend=backend,
            compute_type=compute_type,
        )
        started = time.perf_counter()
        candidates, _ = generate_candidates(ar, tokenizer, ids, settings, accelerator)
        generated = time.perf_counter()
        scores = score_candidates(nat, ids, candidates, accelerator, tokenizer.pad_token_id, max_sentences)
        scored = time.perf_counter()
        chosen = select_targets(scores)
        selected = [c[k] for c, k in zip(candidates, chosen)]
        best_scores = [row[0] for row in scores]
        selected_scores = [row[k] for row, k in zip(scores, chosen)]
        rows.append(
            {
                "num_candidates": n,
                "differs_from_1best": sum(k != 0 for k in chosen) / len(chosen),
                "nat_loglik_1best": sum(best_scores) / len(best_scores),
                "nat_loglik_selected": sum(selected_scores) / len(selected_scores),
                "cm_selected": corpus_multimodality(selected_scores),
                "bleu_1best": corpus_bleu(_text(tokenizer, [c[0] for c in candidates]), references)["score"],
                "bleu_selected": corpus_bleu(_text(tokenizer, selected), references)["score"],
                "mean_length_selected": sum(len(s) for s in selected) / len(selected),
                "candidate_seconds": round(generated - started, 2),
                "selection_seconds": round(scored - generated, 2),
            }
        )
    return {"sentences": len(sources), "backend": f"{backend} {compute_type}", "rows": rows}


def _text(tokenizer, rows: list[list[int]]) -> list[str]:
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def render_estep(result: dict, train_size: int | None = None) -> str:
    """`estep_by_n`'s rows as a Markdown table; with `train_size`, the minutes both phases would take over that many
    sources at the measured rate."""
    head = "| N (beam) | selection != AR 1-best | NAT log-lik, 1-best | NAT log-lik, selected | CM selected |"
    head += " BLEU 1-best | BLEU selected | mean length selected | seconds (candidates + selection) |"
    if train_size:
        head += f" minutes for {train_size:,} sources |"
    lines = [head, "|" + "---|" * head.count(" |")]
    for r in result["rows"]:
        seconds = r["candidate_seconds"] + r["selection_seconds"]
        line = (
            f"| {r['num_candidates']} | {100 * r['differs_from_1best']:.1f}% | {r['nat_loglik_1best']:.3f} | "
            f"{r['nat_loglik_selected']:.3f} | {r['cm_selected']:.3f} | {r['bleu_1best']:.2f} | "
            f"{r['bleu_selected']:.2f} | {r['mean_length_selected']:.2f} | {r['candidate_seconds']:.1f} + "
            f"{r['selection_seconds']:.1f} |"
        )
        if train_size:
            line += f" {seconds * train_size / result['sentences'] / 60:.1f} |"
        lines.append(line)
    lines.append("")
    lines.append(
        f"{result['sentences']} training pairs; candidates by {result['backend']}. Log-likelihoods: mean over sources "
        "of the NAT's log p(target | source), length term included; CM = minus the selected mean; BLEU against the "
        "human references of those pairs."
    )
    return "\n".join(lines)


def render(result: dict) -> str:
    """The diagnosis as a Markdown table (BLEU and its ratio to the AR row) and the length head's figures."""
    ar_bleu = result["rows"][0]["bleu"]
    lines = ["| decoding | BLEU | vs AR |", "|---|---|---|"]
    for row in result["rows"]:
        ratio = row["bleu"] / ar_bleu if ar_bleu else float("nan")
        lines.append(f"| {row['name']} | {row['bleu']:.2f} | {ratio:.3f} |")
    lengths = result["lengths"]
    lines += [
        "",
        f"Sentences: {result['sentences']}. Length head: exact {100 * lengths['exact']:.1f}%, mean absolute error "
        f"{lengths['mean_abs_error']:.2f} tokens, reference length among the {result['length_beam']} candidates "
        f"{100 * lengths['in_window']:.1f}%.",
        f"sacreBLEU signature: {result['signature']}",
    ]
    return "\n".join(lines)
