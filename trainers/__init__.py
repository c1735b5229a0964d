"""The EM trainer and its pieces (installed as em_nat.trainers)."""

from em_nat.trainers.arguments import EMTrainingArguments
from em_nat.trainers.candidates import generate_candidates, score_candidates, select_targets, translate
from em_nat.trainers.em_trainer import EMTrainer, check_models_share_tokenizer, make_accelerator
from em_nat.trainers.training import PhaseConfig, PhaseTrainer

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
