"""The speed benchmark behind examples/benchmark.py: NAT decoding against its paired AR, the AR converted to
CTranslate2 being the CPU baseline that counts (DESIGN.md, "Measuring"); Hugging Face `generate()` rows stay for
reference. Methods and labels: `em_nat.evaluation.METHODS`; speed-up as `em_nat.evaluation` defines it.

Every runtime (torch, CT2 int8, CT2 float32, ONNX Runtime int8 and float32 for the exported NAT) and thread
setting is timed in a process of its own (`python -m em_nat.benchmark --worker SPEC`), because one runtime's idle
worker threads slow another's. The sweep covers intra-op threads (torch `set_num_threads`, CT2 `intra_threads`,
ONNX Runtime `intra_op_num_threads`) and, at batch > 1, batches in flight at once (CT2 `inter_threads`,
`OnnxNAT.generate_many` workers; all batches submitted together); each method is reported at its best setting. Warm-up first, then repeats with the
methods of one process interleaved; medians reported; speed-ups are throughput ratios at the same batch size
measured in this run, against CT2 int8 greedy and CT2 int8 beam 5.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from em_nat.evaluation import (
    CT2_METHODS,
    HF_TWIN,
    LENGTH_BEAM,
    METHODS,
    ONNX_METHODS,
    decode_fn,
    machine,
    make_batches,
    time_interleaved,
    time_methods,
)
from em_nat.rendering import benchmark_markdown, benchmark_plot
from em_nat.run_dir import RunDir

ORDER = tuple(METHODS)
LABELS = {name: m.label for name, m in METHODS.items()}
BASELINES = {"ct2_int8_greedy": LABELS["ct2_int8_greedy"], "ct2_int8_beam5": LABELS["ct2_int8_beam5"]}
SETTINGS_LEGEND = (
    "(n) = n intra-op threads (torch `set_num_threads`, CT2 `intra_threads`, ONNX Runtime `intra_op_num_threads`); "
    "(nxm) = n intra-op threads and m batches in flight at once (CT2 `inter_threads`, `OnnxNAT.generate_many` "
    "workers), the batches submitted together"
)


@dataclass
class BenchmarkOptions:
    """What to benchmark and how; the options of examples/benchmark.py (`--help` there describes each)."""

    ar: str | None = None
    nat: str | None = None
    source: str | None = None
    reference: list[str] | None = None
    random_weights: bool = False
    batch_sizes: list[int] = field(default_factory=lambda: [1, 64])
    max_sentences: int = 256
    batch1_sentences: int = 40
    repeats: int = 3
    warmup: int = 2
    methods: str = ",".join(METHODS)
    rescore_alpha: float = 0.6
    rescore_top_k: int | None = None
    rounds: int = 1
    threads: list[int] = field(default_factory=lambda: [1, 2])
    inter_threads: list[int] = field(default_factory=lambda: [1, 2])
    device: str | None = None
    work_dir: str | None = None
    vocab_size: int = 8000
    d_model: int = 256
    layers: int = 3
    heads: int = 4
    source_len: int = 18
    output_len: int = 20


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


def output_ids(row: list[int], start_token_id, eos_token_id, pad_token_id) -> list[int]:
    """One output without the decoder start token, up to its first EOS (included), padding dropped: beam search in
    transformers 5 fills finished rows with EOS, greedy with PAD, the NAT with PAD."""
    if start_token_id is not None and row and row[0] == start_token_id:
        row = row[1:]
    if eos_token_id in row:
        row = row[: row.index(eos_token_id) + 1]
    return [t for t in row if t != pad_token_id]


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
    fns = {
        m: decode_fn(m, ar, nat, spec["ar_kwargs"], spec["rescore_alpha"], spec["rescore_top_k"])
        for m in spec["methods"]
    }
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
    """Time CT2 greedy and beam search of one converted model at one intra/inter thread setting. The worker process
    imports the em_nat package (and with it torch) but runs no torch work: idle torch holds no worker threads."""
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
        beam_size = METHODS[method].settings["beam_size"]
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


def onnx_worker(spec) -> list[dict]:
    """Time the exported NAT (ONNX Runtime, `OnnxNAT`) at one intra-op thread setting; its length-beam method
    rescores with the AR in CTranslate2 int8 (`CT2Rescorer`) at the same thread count."""
    import torch  # noqa: F401  (tensors around the ONNX Runtime sessions)

    from em_nat.export import CT2Rescorer, OnnxNAT

    precision = spec["runtime"].split("-", 1)[1]
    threads = {"intra_op_num_threads": spec["intra"]} if spec["intra"] else {}
    nat = OnnxNAT.from_pretrained(spec["onnx_dir"], precision=precision, **threads)
    pad, eos = nat.config.pad_token_id, nat.config.eos_token_id
    fns = {}
    for name in spec["methods"]:
        settings = dict(METHODS[name].settings)
        rescore = settings.pop("rescore", None)
        if rescore:
            ct2_threads = {"intra_threads": spec["intra"]} if spec["intra"] else {}
            rescorer = CT2Rescorer.from_pretrained(
                spec["ct2_dirs"][rescore], spec["onnx_dir"], compute_type=rescore.split("-", 1)[1], **ct2_threads
            )
            settings.update(
                rescorer=rescorer, rescore_alpha=spec["rescore_alpha"], rescore_top_k=spec["rescore_top_k"]
            )
        if spec["inter"] > 1:  # every batch handed over at once, `inter` of them in flight
            fns[name] = lambda batches, settings=settings: nat.generate_many(batches, spec["inter"], **settings)
        else:
            fns[name] = lambda batch, settings=settings: nat.generate(**batch, **settings)
    measurements = []
    for batch_size in spec["batch_sizes"]:
        subset = spec["ids"][: sentence_limit(spec, batch_size)]
        batches = make_batches(subset, batch_size, pad)
        passes = [batches] if spec["inter"] > 1 else batches
        for method, (total, latency, outs) in time_methods(fns, passes, spec["repeats"], spec["warmup"]).items():
            if spec["inter"] > 1:
                outs, latency = [out for pass_outs in outs for out in pass_outs], None  # batches overlap
            ids = [output_ids(row, None, eos, pad) for out in outs for row in out.tolist()]
            tokens = sum(len(row) for row in ids)
            measurements.append(measurement(spec, method, batch_size, len(subset), total, latency, tokens, ids))
    return measurements


WORKERS = {"torch": torch_worker, "ct2": ct2_worker, "onnx": onnx_worker}


def run_worker(spec_path):
    with open(spec_path) as handle:
        spec = json.load(handle)
    result = WORKERS[spec["runtime"].split("-")[0]](spec)
    with open(spec["result_path"], "w") as handle:
        json.dump(result, handle)


# ---------------------------------------------------------------------------------------------------------------
# the sweep (main process)


def runtime_of(method: str) -> str:
    return METHODS[method].runtime


def plan_jobs(methods, batch_sizes, threads, inter_threads, cores) -> list[dict]:
    """One job (process) per runtime and thread setting: intra-op threads for all, and for CT2 and ONNX Runtime at
    batch > 1 also `inter` > 1 batches in flight (CT2 `inter_threads`, `OnnxNAT.generate_many` workers) where
    intra x inter fits in the cores."""
    jobs = []
    for runtime in ("ct2-int8", "ct2-float32", "onnx-int8", "onnx-float32", "torch"):
        chosen = [m for m in methods if runtime_of(m) == runtime]
        if not chosen:
            continue
        for intra in threads:
            jobs.append({"runtime": runtime, "methods": chosen, "intra": intra, "inter": 1, "setting": f"{intra}"})
            if runtime.startswith("torch"):
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


def median_over_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One measurement per (method, batch size, setting): the one with the median throughput over the rounds (the
    whole sweep run again and again, so that a slow spell of a shared machine hits one round, not one runtime).
    Each keeps the throughputs of all rounds (`sentences_per_s_rounds`)."""
    groups = {}
    for measurements in rounds:
        for row in measurements:
            groups.setdefault((row["method"], row["batch_size"], row["setting"]), []).append(row)
    chosen = []
    for group in groups.values():
        ordered = sorted(group, key=lambda row: row["sentences_per_s"])
        median = dict(ordered[(len(ordered) - 1) // 2])  # the lower median: a measured row, not an average
        median["sentences_per_s_rounds"] = [row["sentences_per_s"] for row in group]
        chosen.append(median)
    return chosen


def run_jobs(jobs, common, work_dir, prefix: str = "") -> list[dict]:
    measurements = []
    for k, job in enumerate(jobs):
        spec = {**common, **job}  # a job's batch sizes replace the common ones
        spec["result_path"] = os.path.join(work_dir, f"result-{k}.json")
        if spec["runtime"].startswith("ct2"):
            spec.pop("ids", None)
            spec["ct2_dir"] = common["ct2_dirs"][spec["runtime"]]
        else:
            spec.pop("tokens", None)
        spec_path = os.path.join(work_dir, f"job-{k}.json")
        with open(spec_path, "w") as handle:
            json.dump(spec, handle)
        env = dict(os.environ)
        if spec["intra"]:
            env["OMP_NUM_THREADS"] = str(spec["intra"])
        print(f"-- {prefix}{spec['runtime']} ({spec['setting']}), own process", flush=True)
        subprocess.run([sys.executable, "-m", "em_nat.benchmark", "--worker", spec_path], check=True, env=env)
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
    order = {m: i for i, m in enumerate(ORDER)}
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
        tokenizer.save_pretrained(nat_dir)  # the ONNX export takes the tokenizer from the NAT's folder
        forced = ar_kwargs["max_new_tokens"]
        ct2_options = {"min_decoding_length": forced, "max_decoding_length": forced}
        c = nat.config
        setting = (
            f"random weights, d_model {c.d_model}, {c.encoder_layers}+{c.decoder_layers} layers, "
            f"{c.encoder_attention_heads} heads, FFN {c.encoder_ffn_dim}, vocab {c.vocab_size}, "
            f"{len(ids[0])} source tokens, every output forced to {forced} tokens ({forced - 1} + EOS)"
        )
    else:
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


def available_methods(methods: list[str]) -> list[str]:
    """`methods` without those whose runtime is not installed, each left out with a message naming the extra."""
    missing = []

    def needs(method: str) -> set[str]:
        ct2 = method in CT2_METHODS or bool(ct2_rescorers([method]))
        onnx = {"onnx", "onnxruntime", "onnxscript"} if method in ONNX_METHODS else set()
        return ({"ctranslate2"} if ct2 else set()) | onnx

    for module in sorted(set().union(*map(needs, methods))):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
            extra = "ct2" if module == "ctranslate2" else "onnx"
            print(f'{module} is not installed (pip install "em-nat[{extra}]"): rows that need it are left out.')
    return [m for m in methods if not needs(m) & set(missing)]


def ct2_rescorers(methods) -> set[str]:
    """The CTranslate2 runtimes that methods rescore with ('ct2-int8')."""
    return {METHODS[m].settings["rescore"] for m in methods if isinstance(METHODS[m].settings.get("rescore"), str)}


def export_nat(nat_dir: str, work_dir: str) -> str:
    """The NAT exported to ONNX, float32 and dynamic int8 graphs (`em_nat.export.export_onnx`)."""
    from em_nat.export import export_onnx

    onnx_dir = os.path.join(work_dir, "nat-onnx")
    report = export_onnx(nat_dir, onnx_dir, int8=True, force=True)
    print(f"-- exported the NAT to ONNX: {report['precisions']}", flush=True)
    return onnx_dir


def rescoring_note(alpha: float, top_k: int | None) -> str:
    if top_k is None or top_k >= LENGTH_BEAM:
        chosen = f"all {LENGTH_BEAM} length candidates"
    else:
        chosen = f"the NAT's {top_k} best of {LENGTH_BEAM} length candidates (by its own score)"
    return f"the AR rescores {chosen}, GNMT alpha {alpha}"


def run_benchmark(args: "BenchmarkOptions") -> dict:
    """Run the whole benchmark (module docstring) and return its result: the best row per method and batch size,
    with speed-ups and quality, and every measurement of the sweep."""
    import em_nat  # noqa: F401  (registers the NAT with the Auto classes)

    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in ORDER]
    if unknown:
        raise SystemExit(f"Unknown method(s) {unknown}; choose from {list(ORDER)}.")
    methods = available_methods(methods)
    batch_sizes = args.batch_sizes
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="em-nat-benchmark-")
    os.makedirs(work_dir, exist_ok=True)
    try:
        prepared = prepare(args, work_dir)
        tokenizer = prepared["tokenizer"]
        runtimes = sorted({runtime_of(m) for m in methods if m in CT2_METHODS} | ct2_rescorers(methods))
        common = {key: prepared[key] for key in ("ar_dir", "nat_dir", "ids", "ar_kwargs", "ct2_options", "device")}
        common.update(
            batch_sizes=batch_sizes,
            batch1_sentences=args.batch1_sentences,
            max_sentences=args.max_sentences,
            repeats=args.repeats,
            warmup=args.warmup,
            rescore_alpha=args.rescore_alpha,
            rescore_top_k=args.rescore_top_k,
            tokens=[tokenizer.convert_ids_to_tokens(row) for row in prepared["ids"]],
            ct2_dirs=convert_ct2(prepared["ar_dir"], work_dir, runtimes),
            onnx_dir=export_nat(prepared["nat_dir"], work_dir) if set(methods) & set(ONNX_METHODS) else None,
        )
        jobs = plan_jobs(methods, batch_sizes, args.threads, args.inter_threads, cores)
        measurements = median_over_rounds(
            [run_jobs(jobs, common, work_dir, f"round {r + 1} of {args.rounds}: ") for r in range(args.rounds)]
        )
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
        "rounds": args.rounds,
        "rescoring": rescoring_note(args.rescore_alpha, args.rescore_top_k),
        "rows": rows,
        "sweep": measurements,
    }


