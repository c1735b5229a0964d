"""Latency, throughput and quality of NAT decoding against its paired AR, the AR converted to CTranslate2 being the
CPU baseline that counts (DESIGN.md, "Measuring"); Hugging Face `generate()` rows stay for reference.

Methods: CT2 int8 and float32, greedy and beam 5, of the AR converted with `em_nat.export` (float32 decodes exactly
like `generate()`); HF AR greedy and beam 5; NAT argmax, NAT + ODD, NAT + length beam 9 + ODD + AR rescoring. At
batch 1 and batch 64 by default. Every runtime (torch, CT2 int8, CT2 float32) and thread setting is timed in a
process of its own, because one runtime's idle worker threads slow another's. The script sweeps intra-op threads
(1 and 2: torch `set_num_threads`, CT2 `intra_threads`) and, at batch > 1, CT2 `inter_threads` (batches submitted
together), prints the sweep, and reports each method at its best setting, the setting in brackets. Warm-up first,
then repeats with the methods of one process interleaved; medians reported; speed-ups are throughput ratios at the
same batch size measured in this run, against CT2 int8 greedy and CT2 int8 beam 5.

    # trained models and a test set (sacreBLEU with signature when references are given; BLEU-vs-latency PNG)
    python examples/benchmark.py --ar runs/em/round-2/ar --nat runs/em/round-2/nar \
        --source test.en --reference test.de
    # random weights at the size of the speed targets (d_model 256, 3+3 layers, vocab 8000, 18 source tokens, 20
    # output tokens + EOS, every method forced to that length): speed only
    python examples/benchmark.py --random-weights
    # train tiny models on the embedded synthetic task first, then benchmark them
    python examples/benchmark.py --demo

Writes `--output_json`, `--output_md` and, with BLEU, `--output_png`; prints the Markdown tables. Needs
`pip install "em-nat[benchmark]"` (ctranslate2, matplotlib) for the CT2 rows and the plot; without ctranslate2
the CT2 rows are left out with a message.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BEAM_SIZE = 5
LENGTH_BEAM = 9
HF_METHODS = ("ar_greedy", "ar_beam5", "nat_argmax", "nat_odd", "nat_lb9_odd_rescore")
CT2_METHODS = ("ct2_int8_greedy", "ct2_int8_beam5", "ct2_float32_greedy", "ct2_float32_beam5")
METHODS = CT2_METHODS + HF_METHODS
LABELS = {
    "ct2_int8_greedy": "CT2 int8 greedy",
    "ct2_int8_beam5": f"CT2 int8 beam {BEAM_SIZE}",
    "ct2_float32_greedy": "CT2 float32 greedy",
    "ct2_float32_beam5": f"CT2 float32 beam {BEAM_SIZE}",
    "ar_greedy": "HF AR greedy",
    "ar_beam5": f"HF AR beam {BEAM_SIZE}",
    "nat_argmax": "NAT argmax",
    "nat_odd": "NAT + ODD",
    "nat_lb9_odd_rescore": f"NAT + length beam {LENGTH_BEAM} + ODD + AR rescoring",
}
BASELINES = {"ct2_int8_greedy": "CT2 int8 greedy", "ct2_int8_beam5": f"CT2 int8 beam {BEAM_SIZE}"}
# a CT2 method's outputs should equal those of the HF method it was converted from
HF_TWIN = {m: "ar_beam5" if m.endswith("beam5") else "ar_greedy" for m in CT2_METHODS}
SETTINGS_LEGEND = (
    "(n) = n intra-op threads (torch `set_num_threads`, CT2 `intra_threads`); (nxm) = CT2 with n intra-op threads "
    "and m parallel translations (`inter_threads`), the batches submitted together"
)


def parse_args(argv=None):
    from em_nat.cli import bounded, bounded_list

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
    parser.add_argument(
        "--batch-sizes", type=bounded_list(int, 1), default="1,64", help="Comma-separated batch sizes."
    )
    parser.add_argument(
        "--max-sentences", type=bounded(int, 1), default=256, help="Sentences timed per batch size > 1."
    )
    parser.add_argument("--batch1-sentences", type=bounded(int, 1), default=40, help="Sentences timed at batch 1.")
    parser.add_argument(
        "--repeats", type=bounded(int, 1), default=3, help="Timed passes over the sentences (median kept)."
    )
    parser.add_argument("--warmup", type=bounded(int, 0), default=2, help="Untimed batches before timing.")
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma-separated subset of methods.")
    parser.add_argument("--rescore-alpha", type=bounded(float, 0.0), default=0.6, help="GNMT alpha of AR rescoring.")
    parser.add_argument(
        "--threads",
        type=bounded_list(int, 0),
        default="1,2",
        help="Comma-separated intra-op thread counts swept for every runtime (0 = torch's default, CT2's 0 = auto).",
    )
    parser.add_argument(
        "--inter-threads",
        type=bounded_list(int, 1),
        default="1,2",
        help="CT2 inter_threads swept at batch > 1 (combinations above the core count are skipped).",
    )
    parser.add_argument("--device", default=None, help="'cpu' or 'cuda' (default: cuda when available).")
    parser.add_argument("--work-dir", default=None, help="Keep converted models and worker files here.")
    # sizes of --random-weights
    parser.add_argument("--vocab-size", type=bounded(int, 10), default=8000)
    parser.add_argument("--d-model", type=bounded(int, 1), default=256)
    parser.add_argument("--layers", type=bounded(int, 1), default=3, help="Encoder and decoder layers each.")
    parser.add_argument("--heads", type=bounded(int, 1), default=4)
    parser.add_argument("--source-len", type=bounded(int, 2), default=18, help="Source tokens, EOS included.")
    parser.add_argument("--output-len", type=bounded(int, 1), default=20, help="Output tokens before EOS.")
    parser.add_argument("--output_json", default="benchmark.json")
    parser.add_argument("--output_md", default="benchmark.md")
    parser.add_argument("--output_png", default="benchmark.png", help="BLEU against latency (only with BLEU).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: time one runtime/setting (a JSON spec)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------
# models and inputs


def random_tokenizer(vocab_size: int):
    """A word-level tokenizer over made-up tokens in em-nat's layout (`<s>`=0, `</s>`=1, `<unk>`=2, `<pad>` last):
    what the CTranslate2 converter reads the vocabulary from."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {
        "<s>": 0,
        "</s>": 1,
        "<unk>": 2,
        **{f"w{i}": i for i in range(3, vocab_size - 1)},
        "<pad>": vocab_size - 1,
    }
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def random_models(
    vocab_size=8000, d_model=256, layers=3, source_len=18, output_len=20, sentences=256, seed=0, heads=4
):
    """Random NAT and Marian of one size, in em-nat's token layout (`random_tokenizer`). The NAT's length head is
    biased to predict `output_len` + EOS and the AR is forced to emit as many tokens, so all outputs have one
    length. Returns `(ar, nat, None, source_ids, None, ar_kwargs)`."""
    import torch
    from transformers import MarianMTModel

    import em_nat
    from em_nat.models import marian_config_like

    torch.manual_seed(seed)
    config = em_nat.NATConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=vocab_size - 1,
    )
    nat = em_nat.NATForConditionalGeneration(config).eval()
    with torch.no_grad():
        nat.model.length_predictor.bias[output_len + 1] = 1e4
    ar = MarianMTModel(marian_config_like(config)).eval()
    sources = torch.randint(3, vocab_size - 1, (sentences, source_len))
    sources[:, -1] = config.eos_token_id
    forced = output_len + 1  # tokens with EOS, as many as the NAT's
    ar_kwargs = {"min_new_tokens": forced, "max_new_tokens": forced}
    return ar, nat, None, [row.tolist() for row in sources], None, ar_kwargs


