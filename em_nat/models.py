"""Build a NAT and its stock AR partner (`MarianMTModel`) of the same size on one tokenizer; load either from a
folder with damaged weights files named (`load_pretrained`)."""

import functools

import torch
from transformers import AutoModelForSeq2SeqLM, MarianConfig, MarianMTModel, PreTrainedTokenizerBase

from .modeling import NATConfig, NATForConditionalGeneration
from .modeling.modeling_nat import load_with_weights_check

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


def load_pretrained(path, model_class=AutoModelForSeq2SeqLM, **kwargs):
    """`model_class.from_pretrained(path, **kwargs)` for any model, the stock AR included: a truncated or corrupt
    `model.safetensors` is an `OSError` naming the file and the fix (download it again or save it again), where
    safetensors alone names neither. The NAT's own `from_pretrained` does the same check.

    Args:
        path: a local folder or a Hub repository id.
        model_class: the class to load with (default `AutoModelForSeq2SeqLM`: an AR, or a NAT once em_nat is
            imported).
        kwargs: passed to `from_pretrained`.
    """
    return load_with_weights_check(model_class.from_pretrained, path, **kwargs)


def _zero_rows(rows: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad.index_fill(0, rows.to(grad.device), 0.0)


def keep_pad_embedding_zero(model, zero_if_trained: bool = False) -> torch.utils.hooks.RemovableHandle | None:
    """Zero the decoder-start (`<pad>`) row of a Marian AR's shared embedding and mask its gradient so it stays zero.

    Marian decoders start from `<pad>`; Marian itself and CTranslate2's stock converter start them from a zero
    vector instead. The row is zero at initialisation (`padding_idx`), but the output projection is tied to the
    embedding, so every optimizer step moves it (Adam moves it by about the learning rate per step even though
    `<pad>` is never a target), and the converted AR then decodes differently from `generate()`. With the row held
    at zero, the stock conversion is exact. Call it on the model the optimizer trains, before training: the hook
    lives on the parameter, so a model loaded with `from_pretrained` or copied with `deepcopy` needs it again.
    Zeroing the row of an AR trained without the hook changes its first decoder input; `em_nat.export` converts
    such an AR exactly without it.

    Args:
        zero_if_trained: also zero a row that is not zero (by default such a model, trained without the hook, is
            left as it is and None is returned).
    Returns:
        The hook's handle, or None for a model this does not apply to (not Marian, its decoder does not start
        from `<pad>`, or its start row is already trained and `zero_if_trained` is False).
    """
    config = model.config
    if config.model_type != "marian" or config.decoder_start_token_id != config.pad_token_id:
        return None
    weight = model.get_decoder().embed_tokens.weight  # em-nat's ARs share it with the encoder and lm_head
    if bool(weight[config.pad_token_id].any()) and not zero_if_trained:
        return None  # an AR trained with a moving start row: zeroing it would change its translations
    with torch.no_grad():
        weight[config.pad_token_id].zero_()
    return weight.register_hook(functools.partial(_zero_rows, torch.tensor([config.pad_token_id])))
