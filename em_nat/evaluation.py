"""Scoring and timing translations: one table of decoding methods, one timing harness, one definition of speed-up.

**Speed-up.** A speed-up is a ratio of throughputs: sentences per second of a method divided by sentences per second
of the baseline, both measured in the same run, on the same sentences, at the same batch size, with the methods of
one process timed interleaved (`time_interleaved`). At batch 1 this is the ratio of mean latencies.

`EMTrainer` validates through `validation_metrics` (decoding sharded over accelerate processes); a run's results
table (`batch1_speedups`), its test table (`evaluate_run`, examples/evaluate_em.py) and the benchmark
(`em_nat.benchmark`, examples/benchmark.py) decode through `decode_fn` and time through `time_interleaved`.
"""

import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import torch

from em_nat.metrics import corpus_bleu, corpus_multimodality, repeated_token_rate, structural_ids
from em_nat.rendering import markdown_of_test_results, round_label
from em_nat.run_dir import RunDir
from em_nat.trainers.candidates import length_cap, pad_rows, score_candidates, translate

BEAM_SIZE = 5
LENGTH_BEAM = 9


@dataclass(frozen=True)
class DecodingMethod:
    """One way to translate: which model, which runtime, which settings. `label` names it alone (benchmark tables),
    `decoding` beside its model's name (a run's test table: "AR, round 0 | beam 5")."""

    name: str
    label: str
    decoding: str
    model: str  # "ar" or "nat"
    runtime: str = "torch"  # "torch", "ct2-int8", "ct2-float32", "onnx-int8", "onnx-float32"
    settings: dict = field(default_factory=dict)


def _ct2(kind: str, beam: int) -> DecodingMethod:
    search = "greedy" if beam == 1 else f"beam {beam}"
    name = f"ct2_{kind}_{'greedy' if beam == 1 else f'beam{beam}'}"
    return DecodingMethod(
        name, f"CT2 {kind} {search}", f"CT2 {kind} {search}", "ar", f"ct2-{kind}", {"beam_size": beam}
    )


METHODS = {
    m.name: m
    for m in (
        _ct2("int8", 1),
        _ct2("int8", BEAM_SIZE),
        _ct2("float32", 1),
        _ct2("float32", BEAM_SIZE),
        DecodingMethod("ar_greedy", "HF AR greedy", "greedy", "ar", settings={"num_beams": 1}),
        DecodingMethod(
            "ar_beam5", f"HF AR beam {BEAM_SIZE}", f"beam {BEAM_SIZE}", "ar", settings={"num_beams": BEAM_SIZE}
        ),
        DecodingMethod("nat_argmax", "NAT argmax", "argmax", "nat", settings={"odd": False, "length_beam": 1}),
        DecodingMethod("nat_odd", "NAT + ODD", "ODD", "nat", settings={"odd": True, "length_beam": 1}),
        DecodingMethod(
            "nat_lb9_odd_rescore",
            f"NAT + length beam {LENGTH_BEAM} + ODD + AR rescoring",
            f"LB {LENGTH_BEAM} + ODD + AR rescoring",
            "nat",
            settings={"odd": True, "length_beam": LENGTH_BEAM, "rescore": True},
        ),
        # the NAT exported to ONNX Runtime (em_nat.export.OnnxNAT); ODD and length selection exact on top
        DecodingMethod(
            "onnx_int8_odd", "NAT + ODD, ONNX Runtime int8", "ODD, ONNX int8", "nat", "onnx-int8", {"odd": True}
        ),
        DecodingMethod(
            "onnx_float32_odd",
            "NAT + ODD, ONNX Runtime float32",
            "ODD, ONNX float32",
            "nat",
            "onnx-float32",
            {"odd": True},
        ),
        DecodingMethod(
            "onnx_int8_lb9_odd_ct2",
            f"NAT + length beam {LENGTH_BEAM} + ODD + CT2 int8 rescoring, ONNX Runtime int8",
            f"LB {LENGTH_BEAM} + ODD + CT2 int8 rescoring, ONNX int8",
            "nat",
            "onnx-int8",
            {"odd": True, "length_beam": LENGTH_BEAM, "rescore": "ct2-int8"},
        ),
    )
}
CT2_METHODS = tuple(name for name, m in METHODS.items() if m.runtime.startswith("ct2"))
ONNX_METHODS = tuple(name for name, m in METHODS.items() if m.runtime.startswith("onnx"))
TORCH_METHODS = tuple(name for name, m in METHODS.items() if m.runtime == "torch")
AR_METHODS = tuple(name for name in TORCH_METHODS if METHODS[name].model == "ar")
NAT_METHODS = tuple(name for name in TORCH_METHODS if METHODS[name].model == "nat")
# the PyTorch method an exported one was converted from: in float32 its outputs should be the same
HF_TWIN = {
    **{name: "ar_beam5" if METHODS[name].settings["beam_size"] > 1 else "ar_greedy" for name in CT2_METHODS},
    "onnx_int8_odd": "nat_odd",
    "onnx_float32_odd": "nat_odd",
    "onnx_int8_lb9_odd_ct2": "nat_lb9_odd_rescore",
}


