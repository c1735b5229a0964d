"""Latency, throughput and quality of NAT decoding against its paired AR, measured side by side in one run.

Methods: AR greedy, AR beam 5, NAT argmax, NAT + ODD, NAT + length beam 9 + ODD + AR rescoring; at batch 1 and a
batch sweep. Warm-up first, then repeats; medians reported; speed-ups are ratios measured in this same run.

    # trained models and a test set (sacreBLEU with signature when references are given)
    python examples/benchmark.py --ar runs/em/round-2/ar --nat runs/em/round-2/nar \
        --source test.en --reference test.de
    # random weights at the size of the speed targets (d_model 256, 3+3 layers, vocab 8000, 18 source tokens,
    # 20 output tokens): speed only
    python examples/benchmark.py --random-weights
    # train tiny models on the embedded synthetic task first, then benchmark them
    python examples/benchmark.py --demo

Writes `--output_json` and `--output_md`; prints the Markdown table.
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch
from transformers import MarianMTModel

import em_nat
from em_nat.metrics import corpus_bleu, repeated_token_rate
from em_nat.models import marian_config_like

METHODS = ("ar_greedy", "ar_beam5", "nat_argmax", "nat_odd", "nat_lb9_odd_rescore")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ar", help="Folder of the AR (AutoModelForSeq2SeqLM) with its tokenizer.")
    parser.add_argument("--nat", help="Folder of the NAT with its tokenizer.")
    parser.add_argument("--source", help="Source sentences, one per line.")
    parser.add_argument(
        "--reference",
        nargs="+",
        help="Reference file(s), one sentence per line; several files = several references "
        "per sentence (an empty line means no reference there). Optional: BLEU.",
    )
    parser.add_argument("--random-weights", action="store_true", help="Random models at the target sizes.")
    parser.add_argument("--demo", action="store_true", help="Train tiny models on the embedded task first.")
    parser.add_argument("--batch-sizes", default="1,8,32,128", help="Comma-separated batch sweep.")
    parser.add_argument("--max-sentences", type=int, default=256, help="Sentences timed per batch size.")
    parser.add_argument("--batch1-sentences", type=int, default=40, help="Sentences timed at batch 1.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed passes over the sentences (median kept).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed batches before timing.")
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma-separated subset of methods.")
    parser.add_argument("--rescore-alpha", type=float, default=0.6, help="GNMT alpha of AR rescoring.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default).")
    parser.add_argument("--device", default=None, help="'cpu' or 'cuda' (default: cuda when available).")
    parser.add_argument("--output_json", default="benchmark.json")
    parser.add_argument("--output_md", default="benchmark.md")
    return parser.parse_args(argv)


def random_models(vocab_size=8000, d_model=256, layers=3, source_len=18, output_len=20, sentences=256, seed=0):
    """Random NAT and Marian of one size; the NAT's length head is biased to predict `output_len` + EOS and the AR
    is forced to emit `output_len` tokens, so both produce outputs of the same length."""
    torch.manual_seed(seed)
    config = em_nat.NATConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model,
        max_position_embeddings=256,
    )
    nat = em_nat.NATForConditionalGeneration(config).eval()
    with torch.no_grad():
        nat.model.length_predictor.bias[output_len + 1] = 1e4
    ar = MarianMTModel(marian_config_like(config)).eval()
    sources = torch.randint(4, vocab_size, (sentences, source_len))
    sources[:, -1] = 2
    ar_kwargs = {"min_new_tokens": output_len, "max_new_tokens": output_len}
    return ar, nat, None, [row.tolist() for row in sources], None, ar_kwargs


def trained_models(args):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.nat)
    nat = em_nat.NATForConditionalGeneration.from_pretrained(args.nat).eval()
    ar = AutoModelForSeq2SeqLM.from_pretrained(args.ar).eval()
    em_nat.trainers.check_models_share_tokenizer(ar, nat, tokenizer)
    with open(args.source, encoding="utf-8") as handle:
        sources = [line.strip() for line in handle]
    references = None
    if args.reference:
        streams = []
        for path in args.reference:
            with open(path, encoding="utf-8") as handle:
                streams.append([line.strip() for line in handle])
        references = [[ref for ref in refs if ref] for refs in zip(*streams)]  # per sentence, its references
    limit = nat.config.max_position_embeddings
    ids = tokenizer(sources, truncation=True, max_length=limit)["input_ids"]
    return ar, nat, tokenizer, ids, references, {"max_new_tokens": limit}


def generate_fn(method, ar, nat, ar_kwargs, alpha):
    if method == "ar_greedy":
        return lambda batch: ar.generate(**batch, num_beams=1, do_sample=False, **ar_kwargs)
    if method == "ar_beam5":
        return lambda batch: ar.generate(**batch, num_beams=5, do_sample=False, **ar_kwargs)
    if method == "nat_argmax":
        return lambda batch: nat.generate(**batch, odd=False, length_beam=1)
    if method == "nat_odd":
        return lambda batch: nat.generate(**batch, odd=True, length_beam=1)
    if method == "nat_lb9_odd_rescore":
        return lambda batch: nat.generate(**batch, odd=True, length_beam=9, rescorer=ar, rescore_alpha=alpha)
    raise ValueError(f"Unknown method {method}; choose from {METHODS}.")


def make_batches(ids, batch_size, pad_token_id, device="cpu"):
    batches = []
    for start in range(0, len(ids), batch_size):
        rows = ids[start : start + batch_size]
        longest = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
        input_ids = input_ids.to(device)
        batches.append({"input_ids": input_ids, "attention_mask": input_ids.ne(pad_token_id).long()})
    return batches


def count_tokens(out, pad_token_id, start_token_id):
    """Output tokens excluding padding and the decoder start token."""
    tokens = out.ne(pad_token_id).sum().item()
    if start_token_id is not None and start_token_id != pad_token_id:
        tokens -= int(out[:, 0].eq(start_token_id).sum())
    return tokens


@torch.inference_mode()
def time_methods(fns: dict, batches, repeats: int, warmup: int) -> dict:
    """Time every method over `batches`, interleaved: each repeat runs all methods back to back, so a drift in the
    machine's speed (shared CPUs) hits all of them alike. Returns per method: median total seconds of one pass,
    median seconds per batch, and the outputs of the last pass."""
    for fn in fns.values():
        for batch in (batches * warmup)[:warmup]:
            fn(batch)
    totals = {name: [] for name in fns}
    per_batch = {name: [] for name in fns}
    outputs = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            outs = []
            start = time.perf_counter()
            for batch in batches:
                t0 = time.perf_counter()
                outs.append(fn(batch))
                if torch.cuda.is_available():
                    torch.cuda.synchronize()  # GPU work is asynchronous: wait for it before reading the clock
                per_batch[name].append(time.perf_counter() - t0)
            totals[name].append(time.perf_counter() - start)
            outputs[name] = outs
    return {name: (statistics.median(totals[name]), statistics.median(per_batch[name]), outputs[name]) for name in fns}


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random_weights:
        ar, nat, tokenizer, ids, references, ar_kwargs = random_models(sentences=args.max_sentences)
        setting = "random weights, d_model 256, 3+3 layers, vocab 8000, 18 source tokens, 20 output tokens"
    else:
        if args.demo:
            args.ar, args.nat, args.source, args.reference = train_demo_models()
        if not (args.ar and args.nat and args.source):
            raise SystemExit("Give --ar, --nat and --source (or --random-weights, or --demo).")
        ar, nat, tokenizer, ids, references, ar_kwargs = trained_models(args)
        setting = f"models {args.ar} / {args.nat}, {len(ids)} test sentences"
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ar, nat = ar.to(device), nat.to(device)
    pad = nat.config.pad_token_id
    start_token = getattr(ar.config, "decoder_start_token_id", None)
    methods = [m for m in args.methods.split(",") if m]
    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        limit = args.batch1_sentences if batch_size == 1 else max(args.max_sentences, batch_size)
        subset = ids[:limit]
        batches = make_batches(subset, batch_size, pad, device)
        fns = {m: generate_fn(m, ar, nat, ar_kwargs, args.rescore_alpha) for m in methods}
        for method, (total, latency, outputs) in time_methods(fns, batches, args.repeats, args.warmup).items():
            tokens = sum(count_tokens(out, pad, start_token if method.startswith("ar") else None) for out in outputs)
            row = {
                "method": method,
                "batch_size": batch_size,
                "sentences": len(subset),
                "latency_ms": 1e3 * latency,
                "sentences_per_s": len(subset) / total,
                "tokens_per_s": tokens / total,
                "total_s": total,
            }
            if tokenizer is not None:
                texts = [
                    t.strip() for out in outputs for t in tokenizer.batch_decode(out.cpu(), skip_special_tokens=True)
                ]
                row["repeat_rate"] = repeated_token_rate([t.split() for t in texts])
                if references is not None:
                    row["bleu"] = corpus_bleu(texts, references[: len(texts)])
            rows.append(row)
            print(
                f"batch {batch_size:4d} {method:22s} {row['latency_ms']:9.2f} ms/batch "
                f"{row['sentences_per_s']:9.1f} sent/s",
                flush=True,
            )
    add_speedups(rows)
    return {"setting": setting, "machine": machine(), "rows": rows}


def add_speedups(rows):
    """Throughput ratios against AR beam 5 and AR greedy measured at the same batch size in this run."""
    for row in rows:
        same = {r["method"]: r for r in rows if r["batch_size"] == row["batch_size"]}
        for base in ("ar_beam5", "ar_greedy"):
            if base in same:
                row[f"speedup_vs_{base}"] = row["sentences_per_s"] / same[base]["sentences_per_s"]


def processor_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The processor and its core count, the accelerator if any, torch and its thread count."""
    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{processor_name()} ({os.cpu_count()} cores), {device}, torch {torch.__version__}, {threads} threads"