def trained_models(args):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import em_nat

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
        return lambda batch: ar.generate(**batch, num_beams=BEAM_SIZE, do_sample=False, **ar_kwargs)
    if method == "nat_argmax":
        return lambda batch: nat.generate(**batch, odd=False, length_beam=1)
    if method == "nat_odd":
        return lambda batch: nat.generate(**batch, odd=True, length_beam=1)
    if method == "nat_lb9_odd_rescore":
        return lambda batch: nat.generate(**batch, odd=True, length_beam=LENGTH_BEAM, rescorer=ar, rescore_alpha=alpha)
    raise ValueError(f"Unknown method {method}; choose from {HF_METHODS}.")


def make_batches(ids, batch_size, pad_token_id, device="cpu"):
    import torch

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


def output_ids(row: list[int], start_token_id, eos_token_id, pad_token_id) -> list[int]:
    """One output without the decoder start token, up to its first EOS (included), padding dropped: beam search in
    transformers 5 fills finished rows with EOS, greedy with PAD, the NAT with PAD."""
    if start_token_id is not None and row and row[0] == start_token_id:
        row = row[1:]
    if eos_token_id in row:
        row = row[: row.index(eos_token_id) + 1]
    return [t for t in row if t != pad_token_id]


# ---------------------------------------------------------------------------------------------------------------
# timing (inside a worker process)


