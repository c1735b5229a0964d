"""The EM trainer and its pieces (installed as em_nat.trainers)."""

from .arguments import EMTrainingArguments
from .candidates import generate_candidates, score_candidates, select_targets, translate
from .em_trainer import EMTrainer, check_models_share_tokenizer, make_accelerator
from .training import PhaseConfig, PhaseTrainer

__all__ = [
    "EMTrainer",
    "EMTrainingArguments",
    "PhaseConfig",
    "PhaseTrainer",
    "check_models_share_tokenizer",
    "generate_candidates",
    "make_accelerator",
    "score_candidates",
    "select_targets",
    "translate",
]
