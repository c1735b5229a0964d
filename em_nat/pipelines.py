"""Bring back `pipeline("translation")`, removed in transformers 5, for the NAT and stock seq2seq models.

The shim is two explicit steps, done once on `import em_nat`: drop "translation" from transformers' list of removed
tasks, and register [`TranslationPipeline`] under it with `AutoModelForSeq2SeqLM` as the model class.
"""

from transformers import AutoModelForSeq2SeqLM
from transformers import pipelines as hf_pipelines
from transformers.pipelines import PIPELINE_REGISTRY

from .modeling import TranslationPipeline

TASK = "translation"


def register_translation_pipeline() -> None:
    """Make `pipeline("translation", model=..., tokenizer=...)` build a [`TranslationPipeline`]. Idempotent."""
    hf_pipelines.REMOVED_TASKS.pop(TASK, None)
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=TranslationPipeline, pt_model=AutoModelForSeq2SeqLM, type="text"
    )
