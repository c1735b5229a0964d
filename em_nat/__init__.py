"""em-nat: non-autoregressive translation trained by EM with a stock seq2seq AR partner (Sun & Yang, ICML 2020).

Importing the package registers the NAT with the Auto classes (`AutoConfig`, `AutoModel`, `AutoModelForSeq2SeqLM`)
and the `"translation"` pipeline task.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from .metrics import load_metric
from .modeling import (
    NATConfig,
    NATForConditionalGeneration,
    NATGenerateOutput,
    NATModel,
    NATModelOutput,
    NATOutput,
    NATPreTrainedModel,
    TranslationPipeline,
    check_tokenizer_compatible,
)
from .models import build_ar_model, build_nat_model
from .pipelines import register_translation_pipeline
from .tokenization import train_tokenizer
from .trainers import EMTrainer, EMTrainingArguments

__version__ = "0.1.0"


def _register_auto_classes() -> None:
    AutoConfig.register(NATConfig.model_type, NATConfig, exist_ok=True)
    AutoModel.register(NATConfig, NATModel, exist_ok=True)
    AutoModelForSeq2SeqLM.register(NATConfig, NATForConditionalGeneration, exist_ok=True)
    # save_pretrained then writes auto_map and copies the modeling files for trust_remote_code users
    NATConfig.register_for_auto_class()
    NATModel.register_for_auto_class("AutoModel")
    NATForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")


_register_auto_classes()
register_translation_pipeline()

__all__ = [
    "EMTrainer",
    "EMTrainingArguments",
    "NATConfig",
    "NATForConditionalGeneration",
    "NATGenerateOutput",
    "NATModelOutput",
    "NATModel",
    "NATOutput",
    "NATPreTrainedModel",
    "TranslationPipeline",
    "build_ar_model",
    "build_nat_model",
    "check_tokenizer_compatible",
    "load_metric",
    "register_translation_pipeline",
    "train_tokenizer",
]
