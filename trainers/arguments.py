"""`EMTrainingArguments`: every setting of an EM run, a dataclass usable with `HfArgumentParser`."""

import importlib.util
from dataclasses import asdict, dataclass, field

import torch

from em_nat.export import QUANTIZATIONS
from em_nat.trainers.candidates import CANDIDATE_BACKENDS, CandidateSettings
from em_nat.trainers.glancing import parse_glancing_ratio
from em_nat.trainers.training import PhaseConfig

NAT_TARGETS = ("one_best", "previous_selection")

# Valid values of every numeric option: (lowest, highest, values allowed outside that range). None = unbounded.
# Checked in one place (`check_numeric_ranges`), where the arguments enter, with the option, value and range named.
NUMERIC_RANGES = {
    "num_rounds": (0, None, ()),
    "num_candidates": (1, None, ()),
    "candidate_beam_size": (1, None, ()),
    "ar_continue_max_steps": (1, None, (-1,)),
    "max_source_length": (1, None, ()),
    "max_target_length": (2, None, ()),
    "ar_learning_rate": (1e-12, None, ()),
    "nat_learning_rate": (1e-12, None, ()),
    "ar_max_steps": (1, None, (-1,)),
    "nat_max_steps": (1, None, (-1,)),
    "ar_num_epochs": (1e-9, None, ()),
    "nat_num_epochs": (1e-9, None, ()),
    "warmup_steps": (0, None, ()),
    "max_tokens": (1, None, ()),
    "gradient_accumulation_steps": (1, None, ()),
    "max_grad_norm": (0, None, ()),
    "label_smoothing": (0, 0.999, ()),
    "weight_decay": (0, None, ()),
    "eval_steps": (1, None, ()),
    "save_steps": (1, None, ()),
    "ar_average_checkpoints": (1, None, ()),
    "nat_average_checkpoints": (1, None, ()),
    "seed": (0, None, ()),
    "generation_max_sentences": (1, None, ()),
    "generation_max_len_a": (0, None, ()),
    "generation_max_len_b": (0, None, ()),
    "eval_num_beams": (1, None, ()),
    "eval_max_samples": (1, None, (-1,)),
}


def check_numeric_ranges(values: dict, ranges: dict) -> None:
    """Raise `ValueError` naming the option, its value and the valid range for the first value out of range."""
    for name, (low, high, special) in ranges.items():
        value = values[name]
        if value in special:
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
            extra = f" (or {', '.join(map(str, special))})" if special else ""
            raise ValueError(f"{name} must be {bounds}{extra}, got {value}.")


RESTART_CHOICES = ("both", "nat", "ar", "none")


def check_candidate_backend(backend: str, compute_type: str) -> None:
    """Refuse an unknown backend or weight type, or CTranslate2 when it is not installed, before any training."""
    if backend not in CANDIDATE_BACKENDS:
        raise ValueError(f"candidate_backend must be one of {CANDIDATE_BACKENDS}, got {backend!r}.")
    if compute_type not in QUANTIZATIONS:
        raise ValueError(f"candidate_compute_type must be one of {QUANTIZATIONS}, got {compute_type!r}.")
    if backend == "ctranslate2" and importlib.util.find_spec("ctranslate2") is None:
        raise ValueError(
            "candidate_backend='ctranslate2' needs CTranslate2, which is not installed: pip install 'em-nat[ct2]', "
            "or use candidate_backend='transformers'."
        )