def markdown(result) -> str:
    lines = [
        f"Setting: {result['setting']}. Machine: {result['machine']}.",
        "",
        "| method | batch | latency ms/batch | sent/s | tok/s | vs AR beam 5 | vs AR greedy | BLEU | repeats |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        bleu = f"{r['bleu']['score']:.2f}" if "bleu" in r else "-"
        repeat = f"{100 * r['repeat_rate']:.1f}%" if "repeat_rate" in r else "-"
        lines.append(
            f"| {r['method']} | {r['batch_size']} | {r['latency_ms']:.1f} | {r['sentences_per_s']:.1f} | "
            f"{r['tokens_per_s']:.0f} | {r.get('speedup_vs_ar_beam5', float('nan')):.2f}x | "
            f"{r.get('speedup_vs_ar_greedy', float('nan')):.2f}x | {bleu} | {repeat} |"
        )
    signatures = {r["bleu"]["signature"] for r in result["rows"] if "bleu" in r}
    if signatures:
        lines += ["", "sacreBLEU signature: " + "; ".join(sorted(signatures))]
    return "\n".join(lines)


def train_demo_models():
    """Train tiny models on the embedded synthetic task (a few minutes) and return their folders and test files."""
    from train_em import run_demo_for_benchmark  # examples/train_em.py

    return run_demo_for_benchmark()


def main(argv=None):
    args = parse_args(argv)
    result = run(args)
    with open(args.output_json, "w") as handle:
        json.dump(result, handle, indent=1)
    table = markdown(result)
    with open(args.output_md, "w") as handle:
        handle.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