def decode_fn(
    name: str, ar=None, nat=None, ar_kwargs: dict | None = None, rescore_alpha: float = 0.6, rescore_top_k=None
):
    """batch dict (input_ids, attention_mask) -> output ids, for a torch method of `METHODS`; rescoring methods
    rescore the NAT's `rescore_top_k` best length candidates (all when None) with `ar`."""
    method = METHODS.get(name)
    if method is None or method.runtime != "torch":
        raise ValueError(f"Unknown torch decoding method {name!r}; choose from {TORCH_METHODS}.")
    settings = dict(method.settings)
    if method.model == "ar":
        return lambda batch: ar.generate(**batch, do_sample=False, **settings, **(ar_kwargs or {}))
    if settings.pop("rescore", False):
        settings.update(rescorer=ar, rescore_alpha=rescore_alpha, rescore_top_k=rescore_top_k)
    return lambda batch: nat.generate(**batch, **settings)


def capped_ar_fn(name: str, ar, max_new_tokens: int, max_len_a: float = 0.0, max_len_b: int = 0):
    """AR decoding with a run's per-batch length cap (`length_cap`), as in its training and validation."""

    def fn(batch):
        cap = length_cap(batch["input_ids"].shape[1], max_new_tokens, max_len_a, max_len_b)
        return decode_fn(name, ar, None, {"max_new_tokens": cap})(batch)

    return fn


def ct2_decode_fn(translator, tokenizer, beam_size: int, max_new_tokens: int, max_len_a=0.0, max_len_b=0):
    """A CTranslate2 translator as a batch function returning id tensors like `generate()`'s (EOS-terminated,
    PAD-padded), with a run's length cap. Tokens travel as strings, so any vocabulary order works."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id

    def fn(batch):
        rows = [[t for t in row if t != pad] for row in batch["input_ids"].tolist()]
        cap = length_cap(batch["input_ids"].shape[1], max_new_tokens, max_len_a, max_len_b)
        tokens = [tokenizer.convert_ids_to_tokens(row) for row in rows]
        results = translator.translate_batch(tokens, beam_size=beam_size, max_decoding_length=cap)
        return pad_rows([tokenizer.convert_tokens_to_ids(r.hypotheses[0]) + [eos] for r in results], pad)

    return fn


def make_batches(ids: list[list[int]], batch_size: int, pad_token_id: int, device="cpu") -> list[dict]:
    """Consecutive batches of `batch_size` sequences, padded: input_ids and attention_mask."""
    batches = []
    for start in range(0, len(ids), batch_size):
        input_ids = pad_rows(ids[start : start + batch_size], pad_token_id).to(device)
        batches.append({"input_ids": input_ids, "attention_mask": input_ids.ne(pad_token_id).long()})
    return batches


# ---------------------------------------------------------------------------------------------------------------
# timing


def time_interleaved(fns: dict, batches, repeats: int = 1, warmup: int = 2, synchronize=None) -> dict:
    """Time every method over `batches`, interleaved: each repeat runs all methods back to back, so a drift in the
    machine's speed (shared CPUs) hits all of them alike. `warmup` untimed batches per method first. Returns per
    method: (median seconds of one pass over all batches, median seconds per batch, outputs of the last pass)."""
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


def time_methods(fns: dict, batches, repeats: int = 1, warmup: int = 2) -> dict:
    """`time_interleaved` for torch callables: inference mode, and GPU work waited for before reading the clock."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else None
    with torch.inference_mode():
        return time_interleaved(fns, batches, repeats, warmup, sync)


def speedup(sentences_per_s: float, baseline_sentences_per_s: float) -> float:
    """The one definition (module docstring): a ratio of throughputs measured in the same run."""
    return sentences_per_s / baseline_sentences_per_s


