"""What examples/train_em.py runs: its options and presets, the checks made before any work, the data and the
models the options name, and the local results written after training (results table, test table, model card).

Presets are JSON files of option names and values (examples/presets/*.json): `--preset NAME` or `--preset PATH`;
options given on the command line win over the preset's.
"""

import json
import logging
import os
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, HfArgumentParser

from em_nat.data import load_parallel_data
from em_nat.evaluation import batch1_speedups, decode_fn, evaluate_run, write_test_results
from em_nat.hub import write_model_card
from em_nat.models import build_ar_model, build_nat_model
from em_nat.rendering import results_table
from em_nat.run_dir import RunDir, modern_name, modernize
from em_nat.tokenization import train_tokenizer
from em_nat.trainers.arguments import EMTrainingArguments, check_numeric_ranges

DEFAULT_OUTPUT_DIR = "runs/em-synthetic"


def preset_names(preset_dir: str) -> list[str]:
    if not os.path.isdir(preset_dir):
        return []
    return sorted(name[: -len(".json")] for name in os.listdir(preset_dir) if name.endswith(".json"))


def load_preset(name_or_path: str, preset_dir: str) -> dict:
    """A preset's options: `<preset_dir>/<name>.json`, or any JSON file of option names and values. Options spelt
    the old way ('nar_max_steps') are read under today's names ('nat_max_steps')."""
    if name_or_path.endswith(".json"):
        path = name_or_path
    else:
        path = os.path.join(preset_dir, f"{name_or_path}.json")
    if not os.path.isfile(path):
        raise ValueError(
            f"--preset {name_or_path!r} is neither a preset name ({', '.join(preset_names(preset_dir))}) nor a "
            "JSON file."
        )
    with open(path) as handle:
        try:
            values = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"preset {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"preset {path} must hold a JSON object of option names and values.")
    return modernize(values)


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


def check_run_arguments(script, em, preset_dir: str) -> None:
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
                + _preset_that_makes(value, preset_dir)
            )
    if script.ar_model and os.path.isdir(script.ar_model):
        config = _saved_config(script.ar_model)
        if config.get("model_type") == "em_nat":
            raise ValueError(
                f"--ar_model {script.ar_model} holds a NAT (model_type 'em_nat'); pass an AR folder "
                "(an AutoModelForSeq2SeqLM such as round-0/ar of a run)."
            )
        _check_direction(script.ar_model, config, em)
    if not script.ar_model:
        for option in ("max_source_length", "max_target_length"):
            if getattr(em, option) > script.max_position_embeddings:
                raise ValueError(
                    f"--{option} ({getattr(em, option)}) exceeds --max_position_embeddings "
                    f"({script.max_position_embeddings}): the models could not embed such sequences. Lower "
                    f"--{option} or raise --max_position_embeddings."
                )


def _preset_that_makes(path: str, preset_dir: str) -> str:
    """' Train it first: ...' when a preset's run writes `path` (as multi30k-teacher-cpu writes the AR that
    multi30k-cpu starts from), else ''."""
    for name in preset_names(preset_dir):
        output_dir = load_preset(name, preset_dir).get("output_dir")
        if output_dir and os.path.normpath(path).startswith(os.path.normpath(output_dir) + os.sep):
            return f" Train it first: accelerate launch examples/train_em.py --preset {name}"
    return ""


def _looks_local(value: str) -> bool:
    return (
        value.startswith((".", "/", "~"))
        or os.sep in value.rstrip(os.sep).split(os.sep, 1)[-1]
        or os.path.exists(value)
    )


def _saved_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{folder} has no config.json: not a saved model folder (save_pretrained writes one).")
    with open(path) as handle:
        return json.load(handle)


def _check_direction(folder: str, config: dict, em) -> None:
    """A model saved by an em-nat run records the direction it translates (`source_lang`, `target_lang` in its
    config.json, see `EMTrainer`); starting a run of another direction from it would train on nonsense targets.
    Models from elsewhere record none and are not checked."""
    theirs = (config.get("source_lang"), config.get("target_lang"))
    ours = (em.source_lang, em.target_lang)
    if None in theirs or theirs == ours:
        return
    raise ValueError(
        f"--ar_model {folder} translates {theirs[0]}->{theirs[1]} (source_lang/target_lang in its config.json) but "
        f"this run translates {ours[0]}->{ours[1]}: its candidates would be translations in the wrong direction. "
        f"Train an AR for {ours[0]}->{ours[1]} (e.g. --preset multi30k-teacher-cpu --source_lang {ours[0]} "
        f"--target_lang {ours[1]} --output_dir runs/teacher-{ours[0]}-{ours[1]}) and pass its round-0/ar, or run "
        f"with --source_lang {theirs[0]} --target_lang {theirs[1]}."
    )


def _given_preset(argv) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return None