@dataclass
class EMTrainingArguments:
    """Settings of [`EMTrainer`]. Fields prefixed `ar_` / `nat_` apply to one phase; the rest to both."""

    output_dir: str = field(metadata={"help": "Where each round's models, data and metrics are written."})
    num_rounds: int = field(default=2, metadata={"help": "EM rounds T after AR_0 (round 1 is sequence-level KD)."})
    num_candidates: int = field(default=20, metadata={"help": "N: AR beam hypotheses kept per source (paper: 20)."})
    candidate_beam_size: int = field(default=20, metadata={"help": "Beam width for the candidates; must be >= N."})
    candidate_backend: str = field(
        default="transformers",
        metadata={
            "help": "Who decodes the candidates: 'transformers' (generate()) or 'ctranslate2' (the AR converted "
            "each round; needs pip install 'em-nat[ct2]'; float32 gives generate()'s beams, int8 is faster on CPU)."
        },
    )
    candidate_compute_type: str = field(
        default="int8",
        metadata={"help": "CTranslate2 weight type of the candidate AR ('int8', 'float32', ...); ctranslate2 only."},
    )
    nat_targets: str = field(
        default="one_best",
        metadata={
            "help": "Routing: round t's NAT trains on the AR 1-best Y_t ('one_best', paper) or on the previous "
            "round's selection S_{t-1} ('previous_selection'; round 1 always uses Y_1)."
        },
    )
    restart: str = field(
        default="both",
        metadata={
            "help": "Which models restart from their initial weights each round: 'both' (official scripts), "
            "'nat', 'ar' or 'none'; the others continue from the previous round."
        },
    )
    ar_continue_max_steps: int = field(
        default=-1,
        metadata={
            "help": "AR updates in rounds >= 1 when the AR continues from the previous round; -1 = "
            "ar_max_steps / ar_num_epochs."
        },
    )
    train_final_ar: bool = field(
        default=True,
        metadata={
            "help": "Train the last round's AR on the last selection; it feeds no NAT of this run, so turning it "
            "off saves time (the round's AR folder then holds the previous AR)."
        },
    )
    train_initial_ar: bool = field(
        default=True, metadata={"help": "Train AR_0 on the real pairs; turn off when passing an already trained AR."}
    )
    train_raw_nat: bool = field(
        default=True, metadata={"help": "Also train a NAT on the raw pairs (round 0), the baseline EM must beat."}
    )
    source_lang: str = field(default="src", metadata={"help": "Source key in the 'translation' column."})
    target_lang: str = field(default="tgt", metadata={"help": "Target key in the 'translation' column."})
    max_source_length: int = field(default=128, metadata={"help": "Sources are truncated to this many tokens."})
    max_target_length: int = field(default=128, metadata={"help": "Targets and generations are capped here."})

    ar_learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate of the AR phase."})
    nat_learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate of the NAT phase."})
    ar_max_steps: int = field(default=-1, metadata={"help": "AR updates per phase; -1 uses ar_num_epochs."})
    nat_max_steps: int = field(default=-1, metadata={"help": "NAT updates per phase; -1 uses nat_num_epochs."})
    ar_num_epochs: float = field(default=10.0, metadata={"help": "AR epochs per phase when ar_max_steps is -1."})
    nat_num_epochs: float = field(default=10.0, metadata={"help": "NAT epochs per phase when nat_max_steps is -1."})
    warmup_steps: int = field(default=4000, metadata={"help": "Inverse-sqrt warm-up updates (paper: 4000)."})
    max_tokens: int = field(default=4096, metadata={"help": "Token budget of a training batch (padded tokens)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer update."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (paper: 1.0); 0 = off."})
    label_smoothing: float = field(default=0.1, metadata={"help": "AR label smoothing (the NAT's is in its config)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    eval_steps: int = field(default=500, metadata={"help": "Validation loss every this many updates."})
    save_steps: int = field(default=500, metadata={"help": "Resume checkpoint every this many updates."})
    keep_checkpoint: str = field(
        default="best", metadata={"help": "'best' (lowest validation loss) or 'last' model of each phase."}
    )
    nat_glancing_ratio: str = field(
        default="0",
        metadata={
            "help": "Glancing training of every NAT (GLAT, Qian et al. 2021): the glancing ratio, constant ('0.3') or "
            "annealed linearly over each NAT phase ('0.5:0.3', GLAT's default); '0' = vanilla NAT training."
        },
    )
    ar_average_checkpoints: int = field(
        default=1,
        metadata={
            "help": "The AR phase's result is the mean of the weights at its last k save points (every save_steps "
            "updates, the last update included); 1 = no averaging (keep_checkpoint decides)."
        },
    )
    nat_average_checkpoints: int = field(default=1, metadata={"help": "As ar_average_checkpoints, for the NAT phase."})
    mixed_precision: str = field(
        default="no", metadata={"help": "'no', 'bf16' or 'fp16' (fp16 needs a GPU; on CPU use bf16 or no)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, batching and dropout."})

    generation_max_sentences: int = field(default=64, metadata={"help": "Sources per candidate/eval batch."})
    generation_max_len_a: float = field(
        default=0.0,
        metadata={
            "help": "AR generation (candidates, validation) stops at max_len_a * longest source of the batch + "
            "max_len_b new tokens, at most max_target_length (fairseq's --max-len-a/b); 0 = max_target_length only."
        },
    )
    generation_max_len_b: int = field(default=10, metadata={"help": "See generation_max_len_a."})
    eval_num_beams: int = field(default=5, metadata={"help": "AR beam width when scoring BLEU on valid."})
    eval_max_samples: int = field(default=-1, metadata={"help": "Valid pairs used for BLEU and CM; -1 = all."})

    push_to_hub: bool = field(default=False, metadata={"help": "Push each round's NAT (and AR) to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo of the NAT, e.g. user/em-nat-en-de."})
    hub_ar_model_id: str | None = field(default=None, metadata={"help": "Hub repo of the AR; pushed only when given."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (defaults to the logged-in one)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repos private."})
    hub_license: str = field(default="apache-2.0", metadata={"help": "License written in the model card."})
    hub_dataset_name: str | None = field(default=None, metadata={"help": "Dataset named in the model card."})
    report_to: str = field(default="none", metadata={"help": "'none' or 'tensorboard' (accelerate tracker)."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over even if output_dir holds a run with other settings."}
    )

    def __post_init__(self):
        check_numeric_ranges(vars(self), NUMERIC_RANGES)
        parse_glancing_ratio(self.nat_glancing_ratio)
        if self.candidate_beam_size < self.num_candidates:
            raise ValueError(
                f"candidate_beam_size ({self.candidate_beam_size}) must be >= num_candidates "
                f"({self.num_candidates}): beam search returns at most beam-size hypotheses."
            )
        if self.generation_max_len_a < 0 or self.generation_max_len_b < 0:
            raise ValueError(
                f"generation_max_len_a ({self.generation_max_len_a}) and generation_max_len_b "
                f"({self.generation_max_len_b}) must be >= 0; generation_max_len_a=0 turns the cap off."
            )
        check_candidate_backend(self.candidate_backend, self.candidate_compute_type)
        if self.nat_targets not in NAT_TARGETS:
            raise ValueError(f"nat_targets must be one of {NAT_TARGETS}, got {self.nat_targets!r}.")
        if self.restart == "nar":  # the spelling before the rename to one name, NAT
            self.restart = "nat"
        if self.restart not in RESTART_CHOICES:
            raise ValueError(f"restart must be one of {RESTART_CHOICES}, got {self.restart!r}.")
        if self.keep_checkpoint not in ("best", "last"):
            raise ValueError(f"keep_checkpoint must be 'best' or 'last', got {self.keep_checkpoint!r}.")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}.")
        if self.mixed_precision == "fp16" and not torch.cuda.is_available():
            raise ValueError(
                "mixed_precision='fp16' needs a CUDA GPU and none is available (on CPU it would train in fp32 while "
                "the run records fp16); use 'bf16' or 'no'."
            )
        if self.report_to not in ("none", "tensorboard"):
            raise ValueError(f"report_to must be 'none' or 'tensorboard', got {self.report_to!r}.")
        if self.num_rounds < 0 or self.num_candidates < 1:
            raise ValueError(
                f"num_rounds must be >= 0 (0: round 0 only, e.g. to train a teacher AR) and num_candidates >= 1; got "
                f"num_rounds={self.num_rounds}, num_candidates={self.num_candidates}."
            )
        for name in ("ar_average_checkpoints", "nat_average_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (1 = no averaging), got {getattr(self, name)}.")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id (e.g. 'your-name/em-nat-en-de').")

    def restarts(self, name: str) -> bool:
        """Whether the "ar" or "nat" model restarts from its initial weights each round."""
        return self.restart in ("both", name)

    def candidate_settings(self) -> CandidateSettings:
        """The E-step's [`CandidateSettings`]."""
        return CandidateSettings(
            num_candidates=self.num_candidates,
            beam_size=self.candidate_beam_size,
            max_new_tokens=self.max_target_length,
            max_sentences=self.generation_max_sentences,
            max_len_a=self.generation_max_len_a,
            max_len_b=self.generation_max_len_b,
            backend=self.candidate_backend,
            compute_type=self.candidate_compute_type,
        )

    def phase_config(self, name: str, continued: bool = False) -> PhaseConfig:
        """The [`PhaseConfig`] of the "ar" or "nat" phase (`continued`: an AR continuing from the last round)."""
        max_steps = getattr(self, f"{name}_max_steps")
        if continued and name == "ar" and self.ar_continue_max_steps > 0:
            max_steps = self.ar_continue_max_steps
        return PhaseConfig(
            learning_rate=getattr(self, f"{name}_learning_rate"),
            warmup_steps=self.warmup_steps,
            max_steps=max_steps,
            num_epochs=getattr(self, f"{name}_num_epochs"),
            max_tokens=self.max_tokens,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            max_grad_norm=self.max_grad_norm,
            label_smoothing=self.label_smoothing,
            weight_decay=self.weight_decay,
            eval_steps=self.eval_steps,
            save_steps=self.save_steps,
            keep=self.keep_checkpoint,
            average_last=getattr(self, f"{name}_average_checkpoints"),
            glancing_ratio=parse_glancing_ratio(self.nat_glancing_ratio) if name == "nat" else (0.0, 0.0),
            seed=self.seed,
        )

    def run_fingerprint(self) -> dict:
        """The settings that decide a run's results: a resumed run must match them."""
        ignored = {
            "output_dir",
            "overwrite_output_dir",
            "push_to_hub",
            "hub_model_id",
            "hub_ar_model_id",
            "hub_token",
            "hub_private_repo",
            "hub_license",
            "hub_dataset_name",
            "report_to",
            "num_rounds",
            "eval_max_samples",
            "generation_max_sentences",
        }
        return {k: v for k, v in asdict(self).items() if k not in ignored}

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "hub_token"}