def demo_inputs(run_dir: str, num_rounds: int, synthetic_num_train: int, synthetic_seed: int = 0):
    """The AR and NAT folders of the last round of a run on the embedded synthetic task (examples/train_em.py with
    no arguments), with its test split written next to it: a source file and one file per reference. Returns
    `(ar_dir, nat_dir, source_file, reference_files)`."""
    from em_nat.synthetic import SyntheticTaskConfig, build_synthetic_task

    run = RunDir(run_dir)
    config = SyntheticTaskConfig(seed=synthetic_seed, num_train=synthetic_num_train)
    test = build_synthetic_task(config)["test"]
    src = run.file("test.src")
    with open(src, "w") as handle:
        handle.writelines(pair["src"] + "\n" for pair in test["translation"])
    width = max(len(refs) for refs in test["references"])
    refs = [run.file(f"test.ref{k}") for k in range(width)]
    for k, path in enumerate(refs):
        with open(path, "w") as handle:
            handle.writelines((r[k] if k < len(r) else "") + "\n" for r in test["references"])
    return run.model(num_rounds, "ar"), run.model(num_rounds, "nat"), src, refs


def time_candidate_phase(
    ar: str,
    source: str,
    sentences: int = 500,
    train_size: int = 29000,
    num_candidates: tuple[int, ...] = (4, 20),
    backends: str = "transformers,ctranslate2-int8,ctranslate2-float32",
    threads: int = 2,
    max_sentences: int = 256,
    max_new_tokens: int = 96,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
) -> str:
    """Time the E-step's candidate phase (`em_nat.trainers.candidates.generate_candidates`, what `EMTrainer` runs)
    on the first `sentences` lines of `source` with each backend and N (beam = N); returns a Markdown table with
    sources per second and the minutes of one phase over `train_size` sources at that rate. Each backend decodes the
    same length-sorted batches; torch and CTranslate2 use `threads` intra-op threads."""
    import time

    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from em_nat.trainers.candidates import CandidateSettings, generate_candidates

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(ar)
    model = AutoModelForSeq2SeqLM.from_pretrained(ar).eval()
    with open(source, encoding="utf-8") as handle:
        lines = [line.strip() for _, line in zip(range(sentences), handle)]
    ids = tokenizer(lines, truncation=True, max_length=model.config.max_position_embeddings)["input_ids"]
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    chosen = [b for b in backends.split(",") if b]
    if any(b.startswith("ctranslate2") for b in chosen) and not available_methods(list(CT2_METHODS[:1])):
        chosen = [b for b in chosen if not b.startswith("ctranslate2")]
    lines_out = [
        f"Candidate phase on the first {len(ids)} sources of {source} ({threads} threads; {machine(threads=False)}).",
        "",
        f"| backend | N (beam) | sources/s | minutes for {train_size:,} sources |",
        "|---|---|---|---|",
    ]
    for n in num_candidates:
        for backend in chosen:
            name, _, compute_type = backend.partition("-")
            settings = CandidateSettings(
                num_candidates=n,
                beam_size=n,
                max_new_tokens=max_new_tokens,
                max_sentences=max_sentences,
                max_len_a=max_len_a,
                max_len_b=max_len_b,
                backend=name,
                compute_type=compute_type or "int8",
            )
            start = time.perf_counter()
            generate_candidates(model, tokenizer, ids, settings, accelerator)  # CT2: converts the AR first
            rate = len(ids) / (time.perf_counter() - start)
            lines_out.append(f"| {backend} | {n} ({n}) | {rate:.1f} | {train_size / rate / 60:.1f} |")
            print(lines_out[-1], flush=True)
    return "\n".join(lines_out)


def markdown(result: dict) -> str:
    return benchmark_markdown(result, LABELS, list(ORDER), BASELINES)


def plot(result: dict, path: str) -> bool:
    return benchmark_plot(result, path, LABELS, list(ORDER))


if __name__ == "__main__":  # a worker process of `run_jobs`: python -m em_nat.benchmark --worker SPEC
    if len(sys.argv) != 3 or sys.argv[1] != "--worker":
        raise SystemExit("usage: python -m em_nat.benchmark --worker SPEC_JSON (run examples/benchmark.py instead)")
    run_worker(sys.argv[2])
