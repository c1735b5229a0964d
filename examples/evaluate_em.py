"""Score an EM run on a test set once, after its last round: the results table of the README.

Rows: the round-0 AR (greedy, beam 5) and every round's NAT (raw data, round 1 = KD, later rounds = EM), each with
argmax, ODD, and length beam 9 + ODD + rescoring by the round-0 AR. Columns: sacreBLEU (signature printed), CM of
the round's NAT training targets (from the run's metrics), repeated-token rate of the outputs, and speed-up against
AR beam 5 at batch 1 and batch 128, timed side by side in this run (`benchmark.time_methods`). The AR stops where
it did in training (the run's `max_target_length` and `generation_max_len_a/b` cap).

    python examples/evaluate_em.py --run_dir runs/multi30k-cpu \
        --source ../shared/data/multi30k_en_de/test.en --reference ../shared/data/multi30k_en_de/test.de

`examples/train_em.py --preset multi30k-cpu` runs this itself at the end. Writes `test_results.{md,json}` into
the run folder and prints the table.
"""

import argparse
import json
import os
import re
import tempfile

import torch
from benchmark import generate_fn, machine, make_batches, time_methods  # examples/benchmark.py
from em_nat.trainers.candidates import length_cap
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import em_nat
from em_nat.cli import bounded
from em_nat.metrics import corpus_bleu, repeated_token_rate, structural_ids

NAT_DECODINGS = {"nat_argmax": "argmax", "nat_odd": "ODD", "nat_lb9_odd_rescore": "LB 9 + ODD + AR rescoring"}
AR_DECODINGS = {"ar_greedy": "greedy", "ar_beam5": "beam 5"}
# AR_0 converted to CTranslate2 (em_nat.export), the runtime CPU users deploy; rows only when ctranslate2 is installed
CT2_DECODINGS = {
    "ar_ct2_float32_greedy": ("float32", 1, "CT2 float32 greedy"),
    "ar_ct2_float32_beam5": ("float32", 5, "CT2 float32 beam 5"),
    "ar_ct2_int8_greedy": ("int8", 1, "CT2 int8 greedy"),
    "ar_ct2_int8_beam5": ("int8", 5, "CT2 int8 beam 5"),
}


def round_folders(run_dir: str) -> list[tuple[int, str]]:
    """(round, folder) of every finished round of a run, in order."""
    rounds = []
    for name in os.listdir(run_dir):
        match = re.fullmatch(r"round-(\d+)", name)
        if match and os.path.isfile(os.path.join(run_dir, name, "metrics.json")):
            rounds.append((int(match.group(1)), os.path.join(run_dir, name)))
    if not rounds:
        raise FileNotFoundError(
            f"No finished round (round-<t>/metrics.json) under {run_dir}; train first with examples/train_em.py."
        )
    return sorted(rounds)


def nat_label(round_index: int) -> str:
    return (
        "NAT, raw data"
        if round_index == 0
        else ("NAT, round 1 (KD)" if round_index == 1 else f"NAT, round {round_index} (EM)")
    )


def load_run(run_dir: str):
    """The tokenizer, AR_0 and every round's NAT of a run, with each round's metrics."""
    rounds = round_folders(run_dir)
    first = rounds[0][1]
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(first, "ar"))  # round 0 has no NAT without train_raw_nat
    ar = AutoModelForSeq2SeqLM.from_pretrained(os.path.join(first, "ar")).eval()
    nats, metrics = {}, {}
    for t, folder in rounds:
        with open(os.path.join(folder, "metrics.json")) as handle:
            metrics[t] = json.load(handle)
        if os.path.isdir(os.path.join(folder, "nar")):
            nats[t] = em_nat.NATForConditionalGeneration.from_pretrained(os.path.join(folder, "nar")).eval()
    for nat in nats.values():
        em_nat.trainers.check_models_share_tokenizer(ar, nat, tokenizer)
    return tokenizer, ar, nats, metrics


def capped_ar_fn(method, ar, max_new_tokens: int, max_len_a: float, max_len_b: int):
    """AR decoding with the run's per-batch length cap (`length_cap`), as in training and validation."""

    def fn(batch):
        cap = length_cap(batch["input_ids"].shape[1], max_new_tokens, max_len_a, max_len_b)
        return generate_fn(method, ar, None, {"max_new_tokens": cap}, 0.0)(batch)

    return fn