def batch1_speedups(pairs: dict, tokenizer, sources: list[str], max_length: int, warmup: int = 2) -> dict:
    """`{name: speed-up}` of each `(method_fn, baseline_fn)` pair at batch 1 over `sources` (truncated to
    `max_length` tokens, the models' positions), each pair timed interleaved (e.g. a round's NAT + ODD against the
    same round's AR beam)."""
    if not sources:
        return {name: float("nan") for name in pairs}
    ids = tokenizer(sources, truncation=True, max_length=max_length)["input_ids"]
    batches = make_batches(ids, 1, tokenizer.pad_token_id)
    result = {}
    for name, (fn, baseline) in pairs.items():
        timed = time_methods({"method": fn, "baseline": baseline}, batches, warmup=warmup)
        result[name] = speedup(len(ids) / timed["method"][0], len(ids) / timed["baseline"][0])
    return result


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
    False), CTranslate2 when installed."""
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


# ---------------------------------------------------------------------------------------------------------------
# a run on a test set


def load_run(run_dir):
    """The tokenizer, AR_0 and every finished round's NAT of a run, with each round's metrics."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from em_nat.modeling import NATForConditionalGeneration
    from em_nat.trainers import check_models_share_tokenizer

    run = RunDir(run_dir)
    rounds = run.require_finished_rounds()
    first_ar = run.model(rounds[0], "ar")
    tokenizer = AutoTokenizer.from_pretrained(first_ar)  # round 0 has no NAT without train_raw_nat
    ar = AutoModelForSeq2SeqLM.from_pretrained(first_ar).eval()
    nats = {
        t: NATForConditionalGeneration.from_pretrained(run.model(t, "nat")).eval()
        for t in rounds
        if run.has_model(t, "nat")
    }
    for nat in nats.values():
        check_models_share_tokenizer(ar, nat, tokenizer)
    return tokenizer, ar, nats, run.all_metrics()