def time_interleaved(fns: dict, batches, repeats: int, warmup: int, synchronize=None) -> dict:
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
                if synchronize is not None:
                    synchronize()
                per_batch[name].append(time.perf_counter() - t0)
            totals[name].append(time.perf_counter() - start)
            outputs[name] = outs
    return {name: (statistics.median(totals[name]), statistics.median(per_batch[name]), outputs[name]) for name in fns}


def time_methods(fns: dict, batches, repeats: int, warmup: int) -> dict:
    """`time_interleaved` for torch callables: inference mode, and GPU work waited for before reading the clock."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else None
    with torch.inference_mode():
        return time_interleaved(fns, batches, repeats, warmup, sync)


def sentence_limit(spec, batch_size):
    return spec["batch1_sentences"] if batch_size == 1 else max(spec["max_sentences"], batch_size)


def torch_worker(spec) -> list[dict]:
    """Time the HF methods (AR generate, NAT) at one torch thread setting."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    import em_nat

    if spec["intra"]:
        torch.set_num_threads(spec["intra"])
    device = torch.device(spec["device"])
    ar = AutoModelForSeq2SeqLM.from_pretrained(spec["ar_dir"]).eval().to(device)
    nat = em_nat.NATForConditionalGeneration.from_pretrained(spec["nat_dir"]).eval().to(device)
    pad, eos = nat.config.pad_token_id, nat.config.eos_token_id
    start_token = getattr(ar.config, "decoder_start_token_id", None)
    fns = {m: generate_fn(m, ar, nat, spec["ar_kwargs"], spec["rescore_alpha"]) for m in spec["methods"]}
    measurements = []
    for batch_size in spec["batch_sizes"]:
        subset = spec["ids"][: sentence_limit(spec, batch_size)]
        batches = make_batches(subset, batch_size, pad, device)
        for method, (total, latency, outs) in time_methods(fns, batches, spec["repeats"], spec["warmup"]).items():
            start = start_token if method.startswith("ar") else None
            ids = [output_ids(row, start, eos, pad) for out in outs for row in out.cpu().tolist()]
            tokens = sum(len(row) for row in ids)
            measurements.append(measurement(spec, method, batch_size, len(subset), total, latency, tokens, ids))
    return measurements


def ct2_worker(spec) -> list[dict]:
    """Time CT2 greedy and beam search of one converted model at one intra/inter thread setting. Imports no torch."""
    import ctranslate2

    translator = ctranslate2.Translator(
        spec["ct2_dir"],
        device="cuda" if spec["device"].startswith("cuda") else "cpu",
        intra_threads=spec["intra"],
        inter_threads=spec["inter"],
    )
    options = {**spec["ct2_options"], "return_end_token": True}

    def one_batch(beam_size):
        return lambda batch: translator.translate_batch(batch, beam_size=beam_size, **options)

    def all_batches(beam_size):  # inter_threads > 1: every batch submitted at once, results waited for
        def run(batches):
            pending = [
                translator.translate_batch(b, beam_size=beam_size, asynchronous=True, **options) for b in batches
            ]
            return [result.result() for results in pending for result in results]

        return run

    fns = {}
    for method in spec["methods"]:
        beam_size = BEAM_SIZE if method.endswith("beam5") else 1
        fns[method] = all_batches(beam_size) if spec["inter"] > 1 else one_batch(beam_size)
    measurements = []
    for batch_size in spec["batch_sizes"]:
        subset = spec["tokens"][: sentence_limit(spec, batch_size)]
        batches = [subset[i : i + batch_size] for i in range(0, len(subset), batch_size)]
        timed = time_interleaved(fns, [batches] if spec["inter"] > 1 else batches, spec["repeats"], spec["warmup"])
        for method, (total, latency, outs) in timed.items():
            results = [r for out in outs for r in out]
            hypotheses = [r.hypotheses[0] for r in results]
            tokens = sum(len(h) for h in hypotheses)
            latency = None if spec["inter"] > 1 else latency  # batches overlap: no per-batch latency
            measurements.append(measurement(spec, method, batch_size, len(subset), total, latency, tokens, hypotheses))
    return measurements


