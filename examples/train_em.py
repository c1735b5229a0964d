"""Train a non-autoregressive translator with EM (Sun & Yang, ICML 2020) and print a results table.

With no arguments it runs the embedded default: a synthetic translation task with controlled multi-modality that
the package generates, about 10 minutes on a 2-core CPU:

    accelerate launch examples/train_em.py

Real data (local text pairs by prefix, TSV or JSONL files, or a `datasets` name), a pretrained AR, sizes, rounds:

    accelerate launch examples/train_em.py --train ../shared/data/multi30k_en_de/train \
        --validation ../shared/data/multi30k_en_de/valid --source_lang en --target_lang de \
        --output_dir runs/multi30k --num_rounds 2 --num_candidates 20 --d_model 256 --encoder_layers 5
    accelerate launch examples/train_em.py --dataset_name wmt16 --dataset_config de-en --source_lang en \
        --target_lang de --ar_model Helsinki-NLP/opus-mt-en-de --train_initial_ar false
    # several processes (CPU): python -m torch.distributed.run --nproc_per_node 2 examples/train_em.py ...

Every `EMTrainingArguments` field is an option (`--help`). Re-running the same command resumes an interrupted run.

Output: progress bars (redrawn at most once a minute when stderr is not a terminal), one line per phase, and the
results tables on the console; everything else (library messages, checkpoint saves, per-update losses) in
`<output_dir>/train.log`. With `--push_to_hub` the rounds are pushed last, after the results, the test scores and the
model card are written; a failed push is reported at the end (exit status 1) and the same command pushes what is
still pending, without training again.
"""

import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
from em_nat.trainers import make_accelerator
from em_nat.trainers.arguments import check_numeric_ranges
from em_nat.trainers.em_trainer import remove_run_outputs
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, HfArgumentParser

import em_nat
from em_nat import EMTrainer, EMTrainingArguments
from em_nat.data import load_parallel_data
from em_nat.hub import HubPushError
from em_nat.logging_setup import run_logging

DEFAULT_OUTPUT_DIR = "runs/em-synthetic"

PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")


def preset_names() -> list[str]:
    return sorted(name[: -len(".json")] for name in os.listdir(PRESET_DIR) if name.endswith(".json"))


def load_preset(name_or_path: str) -> dict:
    """A preset's options: `examples/presets/<name>.json`, or any JSON file of option names and values."""
    path = name_or_path if name_or_path.endswith(".json") else os.path.join(PRESET_DIR, f"{name_or_path}.json")
    if not os.path.isfile(path):
        raise ValueError(
            f"--preset {name_or_path!r} is neither a preset name ({', '.join(preset_names())}) nor a JSON file."
        )
    with open(path) as handle:
        try:
            values = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"preset {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"preset {path} must hold a JSON object of option names and values.")
    return values