def _ct2_functions(ar_dir, work_dir, tokenizer, max_new_tokens, max_len_a, max_len_b) -> dict:
    """name -> batch function of AR_0 in CTranslate2 (float32 and int8, greedy and beam 5), one intra-op thread
    (CT2's best on small CPUs at batch 1; the benchmark sweeps the settings); {} without ctranslate2."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        print("ctranslate2 is not installed: no CT2 rows (pip install 'em-nat[ct2]').")
        return {}
    from em_nat.export import convert_to_ct2, load_ct2_translator

    converted = os.path.join(work_dir, "ar-ct2")
    convert_to_ct2(ar_dir, converted, force=True)
    translators = {kind: load_ct2_translator(converted, compute_type=kind) for kind in ("float32", "int8")}
    fns = {}
    for name in CT2_METHODS:
        method = METHODS[name]
        translator = translators[method.runtime.split("-", 1)[1]]
        beam = method.settings["beam_size"]
        fns[name] = ct2_decode_fn(translator, tokenizer, beam, max_new_tokens, max_len_a, max_len_b)
    return fns


def evaluate_run(
    run_dir,
    sources: list[str],
    references: list[str],
    batch1_sentences: int = 100,
    batch_size: int = 128,
    alpha: float = 0.6,
    warmup: int = 2,
    ct2: bool = True,
) -> dict:
    """Score every finished round of a run on a test set: AR_0 (HF greedy and beam 5, and CTranslate2 when
    installed) and every round's NAT (argmax, ODD, length beam 9 + ODD + AR_0 rescoring). All of `sources` are
    decoded at `batch_size` (BLEU with signature, lowercased BLEU, repeated tokens, throughput) and the first
    `batch1_sentences` at batch 1; speed-ups are against HF AR beam 5 at the same batch size. The AR stops where it
    did in training (the run's `max_target_length` and `generation_max_len_a/b`)."""
    run = RunDir(run_dir)
    tokenizer, ar, nats, metrics = load_run(run)
    limit = ar.config.max_position_embeddings
    ids = tokenizer(sources, truncation=True, max_length=limit)["input_ids"]
    settings = run.settings()
    max_len_a, max_len_b = settings.get("generation_max_len_a", 0.0), settings.get("generation_max_len_b", 0)
    max_new = min(limit, settings.get("max_target_length", limit))
    fns = {name: capped_ar_fn(name, ar, max_new, max_len_a, max_len_b) for name in AR_METHODS}
    for t, nat in nats.items():
        fns.update({f"r{t}/{name}": decode_fn(name, ar, nat, rescore_alpha=alpha) for name in NAT_METHODS})
    if ct2:
        with tempfile.TemporaryDirectory(prefix="em-nat-eval-") as work_dir:  # translators hold the model in memory
            ar_dir = run.model(run.finished_rounds()[0], "ar")
            fns.update(_ct2_functions(ar_dir, work_dir, tokenizer, max_new, max_len_a, max_len_b))
    special, structural = set(tokenizer.all_special_ids), structural_ids(tokenizer)
    pad = tokenizer.pad_token_id
    big = time_methods(fns, make_batches(ids, batch_size, pad), repeats=1, warmup=warmup)
    small = time_methods(fns, make_batches(ids[:batch1_sentences], 1, pad), repeats=1, warmup=warmup)
    rows = []
    for name, (total, _, outputs) in big.items():
        out_rows = [row for out in outputs for row in out.tolist()]
        content = [[i for i in row if i not in special] for row in out_rows]
        texts = [text.strip() for text in tokenizer.batch_decode(content, skip_special_tokens=True)]
        round_index = int(name.split("/")[0][1:]) if "/" in name else None
        rows.append(
            {
                "name": name,
                "round": round_index,
                "model": "AR, round 0" if round_index is None else round_label(round_index),
                "decoding": METHODS[name.split("/")[-1]].decoding,
                "bleu": corpus_bleu(texts, references),
                "bleu_lowercase": corpus_bleu(texts, references, lowercase=True),
                "cm_train_targets": None if round_index is None else metrics[round_index].get("em/cm"),
                "repeat_rate": repeated_token_rate(out_rows, structural),
                f"sentences_per_s_batch{batch_size}": len(sources) / total,
                "sentences_per_s_batch1": min(batch1_sentences, len(sources)) / small[name][0],
            }
        )
    for key in (f"sentences_per_s_batch{batch_size}", "sentences_per_s_batch1"):
        base = next(r[key] for r in rows if r["name"] == "ar_beam5")
        for row in rows:
            row["speedup_vs_ar_beam5_" + key.rsplit("_", 1)[1]] = speedup(row[key], base)
    return {
        "run_dir": os.fspath(run_dir),
        "test_sentences": len(sources),
        "batch1_sentences": min(batch1_sentences, len(sources)),
        "batch_size": batch_size,
        "rescore_alpha": alpha,
        "machine": machine(),
        "rows": rows,
    }


def write_test_results(result: dict, run) -> str:
    """test_results.json and test_results.md in the run folder; returns the Markdown."""
    table = markdown_of_test_results(result)
    with open(RunDir(run).file("test_results.json"), "w") as handle:
        json.dump(result, handle, indent=1)
    with open(RunDir(run).file("test_results.md"), "w") as handle:
        handle.write(table + "\n")
    return table


def validation_metrics(
    ar, nat, tokenizer, accelerator, args, sources, references, valid_targets, train_sources, nat_train_targets
) -> dict:
    """A round's validation metrics, decoded sharded over `accelerator`'s processes: BLEU (sacreBLEU, signature kept)
    of the AR (beam `args.eval_num_beams`, the run's length cap) and of the NAT (argmax, ODD), the NAT outputs'
    repeated-token rate, the CM of the NAT's training targets (`train_sources` -> `nat_train_targets`) and of the
    valid references (`valid_targets`). `nat` None: the AR's BLEU only; no `sources`: the training CM only."""
    device = accelerator.device
    metrics = {}
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    decode = lambda rows: tokenizer.batch_decode(rows, skip_special_tokens=True)  # noqa: E731
    if sources:
        ar_out = translate(
            ar.to(device),
            sources,
            accelerator,
            pad,
            eos,
            args.generation_max_sentences,
            num_beams=args.eval_num_beams,
            max_new_tokens=args.max_target_length,
            max_len_a=args.generation_max_len_a,
            max_len_b=args.generation_max_len_b,
        )
        metrics["eval/bleu_ar_beam"] = corpus_bleu(decode(ar_out), references)
    if nat is not None:
        nat = nat.to(device)
        train_scores = score_candidates(
            nat,
            train_sources,
            [[t] for t in nat_train_targets],
            accelerator,
            pad,
            args.generation_max_sentences,
        )
        metrics["em/cm"] = corpus_multimodality([row[0] for row in train_scores])
        if sources:
            for name, odd in (("argmax", False), ("odd", True)):
                out = translate(
                    nat, sources, accelerator, pad, eos, args.generation_max_sentences, odd=odd, length_beam=1
                )
                metrics[f"eval/bleu_nat_{name}"] = corpus_bleu(decode(out), references)
                metrics[f"eval/repeat_rate_nat_{name}"] = repeated_token_rate(out)
            valid_scores = score_candidates(
                nat,
                sources,
                [[t] for t in valid_targets],
                accelerator,
                pad,
                args.generation_max_sentences,
            )
            metrics["eval/cm_valid"] = corpus_multimodality([row[0] for row in valid_scores])
    return metrics


MAX_LISTED_BLANKS = 10


def read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle]


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