def parse_args(argv, preset_dir: str):
    """Parse the options of examples/train_em.py into `(ScriptArguments, EMTrainingArguments)`. A preset
    (`--preset`, or 'synthetic' when no data is named) supplies the defaults, so any option given on the command
    line wins. Options must be spelt in full (no prefix matching); the old spelling `--nar_*` is read as `--nat_*`.
    Bad values and combinations end the program with the parser's usage message, naming the option and the fix."""
    argv = [modern_option(arg) for arg in argv]
    preset = _given_preset(argv)
    names_data = any(a.split("=")[0] in ("--train", "--dataset_name") for a in argv)
    if preset is None and not names_data:
        preset = "synthetic"
    parser = HfArgumentParser((ScriptArguments, EMTrainingArguments), allow_abbrev=False)
    defaults = {"output_dir": DEFAULT_OUTPUT_DIR}
    if preset is not None:
        try:
            values = load_preset(preset, preset_dir)
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
        check_run_arguments(script, em, preset_dir)
    except ValueError as error:
        parser.error(str(error))
    return script, em


def modern_option(arg: str) -> str:
    """'--nar_max_steps=5' -> '--nat_max_steps=5': options spelt before the rename to one name, NAT."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg[2:].partition("=")
    return "--" + modern_name(name) + sep + value


def is_synthetic(script) -> bool:
    """No data named: the embedded synthetic task."""
    return script.train is None and script.dataset_name is None


def prepare_output_dir(em, accelerator) -> None:
    """Create the run folder; with --overwrite_output_dir empty it first, so the run starts truly fresh (not even
    the old run's tokenizer is reused)."""
    if accelerator.is_main_process:
        if em.overwrite_output_dir:
            RunDir(em.output_dir).remove_outputs()
        os.makedirs(em.output_dir, exist_ok=True)
    accelerator.wait_for_everyone()


def load_data(script, em):
    """The `DatasetDict` the options name: the synthetic task, local files or a `datasets` name."""
    if is_synthetic(script):
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
    """(tokenizer, AR, NAT): the given AR and its tokenizer, or a tokenizer trained on the train split (reused on
    resume) and a fresh AR; the NAT at the sizes given (or the AR's)."""
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
        tokenizer_dir = RunDir(em.output_dir).tokenizer_dir
        if script.tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(script.tokenizer)
        elif os.path.isdir(tokenizer_dir):  # resume: the tokenizer of this run
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        else:
            tokenizer = train_tokenizer(
                data["train"].select_columns(["translation"]),
                script.vocab_size,
                model_max_length=script.max_position_embeddings,
            )
            tokenizer.save_pretrained(tokenizer_dir)
        ar = None
    torch.manual_seed(em.seed)
    nat = build_nat_model(tokenizer, decoder_input=script.decoder_input, **sizes)
    if ar is None:
        ar = build_ar_model(tokenizer, nat.config)
    return tokenizer, ar, nat


def write_local_results(script, em, data) -> tuple[dict | None, str | None]:
    """The results table of the run's saved rounds (printed, results.md, results.json), then, with a test split, the
    test table (scored once, printed, test_results.{md,json}) and the last round's NAT model card. Returns (test
    result or None, the model cards' example sentence or None)."""
    run = RunDir(em.output_dir)
    metrics = run.all_metrics()
    eval_split = data["validation"] if "validation" in data else None
    sources = [p[em.source_lang] for p in eval_split["translation"][: script.speed_sentences]] if eval_split else []
    table = results_table(metrics, _nat_speedups(run, metrics, sources, em.eval_num_beams), em.eval_num_beams)
    with open(run.file("results.md"), "w") as handle:
        handle.write(table + "\n")
    with open(run.file("results.json"), "w") as handle:
        json.dump({f"round-{t}": m for t, m in metrics.items()}, handle, indent=1)
    print(table, flush=True)
    if "test" not in data:
        return None, (sources[0] if sources else None)
    pairs = data["test"]["translation"][: script.max_test_samples]
    test_sources = [p[em.source_lang] for p in pairs]
    result = evaluate_run(run, test_sources, [p[em.target_lang] for p in pairs])
    print(write_test_results(result, run), flush=True)
    if run.has_model(em.num_rounds, "nat"):
        write_model_card(run, em, result, example=test_sources[0])
    return result, test_sources[0]


def _nat_speedups(run, metrics, sources, num_beams) -> dict:
    """Per round with a NAT: NAT + ODD against the round's AR beam at batch 1 on `sources` (one definition of
    speed-up, `em_nat.evaluation`)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from em_nat.modeling import NATForConditionalGeneration

    pairs, tokenizer, limit = {}, None, None
    for t in sorted(metrics):
        if "eval/bleu_nat_odd" not in metrics[t]:
            continue
        ar = AutoModelForSeq2SeqLM.from_pretrained(run.model(t, "ar")).eval()
        nat = NATForConditionalGeneration.from_pretrained(run.model(t, "nat")).eval()
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(run.model(t, "nat"))
        positions = min(nat.config.max_position_embeddings, ar.config.max_position_embeddings)
        limit = positions if limit is None else min(limit, positions)
        ar_kwargs = {"max_new_tokens": positions}
        pairs[t] = (
            decode_fn("nat_odd", ar, nat),
            lambda b, ar=ar, kw=ar_kwargs: ar.generate(**b, num_beams=num_beams, **kw),
        )
    return batch1_speedups(pairs, tokenizer, sources, limit) if pairs else {}


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