def measurement(spec, method, batch_size, sentences, total, latency, tokens, outputs) -> dict:
    row = {
        "method": method,
        "batch_size": batch_size,
        "setting": spec["setting"],
        "intra_threads": spec["intra"],
        "inter_threads": spec["inter"],
        "sentences": sentences,
        "latency_ms": None if latency is None else 1e3 * latency,
        "sentences_per_s": sentences / total,
        "tokens_per_s": tokens / total,
        "tokens_per_sentence": tokens / sentences,
        "total_s": total,
        "outputs": outputs,
    }
    latency_text = "-" if latency is None else f"{1e3 * latency:9.2f}"
    print(
        f"batch {batch_size:4d} {method:22s} ({spec['setting']}) {latency_text} ms/batch "
        f"{row['sentences_per_s']:9.1f} sent/s {row['tokens_per_sentence']:5.1f} tok/sent",
        flush=True,
    )
    return row


def run_worker(spec_path):
    with open(spec_path) as handle:
        spec = json.load(handle)
    result = torch_worker(spec) if spec["runtime"] == "torch" else ct2_worker(spec)
    with open(spec["result_path"], "w") as handle:
        json.dump(result, handle)


# ---------------------------------------------------------------------------------------------------------------
# the sweep (main process)


def runtime_of(method: str) -> str:
    if method.startswith("ct2_int8"):
        return "ct2-int8"
    if method.startswith("ct2_float32"):
        return "ct2-float32"
    return "torch"


def plan_jobs(methods, batch_sizes, threads, inter_threads, cores) -> list[dict]:
    """One job (process) per runtime and thread setting: intra-op threads for all, and for CT2 at batch > 1 also
    inter_threads > 1 where intra x inter fits in the cores."""
    jobs = []
    for runtime in ("ct2-int8", "ct2-float32", "torch"):
        chosen = [m for m in methods if runtime_of(m) == runtime]
        if not chosen:
            continue
        for intra in threads:
            jobs.append({"runtime": runtime, "methods": chosen, "intra": intra, "inter": 1, "setting": f"{intra}"})
            if not runtime.startswith("ct2"):
                continue
            for inter in inter_threads:
                large = [b for b in batch_sizes if b > 1]
                if inter > 1 and large and max(intra, 1) * inter <= cores:
                    jobs.append(
                        {
                            "runtime": runtime,
                            "methods": chosen,
                            "intra": intra,
                            "inter": inter,
                            "setting": f"{intra}x{inter}",
                            "batch_sizes": large,
                        }
                    )
    return jobs


def run_jobs(jobs, common, work_dir) -> list[dict]:
    measurements = []
    for k, job in enumerate(jobs):
        spec = {**common, **job}  # a job's batch sizes replace the common ones
        spec["result_path"] = os.path.join(work_dir, f"result-{k}.json")
        if spec["runtime"] == "torch":
            spec.pop("tokens", None)
        else:
            spec.pop("ids", None)
            spec["ct2_dir"] = common["ct2_dirs"][spec["runtime"]]
        spec_path = os.path.join(work_dir, f"job-{k}.json")
        with open(spec_path, "w") as handle:
            json.dump(spec, handle)
        env = dict(os.environ)
        if spec["intra"]:
            env["OMP_NUM_THREADS"] = str(spec["intra"])
        print(f"-- {spec['runtime']} ({spec['setting']}), own process", flush=True)
        subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", spec_path], check=True, env=env)
        with open(spec["result_path"]) as handle:
            for row in json.load(handle):
                row["runtime"] = spec["runtime"]
                measurements.append(row)
    return measurements


