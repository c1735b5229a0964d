"""Build a NAT and its stock AR partner (`MarianMTModel`) of the same size on one tokenizer."""

from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerBase

from .modeling import NATConfig, NATForConditionalGeneration

# NATConfig fields that size an AR partner alike (same names in MarianConfig)
SHARED_SIZE_FIELDS = (
    "d_model",
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "max_position_embeddings",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "activation_function",
)
SPECIAL_FIELDS = ("vocab_size", "pad_token_id", "eos_token_id", "bos_token_id")


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> dict:
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer needs a pad token and an EOS token (set tokenizer.pad_token / eos_token).")
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }


def build_nat_model(tokenizer: PreTrainedTokenizerBase, **config_kwargs) -> NATForConditionalGeneration:
    """A randomly initialised NAT whose vocabulary and special ids come from `tokenizer`.

    Args:
        tokenizer: the joint tokenizer.
        config_kwargs: any [`NATConfig`] field (sizes, `decoder_input`...).
    """
    return NATForConditionalGeneration(NATConfig(**{**config_kwargs, **_special_ids(tokenizer)}))


def marian_config_like(nat_config: NATConfig, **config_kwargs) -> MarianConfig:
    """A `MarianConfig` with the sizes, vocabulary and special ids of `nat_config` (shared embeddings; the decoder
    starts from PAD, as Marian's do). `config_kwargs` override any field."""
    copied = {name: getattr(nat_config, name) for name in SHARED_SIZE_FIELDS + SPECIAL_FIELDS}
    return MarianConfig(
        **{
            **copied,
            "scale_embedding": True,
            "share_encoder_decoder_embeddings": True,
            "decoder_start_token_id": nat_config.pad_token_id,
            "forced_eos_token_id": nat_config.eos_token_id,
            **config_kwargs,
        }
    )


def build_ar_model(
    tokenizer: PreTrainedTokenizerBase, nat_config: NATConfig | None = None, **config_kwargs
) -> MarianMTModel:
    """A randomly initialised stock `MarianMTModel` on `tokenizer`, sized like `nat_config` when given.

    Args:
        tokenizer: the joint tokenizer (shared embeddings: source, target and output projection).
        nat_config: a [`NATConfig`] whose sizes the AR copies (default: `NATConfig()`'s sizes).
        config_kwargs: `MarianConfig` fields that override the copied sizes.
    """
    sized = nat_config if nat_config is not None else NATConfig(**_special_ids(tokenizer))
    return MarianMTModel(marian_config_like(sized, **{**config_kwargs, **_special_ids(tokenizer)}))