def method_functions(ar, nats: dict, max_new_tokens: int, alpha: float, max_len_a=0.0, max_len_b=0) -> dict:
    """name -> batch function: AR greedy / beam 5, and per round `r<t>/<decoding>` for the NAT."""
    fns = {m: capped_ar_fn(m, ar, max_new_tokens, max_len_a, max_len_b) for m in AR_DECODINGS}
    for t, nat in nats.items():
        for m in NAT_DECODINGS:
            fns[f"r{t}/{m}"] = generate_fn(m, ar, nat, {}, alpha)
    return fns


def ct2_functions(ar_dir: str, work_dir: str, tokenizer, max_new_tokens: int, max_len_a: float, max_len_b: int):
    """name -> batch function for AR_0 in CTranslate2 (float32 and int8, greedy and beam 5), with the run's length
    cap; {} when ctranslate2 is not installed. One intra-op thread (CT2's best on small CPUs at batch 1; the
    benchmark sweeps the settings). Outputs are id tensors like `generate()`'s, so the rows are scored alike."""
    try:
        from em_nat.export import convert_to_ct2, load_ct2_translator
    except ImportError:
        return {}
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        print("ctranslate2 is not installed: no CT2 rows (pip install 'em-nat[ct2]').")
        return {}
    import torch

    converted = os.path.join(work_dir, "ar-ct2")
    convert_to_ct2(ar_dir, converted, force=True)
    # tokens travel as strings, so the run's tokenizer works whatever the converted vocabulary's order
    translators = {kind: load_ct2_translator(converted, compute_type=kind) for kind in ("float32", "int8")}
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id

    def make(kind, beam):
        def fn(batch):
            rows = [[t for t in row if t != pad] for row in batch["input_ids"].tolist()]
            tokens = [tokenizer.convert_ids_to_tokens(row) for row in rows]
            cap = length_cap(batch["input_ids"].shape[1], max_new_tokens, max_len_a, max_len_b)
            results = translators[kind].translate_batch(tokens, beam_size=beam, max_decoding_length=cap)
            outs = [tokenizer.convert_tokens_to_ids(r.hypotheses[0]) + [eos] for r in results]
            width = max(len(o) for o in outs)
            return torch.tensor([o + [pad] * (width - len(o)) for o in outs])

        return fn

    return {name: make(kind, beam) for name, (kind, beam, _) in CT2_DECODINGS.items()}


def content_ids(rows, special_ids: set) -> list[list[int]]:
    return [[i for i in row if i not in special_ids] for row in rows.tolist()]