def best_rows(measurements) -> list[dict]:
    """Per method and batch size, the setting with the highest throughput."""
    best = {}
    for row in measurements:
        key = (row["method"], row["batch_size"])
        if key not in best or row["sentences_per_s"] > best[key]["sentences_per_s"]:
            best[key] = row
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(best.values(), key=lambda r: (r["batch_size"], order.get(r["method"], len(order))))


def add_speedups(rows):
    """Throughput ratios against CT2 int8 greedy / beam 5 and HF AR beam 5 / greedy at the same batch size."""
    for row in rows:
        same = {r["method"]: r for r in rows if r["batch_size"] == row["batch_size"]}
        for base in ("ct2_int8_greedy", "ct2_int8_beam5", "ar_beam5", "ar_greedy"):
            if base in same:
                row[f"speedup_vs_{base}"] = row["sentences_per_s"] / same[base]["sentences_per_s"]


def add_quality(rows, tokenizer, references, texts=True):
    """With `texts` (trained models): the decoded texts' repeated-token rate and BLEU, and for CT2 rows the share
    of outputs identical to those of the HF method they were converted from. Random weights get neither: HF forces
    EOS as the last of the forced tokens, CT2 does not."""
    from em_nat.metrics import corpus_bleu, repeated_token_rate, structural_ids

    ids = {}
    for row in rows:
        outputs = row.pop("outputs")
        if row["method"] in CT2_METHODS:  # CT2 speaks tokens
            outputs = [tokenizer.convert_tokens_to_ids(tokens) for tokens in outputs]
        ids[(row["method"], row["batch_size"])] = outputs
        if texts:
            decoded = [t.strip() for t in tokenizer.batch_decode(outputs, skip_special_tokens=True)]
            row["repeat_rate"] = repeated_token_rate(outputs, structural_ids(tokenizer))  # the one definition
            if references is not None:
                row["bleu"] = corpus_bleu(decoded, references[: len(decoded)])
    for row in rows:
        twin = ids.get((HF_TWIN.get(row["method"]), row["batch_size"]))
        if texts and twin is not None:
            mine = ids[(row["method"], row["batch_size"])]
            row["same_as_hf"] = sum(a == b for a, b in zip(mine, twin)) / len(mine)


# ---------------------------------------------------------------------------------------------------------------


def prepare(args, work_dir):
    """Models saved where the workers load them, CT2 conversions, inputs; the setting sentence."""
    import torch
    from transformers import AutoTokenizer

    if args.random_weights:
        ar, nat, _, ids, references, ar_kwargs = random_models(
            vocab_size=args.vocab_size,
            d_model=args.d_model,
            layers=args.layers,
            heads=args.heads,
            source_len=args.source_len,
            output_len=args.output_len,
            sentences=max(args.max_sentences, args.batch1_sentences, *args.batch_sizes),
        )
        tokenizer = random_tokenizer(args.vocab_size)
        ar_dir, nat_dir = os.path.join(work_dir, "ar"), os.path.join(work_dir, "nat")
        ar.save_pretrained(ar_dir)
        tokenizer.save_pretrained(ar_dir)
        nat.save_pretrained(nat_dir)
        forced = ar_kwargs["max_new_tokens"]
        ct2_options = {"min_decoding_length": forced, "max_decoding_length": forced}
        c = nat.config
        setting = (
            f"random weights, d_model {c.d_model}, {c.encoder_layers}+{c.decoder_layers} layers, "
            f"{c.encoder_attention_heads} heads, FFN {c.encoder_ffn_dim}, vocab {c.vocab_size}, "
            f"{len(ids[0])} source tokens, every output forced to {forced} tokens ({forced - 1} + EOS)"
        )
    else:
        if args.demo:
            args.ar, args.nat, args.source, args.reference = train_demo_models()
        if not (args.ar and args.nat and args.source):
            raise SystemExit("Give --ar, --nat and --source (or --random-weights, or --demo).")
        ar, nat, tokenizer, ids, references, ar_kwargs = trained_models(args)
        ar_dir, nat_dir = args.ar, args.nat
        ct2_options = {"max_decoding_length": ar_kwargs["max_new_tokens"]}
        setting = f"models {args.ar} / {args.nat}, {len(ids)} test sentences"
    del ar, nat
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "ar_dir": ar_dir,
        "nat_dir": nat_dir,
        "tokenizer": tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(ar_dir),
        "ids": ids,
        "references": references,
        "ar_kwargs": ar_kwargs,
        "ct2_options": ct2_options,
        "device": device,
        "setting": setting,
    }


