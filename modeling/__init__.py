"""The NAT model, Hub-portable: config, modeling, decoding and the translation pipeline (installed as em_nat.modeling)."""

from .configuration_nat import NATConfig
from .generation_config_nat import NATGenerationConfig
from .modeling_nat import (
    NATForConditionalGeneration,
    NATGenerateOutput,
    NATModel,
    NATModelOutput,
    NATOutput,
    NATPreTrainedModel,
)
from .pipeline_translation import TranslationPipeline, check_tokenizer_compatible

__all__ = [
    "NATConfig",
    "NATForConditionalGeneration",
    "NATGenerateOutput",
    "NATGenerationConfig",
    "NATModelOutput",
    "NATModel",
    "NATOutput",
    "NATPreTrainedModel",
    "TranslationPipeline",
    "check_tokenizer_compatible",
]
