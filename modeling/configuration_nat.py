"""Configuration of the non-autoregressive transformer (NAT) of Sun & Yang (ICML 2020), section "The NAR model".

The size names are those of stock seq2seq configs (`MarianConfig`, `BartConfig`), so that an AR partner and a NAT
can be sized alike. Decoding knobs (length beam, ODD, AR rescoring) are *not* here: they live in the generation
config saved with the model (`NATGenerationConfig`, generation_config_nat.py).
"""

import copy

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

DECODER_INPUTS = ("positional", "uniform_copy")
# Written into every saved config.json: where em_nat is not installed, `pipeline("translation", model=folder,
# trust_remote_code=True)` finds the pipeline class in the folder. The installed package registers the task itself.
TRANSLATION_PIPELINE = {
    "translation": {
        "impl": "pipeline_translation.TranslationPipeline",
        "pt": ["AutoModelForSeq2SeqLM"],
        "tf": [],
        "type": "text",
    }
}
LOADED_AS_REMOTE_CODE = not __name__.startswith("em_nat.")


@strict
class NATConfig(PreTrainedConfig):
    r"""
    Configuration of [`NATForConditionalGeneration`]. Defaults are the paper's small (IWSLT) configuration.

    Args:
        vocab_size (`int`): size of the joint source/target vocabulary (one embedding matrix is shared by the
            encoder input, the decoder input and the output projection).
        d_model (`int`): hidden size.
        encoder_layers / decoder_layers (`int`): number of layers. The paper's NAT decoder is one layer deeper than
            its AR partner's; set `decoder_layers` accordingly.
        encoder_attention_heads / decoder_attention_heads (`int`): heads; must divide `d_model`.
        encoder_ffn_dim / decoder_ffn_dim (`int`): feed-forward inner sizes.
        max_position_embeddings (`int`): longest source (without the length slot) and longest target (with EOS).
        num_length_classes (`int`, *optional*): classes of the length classifier (target length including EOS).
            Defaults to `max_position_embeddings + 1`, so every decodable length can be predicted.
        length_loss_weight (`float`): weight of the length loss added to the token loss (paper: 0.1).
        length_label_smoothing (`float`): label smoothing of the length loss (paper: 0.1).
        label_smoothing (`float`): label smoothing of the token loss (paper: 0.1).
        decoder_input (`str`): `"positional"` (paper: PAD embedding + learned positions) or `"uniform_copy"`
            (source embeddings copied uniformly over the target positions, Gu et al. 2018, + positions).
        dropout / attention_dropout / activation_dropout (`float`): dropout rates.
        activation_function (`str`): `"relu"` or `"gelu"`.
        init_std (`float`): standard deviation of the normal initialisation.
        scale_embedding (`bool`): multiply token embeddings by sqrt(d_model).
    """

    model_type = "em_nat"
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "encoder_layers",
    }

    vocab_size: int = 8000
    d_model: int = 256
    encoder_layers: int = 5
    decoder_layers: int = 5
    encoder_attention_heads: int = 4
    decoder_attention_heads: int = 4
    encoder_ffn_dim: int = 1024
    decoder_ffn_dim: int = 1024
    max_position_embeddings: int = 256
    num_length_classes: int | None = None
    length_loss_weight: float | int = 0.1
    length_label_smoothing: float | int = 0.1
    label_smoothing: float | int = 0.1
    decoder_input: str = "positional"
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.0
    activation_dropout: float | int = 0.0
    activation_function: str = "relu"
    init_std: float = 0.02
    scale_embedding: bool = True
    is_encoder_decoder: bool = True
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    decoder_start_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if self.num_length_classes is None:
            self.num_length_classes = self.max_position_embeddings + 1
        kwargs.pop("custom_pipelines", None)
        self.check_sizes()  # a plain ValueError here, before the strict validators wrap errors in their own type
        super().__post_init__(**kwargs)
        if LOADED_AS_REMOTE_CODE:  # installed em_nat serves the task natively, with no trust_remote_code needed
            self.custom_pipelines = copy.deepcopy(TRANSLATION_PIPELINE)  # pipeline() rewrites it in place

    def to_dict(self):
        output = super().to_dict()
        output["custom_pipelines"] = copy.deepcopy(TRANSLATION_PIPELINE)
        return output

    def check_sizes(self):
        """Reject sizes the model cannot be built or trained with, naming the fix."""
        for name in (
            "vocab_size",
            "d_model",
            "encoder_layers",
            "decoder_layers",
            "encoder_attention_heads",
            "decoder_attention_heads",
            "encoder_ffn_dim",
            "decoder_ffn_dim",
            "max_position_embeddings",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"NATConfig.{name} must be a positive integer, got {getattr(self, name)}.")
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if self.d_model % heads != 0:
                raise ValueError(
                    f"NATConfig: d_model ({self.d_model}) must be divisible by {side}_attention_heads ({heads}); "
                    f"choose a head count that divides d_model, e.g. {_divisor_near(self.d_model, heads)}."
                )
        if self.num_length_classes < self.max_position_embeddings + 1:
            raise ValueError(
                f"NATConfig: num_length_classes ({self.num_length_classes}) must be at least max_position_embeddings"
                f" + 1 ({self.max_position_embeddings + 1}) so that every target length the decoder can produce can "
                "be predicted; raise num_length_classes or leave it unset."
            )
        if self.decoder_input not in DECODER_INPUTS:
            raise ValueError(f"NATConfig.decoder_input must be one of {DECODER_INPUTS}, got {self.decoder_input!r}.")
        if self.activation_function not in ("relu", "gelu"):
            raise ValueError(
                f"NATConfig.activation_function must be 'relu' or 'gelu', got {self.activation_function!r}."
            )
        for name in (
            "dropout",
            "attention_dropout",
            "activation_dropout",
            "label_smoothing",
            "length_label_smoothing",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"NATConfig.{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.length_loss_weight < 0:
            raise ValueError(f"NATConfig.length_loss_weight must be >= 0, got {self.length_loss_weight}.")
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is None or not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"NATConfig.{name} must be a token id in [0, vocab_size={self.vocab_size}), got {value}; "
                    "take the ids from your tokenizer (tokenizer.pad_token_id, tokenizer.eos_token_id)."
                )


def _divisor_near(n: int, k: int) -> int:
    """The divisor of `n` closest to `k` (for error messages)."""
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - k), d))


__all__ = ["NATConfig"]