def convert_ct2(ar_dir, work_dir, runtimes) -> dict:
    from em_nat.export import convert_to_ct2

    dirs = {}
    for runtime in runtimes:
        quantization = runtime.split("-", 1)[1]
        dirs[runtime] = os.path.join(work_dir, runtime)
        report = convert_to_ct2(ar_dir, dirs[runtime], quantization=quantization, force=True)
        print(f"-- converted the AR to CTranslate2 {quantization}: {report}", flush=True)
    return dirs


def run(args):
    import em_nat  # noqa: F401  (registers the NAT with the Auto classes)

    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"Unknown method(s) {unknown}; choose from {METHODS}.")
    if any(m in CT2_METHODS for m in methods):
        try:
            import ctranslate2  # noqa: F401
        except ImportError:
            print('ctranslate2 is not installed (pip install "em-nat[ct2]"): CT2 rows left out.', flush=True)
            methods = [m for m in methods if m not in CT2_METHODS]
    batch_sizes = args.batch_sizes
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="em-nat-benchmark-")
    os.makedirs(work_dir, exist_ok=True)
    try:
        prepared = prepare(args, work_dir)
        tokenizer = prepared["tokenizer"]
        runtimes = sorted({runtime_of(m) for m in methods if m in CT2_METHODS})
        common = {key: prepared[key] for key in ("ar_dir", "nat_dir", "ids", "ar_kwargs", "ct2_options", "device")}
        common.update(
            batch_sizes=batch_sizes,
            batch1_sentences=args.batch1_sentences,
            max_sentences=args.max_sentences,
            repeats=args.repeats,
            warmup=args.warmup,
            rescore_alpha=args.rescore_alpha,
            tokens=[tokenizer.convert_ids_to_tokens(row) for row in prepared["ids"]],
            ct2_dirs=convert_ct2(prepared["ar_dir"], work_dir, runtimes),
        )
        jobs = plan_jobs(methods, batch_sizes, args.threads, args.inter_threads, cores)
        measurements = run_jobs(jobs, common, work_dir)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    rows = [dict(row) for row in best_rows(measurements)]
    add_quality(rows, tokenizer, prepared["references"], texts=not args.random_weights)
    add_speedups(rows)
    for row in measurements:
        row.pop("outputs", None)
    return {
        "setting": prepared["setting"],
        "machine": machine(threads=False),
        "thread_settings": SETTINGS_LEGEND,
        "rows": rows,
        "sweep": measurements,
    }


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


def machine(threads: bool = True) -> str:
    """The processor and its core count, the accelerator if any, torch (and its thread count unless `threads` is
    False: the benchmark sets threads per process), CTranslate2."""
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    text = f"{processor_name()} ({os.cpu_count()} cores), {device}, torch {torch.__version__}"
    if threads:
        text += f", {torch.get_num_threads()} threads"
    try:
        import ctranslate2

        text += f", CTranslate2 {ctranslate2.__version__}"
    except ImportError:
        pass
    return text


def ratio(row, base) -> str:
    value = row.get(f"speedup_vs_{base}")
    return "-" if value is None else f"{value:.2f}x"


def markdown(result) -> str:
    rows = result["rows"]
    lines = [
        f"Setting: {result['setting']}. Machine: {result['machine']}.",
        "",
        "Each method at its best thread setting on this machine, in brackets: "
        + result["thread_settings"]
        + ". Every runtime and setting ran in its own process. Speed-ups are throughput ratios at the same batch "
        "size in this run; `= HF`: share of outputs identical to HF `generate()` of the same AR.",
    ]
    bases = [b for b in BASELINES if any(r["method"] == b for r in rows)]
    for batch_size in sorted({r["batch_size"] for r in rows}):
        lines += [
            "",
            f"Batch {batch_size}:",
            "",
            "| method | sent/s (setting) | "
            + "".join(f"vs {BASELINES[b]} | " for b in bases)
            + "ms/batch | tok/sent | = HF | BLEU | repeats |",
            "|---|---|" + "---|" * len(bases) + "---|---|---|---|---|",
        ]
        for r in [r for r in rows if r["batch_size"] == batch_size]:
            latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
            same = f"{100 * r['same_as_hf']:.0f}%" if "same_as_hf" in r else "-"
            bleu = f"{r['bleu']['score']:.2f}" if "bleu" in r else "-"
            repeat = f"{100 * r['repeat_rate']:.1f}%" if "repeat_rate" in r else "-"
            lines.append(
                f"| {LABELS[r['method']]} | {r['sentences_per_s']:.1f} ({r['setting']}) | "
                + "".join(f"{ratio(r, b)} | " for b in bases)
                + f"{latency} | {r['tokens_per_sentence']:.1f} | {same} | {bleu} | {repeat} |"
            )
    lines += sweep_markdown(result["sweep"])
    signatures = {r["bleu"]["signature"] for r in rows if "bleu" in r}
    if signatures:
        lines += ["", "sacreBLEU signature: " + "; ".join(sorted(signatures))]
    return "\n".join(lines)