def evaluate_run(
    run_dir: str,
    sources: list[str],
    references: list[str],
    batch1_sentences: int = 100,
    batch_size: int = 128,
    alpha: float = 0.6,
    warmup: int = 2,
    ct2: bool = True,
) -> dict:
    """Decode `sources` with every method at `batch_size` (BLEU, repeats, throughput) and the first
    `batch1_sentences` at batch 1 (latency); speed-ups are against AR beam 5 at the same batch size."""
    tokenizer, ar, nats, metrics = load_run(run_dir)
    limit = ar.config.max_position_embeddings
    ids = tokenizer(sources, truncation=True, max_length=limit)["input_ids"]
    settings = metrics[min(metrics)].get("em/settings", {})
    max_len_a, max_len_b = settings.get("generation_max_len_a", 0.0), settings.get("generation_max_len_b", 0)
    max_new = min(limit, settings.get("max_target_length", limit))
    fns = method_functions(ar, nats, max_new, alpha, max_len_a, max_len_b)
    if ct2:
        with tempfile.TemporaryDirectory(prefix="em-nat-eval-") as work_dir:  # translators hold the model in memory
            ar_dir = os.path.join(round_folders(run_dir)[0][1], "ar")
            fns.update(ct2_functions(ar_dir, work_dir, tokenizer, max_new, max_len_a, max_len_b))
    special = set(tokenizer.all_special_ids)
    structural = structural_ids(tokenizer)
    pad = tokenizer.pad_token_id
    big = time_methods(fns, make_batches(ids, batch_size, pad), repeats=1, warmup=warmup)
    small = time_methods(fns, make_batches(ids[:batch1_sentences], 1, pad), repeats=1, warmup=warmup)
    rows = []
    for name, (total, _, outputs) in big.items():
        tokens = [row for out in outputs for row in content_ids(out, special)]
        texts = [text.strip() for text in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        round_index = None if name.startswith("ar") else int(name.split("/")[0][1:])
        method = name.split("/")[-1]
        rows.append(
            {
                "name": name,
                "model": "AR, round 0" if round_index is None else nat_label(round_index),
                "round": round_index,
                "decoding": AR_DECODINGS.get(method) or NAT_DECODINGS.get(method) or CT2_DECODINGS[method][2],
                "bleu": corpus_bleu(texts, references),
                "bleu_lowercase": corpus_bleu(texts, references, lowercase=True),
                "cm_train_targets": None if round_index is None else metrics[round_index].get("em/cm"),
                "repeat_rate": repeated_token_rate([row for out in outputs for row in out.tolist()], structural),
                f"sentences_per_s_batch{batch_size}": len(sources) / total,
                "sentences_per_s_batch1": min(batch1_sentences, len(sources)) / small[name][0],
            }
        )
    for row in rows:
        for key in (f"sentences_per_s_batch{batch_size}", "sentences_per_s_batch1"):
            base = next(r[key] for r in rows if r["name"] == "ar_beam5")
            row["speedup_vs_ar_beam5_" + key.rsplit("_", 1)[1]] = row[key] / base
    return {
        "run_dir": run_dir,
        "test_sentences": len(sources),
        "batch1_sentences": min(batch1_sentences, len(sources)),
        "batch_size": batch_size,
        "rescore_alpha": alpha,
        "machine": machine(),
        "rows": rows,
        "targets": check_targets(rows),
    }


def check_targets(rows) -> dict:
    """The issue's targets: BLEU(last EM NAT, ODD + rescoring) / BLEU(AR beam 5) >= 0.95, without rescoring >= 0.90,
    and EM >= KD >= raw (NAT with ODD)."""
    bleu = {r["name"]: r["bleu"]["score"] for r in rows}
    rounds = sorted({r["round"] for r in rows if r["round"] is not None})
    if not rounds:  # a teacher-only run: no NAT to compare
        return {}
    last, ar = rounds[-1], bleu["ar_beam5"]
    result = {
        "ratio_rescored": bleu[f"r{last}/nat_lb9_odd_rescore"] / ar if ar else float("nan"),
        "ratio_odd": bleu[f"r{last}/nat_odd"] / ar if ar else float("nan"),
    }
    result["ratio_rescored_met"] = result["ratio_rescored"] >= 0.95
    result["ratio_odd_met"] = result["ratio_odd"] >= 0.90
    if len(rounds) >= 3 and rounds[:2] == [0, 1]:
        odd = [bleu[f"r{t}/nat_odd"] for t in rounds]
        result["em_ge_kd_ge_raw"] = max(odd[2:]) >= odd[1] >= odd[0]
    return result


def markdown(result: dict) -> str:
    b = result["batch_size"]
    lines = [
        f"| model | decoding | BLEU | BLEU lowercased | CM of training targets | repeated tokens | speed-up batch 1 | "
        f"speed-up batch {b} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cm = "-" if r["cm_train_targets"] is None else f"{r['cm_train_targets']:.2f}"
        lines.append(
            f"| {r['model']} | {r['decoding']} | {r['bleu']['score']:.2f} | {r['bleu_lowercase']['score']:.2f} | {cm} | {100 * r['repeat_rate']:.1f}% | "
            f"{r['speedup_vs_ar_beam5_batch1']:.2f}x | {r[f'speedup_vs_ar_beam5_batch{b}']:.2f}x |"
        )
    t = result["targets"]
    lines += [
        "",
        f"Test sentences: {result['test_sentences']} (batch 1 timing: the first {result['batch1_sentences']}). "
        f"Machine: {result['machine']}. Rescoring: round-0 AR, GNMT alpha {result['rescore_alpha']}.",
        f"sacreBLEU signature: {result['rows'][0]['bleu']['signature']} (lowercased: "
        f"{result['rows'][0]['bleu_lowercase']['signature']})",
    ]
    if not t:
        return "\n".join(lines)
    lines += [
        "",
        f"BLEU(last NAT, LB 9 + ODD + rescoring) / BLEU(AR beam 5) = {t['ratio_rescored']:.3f} (target 0.95: "
        f"{'met' if t['ratio_rescored_met'] else 'missed'}); with ODD alone {t['ratio_odd']:.3f} (target 0.90: "
        f"{'met' if t['ratio_odd_met'] else 'missed'})"
        + (f"; EM >= KD >= raw (ODD): {'yes' if t['em_ge_kd_ge_raw'] else 'no'}." if "em_ge_kd_ge_raw" in t else "."),
    ]
    return "\n".join(lines)


def read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle]


MAX_LISTED_BLANKS = 10


def read_test_set(source: str, reference: str, drop_empty: bool = False) -> tuple[list[str], list[str]]:
    """The test pairs of two line-aligned files, refusing blank lines: a blank source would be scored as the
    translation of nothing and a blank reference as a sentence with no words, which moves BLEU without a warning.

    Args:
        drop_empty: leave out the pairs with a blank side (and say how many) instead of raising.
    Raises:
        ValueError: the files have different numbers of lines, or a blank line (file and line number named).
    """
    sources, references = read_lines(source), read_lines(reference)
    if len(sources) != len(references):
        raise ValueError(f"{source} has {len(sources)} lines but {reference} has {len(references)}.")
    blank = [
        (path, number)
        for path, lines in ((source, sources), (reference, references))
        for number, line in enumerate(lines, start=1)
        if not line
    ]
    if not blank:
        return sources, references
    if not drop_empty:
        listed = "; ".join(f"{path} line {number}" for path, number in blank[:MAX_LISTED_BLANKS])
        more = f"; and {len(blank) - MAX_LISTED_BLANKS} more" if len(blank) > MAX_LISTED_BLANKS else ""
        raise ValueError(
            f"Blank test line(s) (empty after stripping whitespace): {listed}{more}. A blank line would be scored "
            f"silently. Fix: complete the line, or delete that line number from both {source} and {reference} so "
            "they stay aligned; or pass --drop_empty to score only the pairs with both sides."
        )
    keep = [i for i, (src, ref) in enumerate(zip(sources, references)) if src and ref]
    if not keep:
        raise ValueError(f"Every pair of {source} / {reference} has a blank side; nothing is left to score.")
    print(f"Dropped {len(sources) - len(keep)} of {len(sources)} test pairs with a blank line (--drop_empty).")
    return [sources[i] for i in keep], [references[i] for i in keep]


def write_results(result: dict, run_dir: str) -> str:
    table = markdown(result)
    with open(os.path.join(run_dir, "test_results.json"), "w") as handle:
        json.dump(result, handle, indent=1)
    with open(os.path.join(run_dir, "test_results.md"), "w") as handle:
        handle.write(table + "\n")
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True, help="Output folder of examples/train_em.py.")
    parser.add_argument("--source", required=True, help="Test sources, one per line.")
    parser.add_argument("--reference", required=True, help="Test references, one per line.")
    parser.add_argument("--batch1_sentences", type=bounded(int, 0), default=100, help="Sentences timed at batch 1.")
    parser.add_argument("--batch_size", type=bounded(int, 1), default=128, help="The large batch size.")
    parser.add_argument(
        "--rescore_alpha", type=bounded(float, 0.0), default=0.6, help="GNMT alpha (paper: 0.6 En-De)."
    )
    parser.add_argument("--threads", type=bounded(int, 0), default=0, help="torch threads (0 = torch default).")
    parser.add_argument(
        "--drop_empty",
        action="store_true",
        help="Score only the pairs whose source and reference both have text (default: a blank line is an error).",
    )
    args = parser.parse_args(argv)
    try:  # before any model is loaded
        sources, references = read_test_set(args.source, args.reference, args.drop_empty)
    except ValueError as err:
        parser.error(str(err))
    if args.threads:
        torch.set_num_threads(args.threads)
    result = evaluate_run(
        args.run_dir, sources, references, args.batch1_sentences, args.batch_size, args.rescore_alpha
    )
    print(write_results(result, args.run_dir))


if __name__ == "__main__":
    main()