@dataclass
class ScriptArguments:
    """Data, tokenizer and model options of the example (EM options are `EMTrainingArguments`)."""

    preset: str | None = field(
        default=None,
        metadata={
            "help": "Settings of a measured run: a name from examples/presets/ ('synthetic', the default without data "
            "options; 'multi30k-teacher-cpu'; 'multi30k-cpu'; 'multi30k-gpu') or the path of a JSON file of option "
            "names and values. Options given on the command line override the preset's.",
        },
    )
    train: str | None = field(
        default=None,
        metadata={"help": "Train data: a prefix (PREFIX.<lang> files), 'src_file,tgt_file', a .tsv or a .jsonl file."},
    )
    validation: str | None = field(default=None, metadata={"help": "Validation data, same forms as --train."})
    test: str | None = field(
        default=None, metadata={"help": "Test data, same forms as --train; scored once, after the last round."}
    )
    data_format: str | None = field(default=None, metadata={"help": "Force 'text', 'tsv' or 'jsonl'."})
    dataset_name: str | None = field(default=None, metadata={"help": "A datasets name or saved folder."})
    dataset_config: str | None = field(default=None, metadata={"help": "Config of --dataset_name."})
    drop_empty: bool = field(
        default=False, metadata={"help": "Drop pairs with an empty side (counted in the log) instead of stopping."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N pairs of each split."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Score only the first N test pairs."})
    synthetic_num_train: int = field(default=12000, metadata={"help": "Training pairs of the synthetic task."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic task."})
    ar_model: str | None = field(
        default=None,
        metadata={"help": "Pretrained AR (name or path); its tokenizer is used and the NAT is built on it."},
    )
    tokenizer: str | None = field(default=None, metadata={"help": "Pretrained tokenizer (name or path)."})
    vocab_size: int = field(default=8000, metadata={"help": "Size of the joint tokenizer trained on train."})
    d_model: int = field(default=256, metadata={"help": "Hidden size of both models."})
    encoder_layers: int = field(default=5, metadata={"help": "Encoder layers of both models."})
    decoder_layers: int = field(default=5, metadata={"help": "Decoder layers of both models."})
    attention_heads: int = field(default=4, metadata={"help": "Attention heads of both models."})
    ffn_dim: int = field(default=1024, metadata={"help": "Feed-forward size of both models."})
    max_position_embeddings: int = field(default=256, metadata={"help": "Longest source / target."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout of both models."})
    decoder_input: str = field(default="positional", metadata={"help": "'positional' or 'uniform_copy'."})
    speed_sentences: int = field(default=50, metadata={"help": "Validation sentences timed for the speed-up."})

    def __post_init__(self):
        check_numeric_ranges(vars(self), SCRIPT_RANGES)
        if self.decoder_input not in ("positional", "uniform_copy"):
            raise ValueError(f"decoder_input must be 'positional' or 'uniform_copy', got {self.decoder_input!r}.")


SCRIPT_RANGES = {
    "synthetic_num_train": (1, None, ()),
    "synthetic_seed": (0, None, ()),
    "max_train_samples": (1, None, (None,)),
    "max_test_samples": (1, None, (None,)),
    "vocab_size": (5, None, ()),
    "d_model": (1, None, ()),
    "encoder_layers": (1, None, ()),
    "decoder_layers": (1, None, ()),
    "attention_heads": (1, None, ()),
    "ffn_dim": (1, None, ()),
    "max_position_embeddings": (2, None, ()),
    "dropout": (0, 0.99, ()),
    "speed_sentences": (0, None, ()),
}


def check_run_arguments(script, em) -> None:
    """Refuse option combinations that would fail late or silently give a wrong result, before any work."""
    if not em.train_initial_ar and not script.ar_model:
        raise ValueError(
            "--train_initial_ar false needs --ar_model PATH (the trained AR to start from); without it a random AR "
            "would make the round-1 targets."
        )
    if os.path.exists(em.output_dir) and not os.path.isdir(em.output_dir):
        raise ValueError(f"--output_dir {em.output_dir} is a file; give a folder (new or holding this run).")
    for option in ("ar_model", "tokenizer"):
        value = getattr(script, option)
        if value and _looks_local(value) and not os.path.isdir(value):
            raise ValueError(
                f"--{option} {value}: no such folder (a local path; Hub names look like 'user/name')."
                + _preset_that_makes(value)
            )
    if script.ar_model and os.path.isdir(script.ar_model):
        kind = _model_type(script.ar_model)
        if kind == "em_nat":
            raise ValueError(
                f"--ar_model {script.ar_model} holds a NAT (model_type 'em_nat'); pass an AR folder "
                "(an AutoModelForSeq2SeqLM such as round-0/ar of a run)."
            )
    if not script.ar_model:
        for option in ("max_source_length", "max_target_length"):
            if getattr(em, option) > script.max_position_embeddings:
                raise ValueError(
                    f"--{option} ({getattr(em, option)}) exceeds --max_position_embeddings "
                    f"({script.max_position_embeddings}): the models could not embed such sequences. Lower "
                    f"--{option} or raise --max_position_embeddings."
                )


def _preset_that_makes(path: str) -> str:
    """' Train it first: ...' when a preset's run writes `path` (as multi30k-teacher-cpu writes the AR that
    multi30k-cpu starts from), else ''."""
    for name in preset_names():
        output_dir = load_preset(name).get("output_dir")
        if output_dir and os.path.normpath(path).startswith(os.path.normpath(output_dir) + os.sep):
            return f" Train it first: accelerate launch examples/train_em.py --preset {name}"
    return ""


def _looks_local(value: str) -> bool:
    return (
        value.startswith((".", "/", "~"))
        or os.sep in value.rstrip(os.sep).split(os.sep, 1)[-1]
        or os.path.exists(value)
    )


def _model_type(folder: str) -> str | None:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{folder} has no config.json: not a saved model folder (save_pretrained writes one).")
    with open(path) as handle:
        return json.load(handle).get("model_type")


def _given_preset(argv) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return None


def parse_args(argv):
    """Parse the options; a preset (`--preset`, or 'synthetic' when no data is named) supplies the defaults, so any
    option given on the command line wins. Options must be spelt in full (no prefix matching)."""
    argv = list(argv)
    preset = _given_preset(argv)
    names_data = any(a.split("=")[0] in ("--train", "--dataset_name") for a in argv)
    if preset is None and not names_data:
        preset = "synthetic"
    parser = HfArgumentParser((ScriptArguments, EMTrainingArguments), allow_abbrev=False)
    defaults = {"output_dir": DEFAULT_OUTPUT_DIR}
    if preset is not None:
        try:
            values = load_preset(preset)
        except ValueError as error:
            parser.error(str(error))
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"preset {preset!r} sets unknown options {unknown}; see --help for the names.")
        defaults.update(values)
    parser.set_defaults(**defaults)
    for action in parser._actions:  # a preset fills in required options (output_dir)
        if action.dest in defaults:
            action.required = False
    try:
        script, em = parser.parse_args_into_dataclasses(argv)
        check_run_arguments(script, em)
    except ValueError as error:
        parser.error(str(error))
    return script, em, script.train is None and script.dataset_name is None


def load_data(script, em, synthetic):
    if synthetic:
        from em_nat.synthetic import SyntheticTaskConfig, build_synthetic_task

        return build_synthetic_task(
            SyntheticTaskConfig(seed=script.synthetic_seed, num_train=script.synthetic_num_train)
        )
    split = lambda value: tuple(value.split(",")) if value and "," in value else value  # noqa: E731
    return load_parallel_data(
        train=split(script.train),
        validation=split(script.validation),
        test=split(script.test),
        source_lang=em.source_lang,
        target_lang=em.target_lang,
        dataset_name=script.dataset_name,
        dataset_config=script.dataset_config,
        format=script.data_format,
        max_samples=script.max_train_samples,
        drop_empty=script.drop_empty,
    )


def build_models(script, em, data):
    sizes = dict(
        d_model=script.d_model,
        encoder_layers=script.encoder_layers,
        decoder_layers=script.decoder_layers,
        encoder_attention_heads=script.attention_heads,
        decoder_attention_heads=script.attention_heads,
        encoder_ffn_dim=script.ffn_dim,
        decoder_ffn_dim=script.ffn_dim,
        max_position_embeddings=script.max_position_embeddings,
        dropout=script.dropout,
    )
    if script.ar_model:
        tokenizer = AutoTokenizer.from_pretrained(script.tokenizer or script.ar_model)
        ar = AutoModelForSeq2SeqLM.from_pretrained(script.ar_model)
    else:
        tokenizer_dir = os.path.join(em.output_dir, "tokenizer")
        if script.tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(script.tokenizer)
        elif os.path.isdir(tokenizer_dir):  # resume: the tokenizer of this run
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        else:
            tokenizer = em_nat.train_tokenizer(
                data["train"].select_columns(["translation"]),
                script.vocab_size,
                model_max_length=script.max_position_embeddings,
            )
            tokenizer.save_pretrained(tokenizer_dir)
        ar = None
    torch.manual_seed(em.seed)
    nat = em_nat.build_nat_model(tokenizer, decoder_input=script.decoder_input, **sizes)
    if ar is None:
        ar = em_nat.build_ar_model(tokenizer, nat.config)
    return tokenizer, ar, nat


@torch.inference_mode()
def speedup(ar, nat, tokenizer, sources, num_beams):
    """NAT (ODD) vs AR (beam) latency at batch 1 on the same sentences, interleaved; median ratio."""
    ratios = []
    for text in sources:
        batch = tokenizer([text], return_tensors="pt", truncation=True, max_length=nat.config.max_position_embeddings)
        batch.pop("token_type_ids", None)
        t0 = time.perf_counter()
        ar.generate(**batch, num_beams=num_beams, max_new_tokens=nat.config.max_position_embeddings)
        t1 = time.perf_counter()
        nat.generate(**batch)
        ratios.append((t1 - t0) / (time.perf_counter() - t1))
    return statistics.median(ratios) if ratios else float("nan")


def results_table(metrics, output_dir, tokenizer, sources, num_beams):
    """AR; NAT on raw data; NAT after each round: BLEU, CM, repeated tokens, speed-up vs the round's AR."""
    lines = [
        "| model | BLEU (AR beam / NAT ODD) | BLEU argmax | CM of training targets | CM valid | repeats (argmax) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    signature = None
    for round_name in sorted(metrics, key=lambda r: int(r.split("-")[1])):
        m, t = metrics[round_name], int(round_name.split("-")[1])
        if "eval/bleu_ar_beam" in m and t == 0:
            lines.append(
                f"| AR_0 (beam {num_beams}) | {m['eval/bleu_ar_beam']['score']:.2f} | - | - | - | - | 1.00x |"
            )
            signature = m["eval/bleu_ar_beam"]["signature"]
        if "eval/bleu_nar_odd" not in m:
            continue
        label = "NAT, raw data" if t == 0 else ("NAT, round 1 (KD)" if t == 1 else f"NAT, round {t} (EM)")
        folder = os.path.join(output_dir, round_name)
        ar = AutoModelForSeq2SeqLM.from_pretrained(os.path.join(folder, "ar")).eval()
        nat = em_nat.NATForConditionalGeneration.from_pretrained(os.path.join(folder, "nar")).eval()
        speed = speedup(ar, nat, tokenizer, sources, num_beams)
        lines.append(
            f"| {label} | {m['eval/bleu_nar_odd']['score']:.2f} | {m['eval/bleu_nar_argmax']['score']:.2f} | "
            f"{m['em/cm']:.3f} | {m['eval/cm_valid']:.3f} | {100 * m['eval/repeat_rate_nar_argmax']:.1f}% | "
            f"{speed:.1f}x |"
        )
    if signature:
        lines += ["", f"sacreBLEU signature: {signature}"]
    minutes = minutes_by_phase(metrics)
    if minutes:
        lines += ["", "Minutes by phase (wall clock): " + minutes]
    return "\n".join(lines)


PHASE_NAMES = {"ar": "AR training", "nar": "NAT training", "candidates": "AR candidates", "selection": "selection"}


def minutes_by_phase(metrics) -> str:
    """'AR training 0.0, NAT training 52.3, ...; total 80.1' from the rounds' `time/<phase>_seconds` ('' if none)."""
    seconds = {}
    for m in metrics.values():
        for key, value in m.items():
            if key.startswith("time/") and key.endswith("_seconds"):
                phase = key[len("time/") : -len("_seconds")]
                seconds[phase] = seconds.get(phase, 0.0) + value
    if not seconds:
        return ""
    parts = [f"{PHASE_NAMES.get(p, 'evaluation' if p == 'evaluate' else p)} {v / 60:.1f}" for p, v in seconds.items()]
    return ", ".join(parts) + f"; total {sum(seconds.values()) / 60:.1f}"


def run(argv):
    """Train (or resume), write and print the results, score the test split, write the model card; then push when
    asked. Local work always comes first: a failed push raises `HubPushError` only after all of it is written.
    Console and log file as the module docstring says (`em_nat.logging_setup.run_logging`)."""
    script, em, synthetic = parse_args(argv)
    accelerator = make_accelerator(em)
    if accelerator.is_main_process:
        if em.overwrite_output_dir:  # start truly fresh: not even the old run's tokenizer is reused
            remove_run_outputs(em.output_dir)
        os.makedirs(em.output_dir, exist_ok=True)
    accelerator.wait_for_everyone()
    with run_logging(em.output_dir, main_process=accelerator.is_main_process):
        use_all_cores_when_alone()
        data = load_data(script, em, synthetic)
        tokenizer, ar, nat = build_models(script, em, data)
        eval_split = data["validation"] if "validation" in data else None
        trainer = EMTrainer(ar, nat, tokenizer, data["train"], eval_split, args=em, accelerator=accelerator)
        metrics = trainer.train(push=False)  # pushes come last, below
        test_result, example = None, None
        if accelerator.is_main_process:
            test_result, example = write_local_results(script, em, data, metrics, tokenizer, eval_split)
        if em.push_to_hub:
            trainer.push(test_result=test_result, example=example)  # main process only; HubPushError if pending
    return metrics if accelerator.is_main_process else None


def write_local_results(script, em, data, metrics, tokenizer, eval_split):
    """The results table (printed, results.md, results.json), then the test scores and the last round's model card
    when there is a test split. Returns (test result or None, the model cards' example sentence or None)."""
    sources = [p[em.source_lang] for p in eval_split["translation"][: script.speed_sentences]] if eval_split else []
    table = results_table(metrics, em.output_dir, tokenizer, sources, em.eval_num_beams)
    with open(os.path.join(em.output_dir, "results.md"), "w") as handle:
        handle.write(table + "\n")
    with open(os.path.join(em.output_dir, "results.json"), "w") as handle:
        json.dump(metrics, handle, indent=1)
    print(table, flush=True)
    if "test" not in data:
        return None, (sources[0] if sources else None)
    test_table, test_result, example = score_test_set(script, em, data["test"])
    print(test_table, flush=True)
    return test_result, example


def score_test_set(script, em, test):
    """Score every round on the test split once (examples/evaluate_em.py) and write the last round's NAT model card
    with those results (`write_model_card`). Returns (the Markdown table, the result, the card's example)."""
    from evaluate_em import evaluate_run, write_results  # examples/evaluate_em.py

    pairs = test["translation"][: script.max_test_samples]
    sources = [p[em.source_lang] for p in pairs]
    result = evaluate_run(em.output_dir, sources, [p[em.target_lang] for p in pairs])
    table = write_results(result, em.output_dir)
    if os.path.isdir(os.path.join(em.output_dir, f"round-{em.num_rounds}", "nar")):
        write_model_card(em, result, example=sources[0])
    return table, result, sources[0]


def write_model_card(em, test_result=None, example="a source sentence") -> str:
    """Write the last round's NAT model card, the card a push uploads, with the run's test results when given, to
    `round-<T>/nar/README.md`; returns its path."""
    from em_nat.hub import build_model_card

    last = em.num_rounds
    with open(os.path.join(em.output_dir, f"round-{last}", "metrics.json")) as handle:
        metrics = json.load(handle)
    repo_id = em.hub_model_id or f"em-nat-{os.path.basename(os.path.normpath(em.output_dir))}"
    card = build_model_card(last, em, metrics, repo_id, kind="nat", test_result=test_result, example=example)
    path = os.path.join(em.output_dir, f"round-{last}", "nar", "README.md")
    card.save(path)
    return path


def run_demo_for_benchmark():
    """Run (or resume) the embedded default; return (AR folder, NAT folder, source file, reference files) of its
    last round and the synthetic test split (all its references, one file per reference)."""
    from em_nat.synthetic import SyntheticTaskConfig, build_synthetic_task

    run([])
    preset = load_preset("synthetic")
    last = os.path.join(DEFAULT_OUTPUT_DIR, f"round-{preset['num_rounds']}")
    test = build_synthetic_task(SyntheticTaskConfig(num_train=preset["synthetic_num_train"]))["test"]
    src = os.path.join(DEFAULT_OUTPUT_DIR, "test.src")
    with open(src, "w") as handle:
        handle.writelines(pair["src"] + "\n" for pair in test["translation"])
    width = max(len(refs) for refs in test["references"])
    refs = [os.path.join(DEFAULT_OUTPUT_DIR, f"test.ref{k}") for k in range(width)]
    for k, path in enumerate(refs):
        with open(path, "w") as handle:
            handle.writelines((r[k] if k < len(r) else "") + "\n" for r in test["references"])
    return os.path.join(last, "ar"), os.path.join(last, "nar"), src, refs


def use_all_cores_when_alone():
    """`accelerate launch` without a config starts one process with OMP_NUM_THREADS=1 on a machine without a GPU,
    which halves training speed on a 2-core CPU. A lone CPU process launched that way uses every core instead;
    pass `--num_cpu_threads_per_process N` to `accelerate launch` to choose another count."""
    launched_by_accelerate = any(key.startswith("ACCELERATE_") for key in os.environ)
    alone = int(os.environ.get("WORLD_SIZE", "1")) == 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if launched_by_accelerate and alone and os.environ.get("OMP_NUM_THREADS") == "1" and cores > 1:
        if not torch.cuda.is_available():
            torch.set_num_threads(cores)
            logging.getLogger(__name__).info("one CPU process: using %d threads (accelerate had set 1)", cores)


def main():
    try:
        run(sys.argv[1:])
    except HubPushError as error:  # raised after every local output is written
        sys.exit(f"Hub push failed: {error}")


if __name__ == "__main__":
    main()