def sweep_markdown(measurements) -> list[str]:
    """Sentences per second of every method at every setting measured (the sweep the best settings come from)."""
    settings = []
    for row in measurements:
        if row["setting"] not in settings:
            settings.append(row["setting"])
    table = {(r["method"], r["batch_size"], r["setting"]): r["sentences_per_s"] for r in measurements}
    order = {m: i for i, m in enumerate(METHODS)}
    keys = sorted({(r["method"], r["batch_size"]) for r in measurements}, key=lambda k: (k[1], order[k[0]]))
    lines = [
        "",
        "Thread sweep, sentences per second (best in bold):",
        "",
        "| method | batch | " + " | ".join(f"({s})" for s in settings) + " |",
        "|---|---|" + "---|" * len(settings),
    ]
    for method, batch_size in keys:
        values = {s: table.get((method, batch_size, s)) for s in settings}
        top = max(v for v in values.values() if v is not None)
        cells = ["-" if v is None else (f"**{v:.1f}**" if v == top else f"{v:.1f}") for v in values.values()]
        lines.append(f"| {LABELS[method]} | {batch_size} | " + " | ".join(cells) + " |")
    return lines


def plot(result, path) -> bool:
    """BLEU against milliseconds per sentence, one point per method and batch size. False without BLEU or
    matplotlib."""
    rows = [r for r in result["rows"] if "bleu" in r]
    if not rows:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed (pip install "em-nat[benchmark]"): no plot.', flush=True)
        return False
    from matplotlib.lines import Line2D

    figure, axes = plt.subplots(figsize=(8, 5.5))
    markers = ["o", "s", "^", "D", "v"]
    batch_sizes = sorted({r["batch_size"] for r in rows})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    colors = {m: plt.get_cmap("tab10")(k % 10) for k, m in enumerate(methods)}
    for r in rows:
        marker = markers[batch_sizes.index(r["batch_size"]) % len(markers)]
        axes.scatter(1e3 / r["sentences_per_s"], r["bleu"]["score"], marker=marker, color=colors[r["method"]], s=40)
    handles = [Line2D([], [], ls="", marker="o", color=colors[m], label=LABELS[m]) for m in methods]
    handles += [
        Line2D([], [], ls="", marker=markers[k % len(markers)], color="black", mfc="none", label=f"batch {b}")
        for k, b in enumerate(batch_sizes)
    ]
    axes.legend(handles=handles, fontsize=7, loc="best")
    axes.set_xscale("log")
    axes.set_xlabel("ms per sentence (log scale; batch > 1: wall time / sentences)")
    axes.set_ylabel("BLEU")
    axes.set_title("BLEU against decoding time, each method at its best thread setting", fontsize=10)
    axes.grid(alpha=0.3)
    figure.text(0.01, 0.01, result["machine"], fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return True


def train_demo_models():
    """Train tiny models on the embedded synthetic task (a few minutes) and return their folders and test files."""
    from train_em import run_demo_for_benchmark  # examples/train_em.py

    return run_demo_for_benchmark()


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return
    result = run(args)
    with open(args.output_json, "w") as handle:
        json.dump(result, handle, indent=1)
    table = markdown(result)
    with open(args.output_md, "w") as handle:
        handle.write(table + "\n")
    print(table)
    if plot(result, args.output_png):
        print(f"\nPlot: {args.output_png}")


if __name__ == "__main__":
    main()
