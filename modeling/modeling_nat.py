"""The non-autoregressive transformer (NAT) of Sun & Yang (ICML 2020), section "The NAR model" of PAPER.md.

Encoder with a length slot at position 0 whose top-layer state feeds a length classifier; a non-causal decoder whose
inputs are the PAD embedding plus learned positions (paper) or a uniform copy of the source embeddings (Gu et al.
2018); one embedding matrix shared by the encoder input, the decoder input and the output projection. `generate()`
predicts the length and fills every position in one decoder pass (argmax, ODD, length beam with AR rescoring: see
`decoding.py`). `score_targets()` is the NAT's total log-probability of given targets, used by EM selection and CM.

This file imports only torch, transformers and its sibling files: `save_pretrained` copies it next to the weights
for `trust_remote_code` users.
"""

import copy
import inspect
import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_nat import NATConfig
from .decoding import (
    ar_rescore,
    length_candidates,
    odd_decode,
    select_best,
    top_k_per_position,
)
from .generation_config_nat import NAT_GENERATION_DEFAULTS, NATGenerationConfig

# What callers of stock generate() may pass besides the NAT's own arguments: the knobs of autoregressive search
# (GenerationConfig attributes: num_beams, do_sample...) and stock generate()'s own arguments (streamer...).
_STOCK_GENERATION_KNOBS = {name for name in vars(GenerationConfig()) if not name.startswith("_")}
_STOCK_GENERATE_ARGUMENTS = set(inspect.signature(GenerationMixin.generate).parameters) - {"self", "kwargs"}
PIPELINE_FILE = "pipeline_translation.py"


@dataclass
class NATOutput(ModelOutput):
    """Output of [`NATForConditionalGeneration.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`): token loss + `length_loss_weight` * length loss (with labels).
        logits (`torch.FloatTensor` of shape `(batch, tgt_len, vocab_size)`): token logits.
        length_logits (`torch.FloatTensor` of shape `(batch, num_length_classes)`): target-length logits.
        token_loss, length_loss (`torch.FloatTensor` of shape `()`): the two terms of `loss`.
        encoder_last_hidden_state (`torch.FloatTensor` of shape `(batch, 1 + src_len, d_model)`): encoder states,
            the length slot first.
        glanced_mask (`torch.BoolTensor` of shape `(batch, tgt_len)`): with glancing training, the positions whose
            decoder input was the target token (left out of the token loss).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    length_logits: torch.FloatTensor | None = None
    token_loss: torch.FloatTensor | None = None
    length_loss: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    glanced_mask: torch.BoolTensor | None = None


@dataclass
class NATModelOutput(ModelOutput):
    """Output of [`NATModel.forward`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, tgt_len, d_model)`): decoder states.
        length_logits (`torch.FloatTensor` of shape `(batch, num_length_classes)`): target-length logits.
        encoder_last_hidden_state (`torch.FloatTensor` of shape `(batch, 1 + src_len, d_model)`): encoder states,
            the length slot first.
    """

    last_hidden_state: torch.FloatTensor | None = None
    length_logits: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None


@dataclass
class NATGenerateOutput(ModelOutput):
    """Output of `generate(..., return_dict_in_generate=True)`.

    Args:
        sequences (`torch.LongTensor` of shape `(batch, max_len)`): EOS-terminated, PAD-padded ids.
        sequences_scores (`torch.FloatTensor` of shape `(batch,)`): score of the kept candidate (NAT log-probability,
            or the AR's length-normalised log-probability when rescored).
        lengths (`torch.LongTensor` of shape `(batch,)`): length of each output, EOS included.
    """

    sequences: torch.LongTensor | None = None
    sequences_scores: torch.FloatTensor | None = None
    lengths: torch.LongTensor | None = None


def right_align(input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
    """Move every row's real tokens to the front (right padding), so that a left-padded batch encodes, and copies its
    source into the decoder, exactly as a right-padded one. A no-op (no copy) when nothing is left-padded.

    Returns:
        `(input_ids, attention_mask)`, both (batch, src_len).
    """
    if attention_mask is None or bool(attention_mask[:, 0].all()) or not bool(attention_mask.any()):
        return input_ids, attention_mask
    order = torch.argsort(attention_mask.eq(0).to(torch.int8), dim=1, stable=True)  # real tokens first, in order
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def _padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(batch,) lengths -> (batch, max_len) bool, True on real positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _attention_mask_4d(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(batch, keys) bool -> (batch, 1, 1, keys) for SDPA; None when nothing is masked (the fast path)."""
    if mask is None or bool(mask.all()):
        return None
    return mask[:, None, None, :]


class NATAttention(nn.Module):
    """Multi-head attention on `scaled_dot_product_attention`; self-attention (fused qkv) or cross-attention."""

    def __init__(self, d_model: int, num_heads: int, dropout: float, is_cross_attention: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.is_cross_attention = is_cross_attention
        if is_cross_attention:
            self.q_proj = nn.Linear(d_model, d_model)
            self.kv_proj = nn.Linear(d_model, 2 * d_model)
        else:
            self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, hidden_states, memory=None, mask=None):
        """memory (cross-attention): (sources, src_len, d) with `batch` a multiple of `sources`; rows
        i * r .. i * r + r - 1 of `hidden_states` (r candidates per source) attend to source i, whose keys and
        values are projected once."""
        batch, length, d_model = hidden_states.shape
        if self.is_cross_attention:
            q = self.q_proj(hidden_states).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
            sources = memory.shape[0]
            kv = self.kv_proj(memory).view(sources, memory.shape[1], 2, self.num_heads, self.head_dim)
            k, v = kv.permute(2, 0, 3, 1, 4)  # each (sources, heads, src_len, head_dim)
            if sources != batch:
                k, v = k.repeat_interleave(batch // sources, 0), v.repeat_interleave(batch // sources, 0)
        else:
            qkv = self.qkv_proj(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, length, head_dim)
        dropout_p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, d_model))


class NATFeedForward(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, activation: str, activation_dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.activation = F.relu if activation == "relu" else F.gelu
        self.activation_dropout = activation_dropout

    def forward(self, hidden_states):
        hidden_states = self.activation(self.fc1(hidden_states))
        hidden_states = F.dropout(hidden_states, self.activation_dropout, self.training)
        return self.fc2(hidden_states)


class NATEncoderLayer(nn.Module):
    """Pre-LayerNorm encoder layer: self-attention, feed-forward."""

    def __init__(self, config: NATConfig):
        super().__init__()
        d = config.d_model
        self.self_attn = NATAttention(d, config.encoder_attention_heads, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.ffn = NATFeedForward(d, config.encoder_ffn_dim, config.activation_function, config.activation_dropout)
        self.final_layer_norm = nn.LayerNorm(d)
        self.dropout = config.dropout

    def forward(self, hidden_states, mask):
        attn = self.self_attn(self.self_attn_layer_norm(hidden_states), mask=mask)
        hidden_states = hidden_states + F.dropout(attn, self.dropout, self.training)
        ffn = self.ffn(self.final_layer_norm(hidden_states))
        return hidden_states + F.dropout(ffn, self.dropout, self.training)


class NATDecoderLayer(nn.Module):
    """Pre-LayerNorm decoder layer: non-causal self-attention, cross-attention, feed-forward."""

    def __init__(self, config: NATConfig):
        super().__init__()
        d = config.d_model
        self.self_attn = NATAttention(d, config.decoder_attention_heads, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.cross_attn = NATAttention(d, config.decoder_attention_heads, config.attention_dropout, True)
        self.cross_attn_layer_norm = nn.LayerNorm(d)
        self.ffn = NATFeedForward(d, config.decoder_ffn_dim, config.activation_function, config.activation_dropout)
        self.final_layer_norm = nn.LayerNorm(d)
        self.dropout = config.dropout

    def forward(self, hidden_states, self_mask, memory, memory_mask):
        attn = self.self_attn(self.self_attn_layer_norm(hidden_states), mask=self_mask)
        hidden_states = hidden_states + F.dropout(attn, self.dropout, self.training)
        cross = self.cross_attn(self.cross_attn_layer_norm(hidden_states), memory=memory, mask=memory_mask)
        hidden_states = hidden_states + F.dropout(cross, self.dropout, self.training)
        ffn = self.ffn(self.final_layer_norm(hidden_states))
        return hidden_states + F.dropout(ffn, self.dropout, self.training)


WEIGHTS_FIX = (
    "Fix: download it again (from_pretrained(..., force_download=True) for a Hub model) or save the model again "
    "with save_pretrained from a copy that loads."
)


def _safetensors_problem(path: str) -> str | None:
    """What is wrong with a safetensors file, or None. The format is an 8-byte little-endian header size, a JSON
    header giving each tensor's byte range, then the data, which ends exactly where the last range does; a download,
    copy or save cut short leaves a file shorter than its header says."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        header_size = int.from_bytes(prefix, "little")
        if len(prefix) < 8 or 8 + header_size > size:
            return f"truncated ({size} bytes, shorter than its own header)"
        try:
            header = json.loads(handle.read(header_size))
            ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
            expected = 8 + header_size + max(ends, default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "damaged (its header is not a valid safetensors header)"
    if size < expected:
        return f"truncated ({size} of the {expected} bytes its header describes)"
    if size > expected:
        return f"damaged ({size - expected} stray bytes after the last tensor)"
    return None


def check_weights_files(folder: str) -> None:
    """Raise `OSError` naming the first damaged `model*.safetensors` file of a model folder, with the fix."""
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith("model") and name.endswith(".safetensors") and os.path.isfile(path):
            problem = _safetensors_problem(path)
            if problem is not None:
                raise OSError(
                    f"{path} is {problem}: the download, copy or save that wrote it did not finish. {WEIGHTS_FIX}"
                )


def load_with_weights_check(load, pretrained_model_name_or_path, *args, **kwargs):
    """`load(pretrained_model_name_or_path, *args, **kwargs)`, a `from_pretrained`, with a damaged weights file
    named: a local folder's `model*.safetensors` is checked first (`check_weights_files`), and a `SafetensorError`
    from a Hub download becomes an `OSError` naming the repository and the fix."""
    if pretrained_model_name_or_path is not None:
        folder = os.path.join(os.fspath(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        if os.path.isdir(folder):
            check_weights_files(folder)
    try:
        return load(pretrained_model_name_or_path, *args, **kwargs)
    except SafetensorError as err:
        raise OSError(f"A weights file of {pretrained_model_name_or_path} is damaged ({err}). {WEIGHTS_FIX}") from err


class NATPreTrainedModel(PreTrainedModel):
    config_class = NATConfig
    config: NATConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["NATEncoderLayer", "NATDecoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, NATModel):
            init.normal_(module.length_slot, mean=0.0, std=self.config.init_std)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with a damaged weights file named: a truncated or corrupt
        `model.safetensors` is an `OSError` naming the file (or the Hub repository) and the fix, where safetensors
        alone raises a `SafetensorError` that names neither. A local folder that holds another kind of model (an AR)
        is refused, naming what it holds, instead of loading as a NAT with fresh random weights."""
        if kwargs.get("config") is None:
            _refuse_other_model_type(pretrained_model_name_or_path)
        return load_with_weights_check(super().from_pretrained, pretrained_model_name_or_path, *model_args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the translation pipeline file when the code is saved too, so that
        `pipeline("translation", model=folder, trust_remote_code=True)` works where em_nat is not installed."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is not None and os.path.isdir(save_directory):
            here = os.path.dirname(os.path.abspath(__file__))
            shutil.copyfile(os.path.join(here, PIPELINE_FILE), os.path.join(save_directory, PIPELINE_FILE))


class NATModel(NATPreTrainedModel):
    """Encoder (with the length slot and the length classifier) and non-causal decoder, without the output head."""

    def __init__(self, config: NATConfig):
        super().__init__(config)
        d = config.d_model
        self.embed_scale = math.sqrt(d) if config.scale_embedding else 1.0
        self.shared = nn.Embedding(config.vocab_size, d)
        self.length_slot = nn.Parameter(torch.zeros(d))
        self.encoder_positions = nn.Embedding(config.max_position_embeddings + 1, d)  # + 1: the length slot
        self.decoder_positions = nn.Embedding(config.max_position_embeddings, d)
        self.encoder_layers = nn.ModuleList(NATEncoderLayer(config) for _ in range(config.encoder_layers))
        self.decoder_layers = nn.ModuleList(NATDecoderLayer(config) for _ in range(config.decoder_layers))
        self.encoder_layer_norm = nn.LayerNorm(d)
        self.decoder_layer_norm = nn.LayerNorm(d)
        self.length_predictor = nn.Linear(d, config.num_length_classes)
        self.post_init()

    def get_input_embeddings(self):
        return self.shared

    def set_input_embeddings(self, value):
        self.shared = value

    def check_source_length(self, input_ids: torch.Tensor) -> None:
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"Input has {input_ids.shape[1]} tokens but the model takes at most max_position_embeddings="
                f"{self.config.max_position_embeddings}; tokenize with truncation=True, "
                f"max_length={self.config.max_position_embeddings}."
            )

    def check_token_ids(self, input_ids: torch.Tensor) -> None:
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise ValueError(
                f"Input ids must lie in [0, vocab_size={self.config.vocab_size}), got ids from {int(input_ids.min())} "
                f"to {int(input_ids.max())}: encode with the tokenizer saved with the model."
            )

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Encode the source behind the length slot.

        Returns:
            `(states, memory_mask)`: states (batch, 1 + src_len, d_model), the length slot first; memory_mask
            (batch, 1 + src_len) bool (True = real token) or None when nothing is padded.
        """
        self.check_source_length(input_ids)
        self.check_token_ids(input_ids)
        batch, src_len = input_ids.shape
        tokens = self.shared(input_ids) * self.embed_scale  # (batch, src_len, d)
        slot = self.length_slot.to(tokens.dtype).expand(batch, 1, -1)  # (batch, 1, d)
        hidden = torch.cat([slot, tokens], dim=1) + self.encoder_positions.weight[: src_len + 1]
        hidden = F.dropout(hidden, self.config.dropout, self.training)
        memory_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            memory_mask = torch.cat([attention_mask.new_ones(batch, 1), attention_mask], dim=1).bool()
        sdpa_mask = _attention_mask_4d(memory_mask)
        for layer in self.encoder_layers:
            hidden = layer(hidden, sdpa_mask)
        return self.encoder_layer_norm(hidden), memory_mask

    def predict_length_logits(self, encoder_states: torch.Tensor) -> torch.Tensor:
        """(batch, 1 + src_len, d) -> (batch, num_length_classes) logits over target lengths (EOS included)."""
        return self.length_predictor(encoder_states[:, 0])

    def decoder_inputs(self, target_lengths, max_len, input_ids=None, attention_mask=None):
        """Decoder input embeddings (batch, max_len, d): PAD embedding or uniform source copy, plus positions."""
        positions = self.decoder_positions.weight[:max_len]  # (max_len, d)
        if self.config.decoder_input == "positional":
            pad = self.shared.weight[self.config.pad_token_id] * self.embed_scale  # (d,)
            return (pad + positions).expand(target_lengths.shape[0], -1, -1)
        # uniform copy: target position j of a length-T output reads source token round(j * (S - 1) / (T - 1))
        src_lengths = (
            attention_mask.sum(-1)
            if attention_mask is not None
            else torch.full_like(target_lengths, input_ids.shape[1])
        )
        steps = (src_lengths - 1).clamp(min=0) / (target_lengths - 1).clamp(min=1)  # (batch,)
        index = torch.arange(max_len, device=input_ids.device)[None, :] * steps[:, None]  # (batch, max_len)
        index = torch.minimum(index.round().long(), (src_lengths - 1).clamp(min=0)[:, None])
        copied = self.shared(torch.gather(input_ids, 1, index)) * self.embed_scale  # (batch, max_len, d)
        return copied + positions

    def decode(self, decoder_embeds, target_mask, memory, memory_mask):
        """Run the non-causal decoder.

        Args:
            decoder_embeds: (batch, tgt_len, d); target_mask: (batch, tgt_len) bool or None.
            memory: (sources, 1 + src_len, d) encoder states, `batch` a multiple of `sources` (several
                candidates per source share one encoding); memory_mask: (sources, 1 + src_len) bool or None.
        Returns:
            (batch, tgt_len, d)
        """
        hidden = F.dropout(decoder_embeds, self.config.dropout, self.training)
        self_mask = _attention_mask_4d(target_mask)
        cross_mask = _attention_mask_4d(memory_mask)
        if cross_mask is not None and memory.shape[0] != hidden.shape[0]:
            cross_mask = cross_mask.repeat_interleave(hidden.shape[0] // memory.shape[0], 0)
        for layer in self.decoder_layers:
            hidden = layer(hidden, self_mask, memory, cross_mask)
        return self.decoder_layer_norm(hidden)

    def forward(
        self, input_ids, attention_mask=None, target_lengths=None, max_target_length=None, glance=None
    ) -> NATModelOutput:
        """Encode, predict lengths, decode at `target_lengths` (batch,) padded to `max_target_length`.

        Args:
            glance (*optional*): a function `(decoder_embeds, target_mask, encoder_states, memory_mask) ->
                decoder_embeds` that may replace decoder inputs before the decoder pass (glancing training).
        Returns:
            [`NATModelOutput`]: decoder states (batch, tgt_len, d), length logits (batch, num_length_classes),
            encoder states (batch, 1 + src_len, d).
        """
        encoder_states, memory_mask = self.encode(input_ids, attention_mask)
        length_logits = self.predict_length_logits(encoder_states)
        if target_lengths is None:
            target_lengths = length_logits.argmax(-1).clamp(1, self.config.max_position_embeddings)
        max_len = int(max_target_length or target_lengths.max())
        embeds = self.decoder_inputs(target_lengths, max_len, input_ids, attention_mask)
        target_mask = _padding_mask(target_lengths, max_len)
        if glance is not None:
            embeds = glance(embeds, target_mask, encoder_states, memory_mask)
        decoder_states = self.decode(embeds, target_mask, encoder_states, memory_mask)
        return NATModelOutput(
            last_hidden_state=decoder_states, length_logits=length_logits, encoder_last_hidden_state=encoder_states
        )


class NATForConditionalGeneration(NATPreTrainedModel, GenerationMixin):
    """NAT with the tied output projection, the training loss, parallel `generate()` and `score_targets()`."""

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}
    generation_config_class = NATGenerationConfig

    def __init__(self, config: NATConfig):
        super().__init__(config)
        self.model = NATModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()
        special = {config.pad_token_id, config.eos_token_id, config.bos_token_id} - {None}
        self._special_ids = sorted(special)

    def get_input_embeddings(self):
        return self.model.shared

    def set_input_embeddings(self, value):
        self.model.shared = value

    def get_output_embeddings(self):
        return self.lm_head

    def get_encoder(self):
        return self.model

    # ----- training -----------------------------------------------------------------------------------------------

    def _target_lengths(self, labels):
        """Lengths (EOS included) of PAD- or -100-padded labels; errors when a target cannot be represented."""
        valid = (labels != -100) & (labels != self.config.pad_token_id)
        lengths = valid.sum(-1)
        if bool((lengths == 0).any()):
            raise ValueError("A target has no tokens; every label sequence must at least hold EOS.")
        if labels.shape[-1] > self.config.max_position_embeddings:
            raise ValueError(
                f"Targets have {labels.shape[-1]} tokens but the NAT decodes at most max_position_embeddings="
                f"{self.config.max_position_embeddings}; truncate the labels or filter long pairs."
            )
        return lengths, valid

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        target_lengths: torch.LongTensor | None = None,
        glancing_ratio: float = 0.0,
        return_dict: bool | None = None,
        **kwargs,
    ) -> NATOutput:
        """Args:
            input_ids (`torch.LongTensor` of shape `(batch, src_len)`): source ids, EOS-terminated.
            attention_mask (`torch.Tensor` of shape `(batch, src_len)`): 1 on real tokens.
            labels (`torch.LongTensor` of shape `(batch, tgt_len)`): targets, EOS-terminated, padded with PAD or
                -100. Set the decoding length and give the loss.
            decoder_input_ids / decoder_attention_mask (`(batch, tgt_len)`): HF-style way to set target lengths
                without labels (only the mask matters: NAT decoder inputs are positions, not tokens).
            target_lengths (`torch.LongTensor` of shape `(batch,)`): explicit target lengths (EOS included).
            glancing_ratio (`float`, *optional*, defaults to 0): glancing training (GLAT, Qian et al. 2021), only in
                training mode with labels. A first decoder pass without gradients predicts every position; for each
                target, `round(glancing_ratio * hamming distance(prediction, target))` positions, drawn uniformly,
                take the target token's embedding as decoder input; the token loss covers the other positions.
        Without any of these, the predicted lengths are used.
        """
        max_len = None
        valid = None
        if labels is not None:
            target_lengths, valid = self._target_lengths(labels)
            max_len = labels.shape[-1]
        elif decoder_input_ids is not None or decoder_attention_mask is not None:
            if decoder_attention_mask is None:
                decoder_attention_mask = decoder_input_ids.ne(self.config.pad_token_id)
            target_lengths = decoder_attention_mask.sum(-1)
            max_len = decoder_attention_mask.shape[-1]
        if not 0.0 <= glancing_ratio <= 1.0:
            raise ValueError(f"glancing_ratio must be in [0, 1], got {glancing_ratio}.")
        input_ids, attention_mask = right_align(input_ids, attention_mask)
        glanced = None
        glance = None
        if labels is not None and glancing_ratio > 0 and self.training:

            def glance(embeds, target_mask, encoder_states, memory_mask):
                nonlocal glanced
                embeds, glanced = self._glance(
                    embeds, target_mask, encoder_states, memory_mask, labels, valid, glancing_ratio
                )
                return embeds

        outputs = self.model(input_ids, attention_mask, target_lengths, max_len, glance=glance)
        decoder_states, length_logits = outputs.last_hidden_state, outputs.length_logits
        logits = self.lm_head(decoder_states)  # (batch, tgt_len, vocab)
        loss = token_loss = length_loss = None
        if labels is not None:
            token_targets = labels.masked_fill(~valid if glanced is None else ~valid | glanced, -100)
            token_loss = F.cross_entropy(
                logits.flatten(0, 1).float(),
                token_targets.flatten(),
                ignore_index=-100,
                label_smoothing=self.config.label_smoothing,
            )
            length_loss = F.cross_entropy(
                length_logits.float(), target_lengths, label_smoothing=self.config.length_label_smoothing
            )
            loss = token_loss + self.config.length_loss_weight * length_loss
        return NATOutput(
            loss=loss,
            logits=logits,
            length_logits=length_logits,
            token_loss=token_loss,
            length_loss=length_loss,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            glanced_mask=glanced,
        )

    def _glance(self, embeds, target_mask, encoder_states, memory_mask, labels, valid, ratio):
        """GLAT's glancing sampling: returns (decoder inputs with glanced positions replaced by target embeddings,
        glanced mask (batch, tgt_len) bool)."""
        with torch.no_grad():
            states = self.model.decode(embeds, target_mask, encoder_states, memory_mask)
            predicted = self.lm_head(states).argmax(-1)  # (batch, tgt_len)
            distance = ((predicted != labels) & valid).sum(-1)  # Hamming distance over real positions
            count = (distance.float() * ratio).round().long()  # (batch,)
            keys = torch.rand(labels.shape, device=labels.device).masked_fill(~valid, 2.0)  # padding sorts last
            rank = keys.argsort(-1).argsort(-1)  # each position's rank in a random order of real positions
            glanced = rank < count[:, None]  # (batch, tgt_len)
        targets = self.model.shared(labels.clamp(min=0).masked_fill(~valid, self.config.pad_token_id))
        targets = targets * self.model.embed_scale + self.model.decoder_positions.weight[: labels.shape[-1]]
        return torch.where(glanced[..., None], targets.to(embeds.dtype), embeds), glanced

    # ----- scoring (EM selection, CM) -----------------------------------------------------------------------------

    @torch.no_grad()
    def score_targets(self, input_ids, attention_mask=None, labels=None) -> torch.Tensor:
        """The NAT's total log-probability of given targets: `log p_len(|y| | x) + sum_k log p(y_k | x, |y|)`.

        Not length-normalised, no label smoothing (PAPER.md, "Corpus-level multi-modality").

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, src_len)`): sources.
            attention_mask (`torch.Tensor` of shape `(batch, src_len)`, *optional*).
            labels (`torch.LongTensor` of shape `(batch, tgt_len)` or `(batch, num_candidates, tgt_len)`):
                EOS-terminated targets padded with PAD or -100; with candidates, each source is encoded once.
        Returns:
            `torch.FloatTensor` of shape `(batch,)` or `(batch, num_candidates)`.
        """
        candidates = labels.dim() == 3
        flat = labels.flatten(0, 1) if candidates else labels  # (batch * n, tgt_len)
        repeats = labels.shape[1] if candidates else 1
        lengths, valid = self._target_lengths(flat)
        input_ids, attention_mask = right_align(input_ids, attention_mask)
        encoder_states, memory_mask = self.model.encode(input_ids, attention_mask)
        length_log_probs = self.model.predict_length_logits(encoder_states).float().log_softmax(-1)
        if repeats > 1:  # the decoder shares each source's encoding among its candidates
            length_log_probs = length_log_probs.repeat_interleave(repeats, dim=0)
            input_ids = input_ids.repeat_interleave(repeats, dim=0)
            attention_mask = attention_mask.repeat_interleave(repeats, dim=0) if attention_mask is not None else None
        max_len = flat.shape[-1]
        embeds = self.model.decoder_inputs(lengths, max_len, input_ids, attention_mask)
        states = self.model.decode(embeds, _padding_mask(lengths, max_len), encoder_states, memory_mask)
        token_log_probs = self.lm_head(states).float().log_softmax(-1)  # (batch * n, tgt_len, vocab)
        picked = token_log_probs.gather(-1, flat.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
        total = picked.sum(-1) + length_log_probs.gather(-1, lengths.unsqueeze(-1)).squeeze(-1)
        return total.view(labels.shape[:-1])

    # ----- generation ---------------------------------------------------------------------------------------------

    def adjust_generation_fn(self, *args, **kwargs):
        """Load `generation_config.json` as stock models do (`from_pretrained` calls this), then read it as a
        [`NATGenerationConfig`]: the file does not name its class, and the stock loader keeps the knobs untyped."""
        super().adjust_generation_fn(*args, **kwargs)
        self.generation_config = NATGenerationConfig.from_generation_config(self.generation_config)
        self.generation_config._original_object_hash = hash(self.generation_config)  # as loaded, not modified

    def _decoding_config(self, generation_config: GenerationConfig | None = None, **knobs) -> NATGenerationConfig:
        """The settings of one `generate()` call, validated: `generation_config` if given (knobs it lacks take their
        defaults), else the model's own; overridden by the `knobs` that are not None.

        The model's own `max_length` is left out: `Seq2SeqTrainer` writes transformers' global default (20) into it
        after its first `generate()` call, and that is no cap on a NAT output.
        """
        base = self.generation_config if generation_config is None else generation_config
        config = copy.copy(NATGenerationConfig.from_generation_config(base))  # never edit the caller's config
        if generation_config is None:
            config.max_length = None
        for name, value in knobs.items():
            if value is not None:
                setattr(config, name, value)
        config.validate()
        return config

    def _check_unused_kwargs(self, kwargs: dict) -> None:
        """Handle the `generate()` kwargs that NAT decoding has no use for, as stock `generate()` would accept them.

        - `forward()` inputs (labels, decoder_input_ids... that `Seq2SeqTrainer.predict` passes): ignored;
        - knobs and arguments of autoregressive search (num_beams, do_sample, streamer...): ignored, with a warning
          when set to a value that would change stock decoding (not None or False, not transformers' default, not
          the model's own special token id);
        - anything else, e.g. a misspelt knob: `TypeError`.
        """
        if not kwargs:
            return
        inert = {
            **GenerationConfig._get_default_generation_params(),
            "pad_token_id": self.config.pad_token_id,
            "bos_token_id": self.config.bos_token_id,
            "eos_token_id": self.config.eos_token_id,
        }
        unexpected = []
        for key, value in kwargs.items():
            if key in self._forward_only_arguments():
                continue
            if key not in _STOCK_GENERATION_KNOBS and key not in _STOCK_GENERATE_ARGUMENTS:
                unexpected.append(key)
            elif value is not None and value is not False and not (key in inert and value == inert[key]):
                warnings.warn(
                    f"NAT generate() ignores {key}={value!r}: decoding is one parallel pass; use length_beam, "
                    "odd and rescorer for search.",
                    stacklevel=4,
                )
        if unexpected:
            raise TypeError(
                f"NAT generate() got unexpected keyword arguments {unexpected}; NAT knobs are "
                f"{sorted(NAT_GENERATION_DEFAULTS)} plus max_length, max_new_tokens, min_length, rescorer."
            )

    def _has_content(self, input_ids, attention_mask) -> torch.Tensor:
        """(batch,) bool: the source holds a token other than PAD, EOS and BOS."""
        special = torch.tensor(self._special_ids, device=input_ids.device)
        return (attention_mask.bool() & ~torch.isin(input_ids, special)).any(-1)

    @classmethod
    def _forward_only_arguments(cls) -> set[str]:
        """Arguments of `forward` that are not generate() inputs: callers such as `Seq2SeqTrainer.predict` pass a
        batch's training inputs (labels, decoder_input_ids...) to generate(), which ignores them, as stock models do."""
        return set(inspect.signature(cls.forward).parameters) - {"self", "input_ids", "attention_mask", "kwargs"}

    def _length_range(self, config: NATGenerationConfig) -> tuple[int, int]:
        """(shortest, longest) output length, EOS included: `min_length`, at least 1 (EOS alone); the smallest of
        `max_position_embeddings`, `max_new_tokens` and `max_length`."""
        longest = self.config.max_position_embeddings
        for cap in (config.max_new_tokens, config.max_length):
            if cap is not None:
                longest = min(longest, cap)
        return max(1, config.min_length or 0), longest

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        *,
        length_beam: int | None = None,
        odd: bool | None = None,
        odd_top_k: int | None = None,
        rescorer=None,
        rescore_alpha: float | None = None,
        rescore_top_k: int | None = None,
        max_length: int | None = None,
        max_new_tokens: int | None = None,
        min_length: int | None = None,
        return_dict_in_generate: bool = False,
        **kwargs,
    ):
        """Parallel decoding: predict the length, fill every position in one decoder pass.

        Each knob comes from this call, else from `generation_config`, else from the model's own
        [`NATGenerationConfig`] (saved as `generation_config.json`, where its meaning is documented), and is checked
        by `NATGenerationConfig.validate`.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, src_len)`): source ids.
            attention_mask (`torch.Tensor` of shape `(batch, src_len)`, *optional*).
            generation_config (`GenerationConfig`, *optional*): replaces the model's own for this call; a stock
                `GenerationConfig` works too, the NAT knobs it lacks at their defaults.
            length_beam (`int`, *optional*): number of target lengths decoded around the predicted one.
            odd (`bool`, *optional*): ODD (de-duplicated Viterbi over the top `odd_top_k` tokens) or argmax.
            odd_top_k (`int`, *optional*): tokens per position that ODD chooses among.
            rescorer (*optional*): an `AutoModelForSeq2SeqLM` sharing the tokenizer, or any object with
                `vocab_size`, `pad_token_id`, `eos_token_id` and `rescore(input_ids, attention_mask, candidates,
                alpha) -> (batch, m) scores` (such as `em_nat.export.CT2Rescorer`, a CTranslate2 AR); with
                `length_beam > 1` it scores the candidates and the best is kept. Without it, candidates are ranked
                by the NAT's own log-probability.
            rescore_alpha (`float`, *optional*): GNMT length-penalty exponent of AR rescoring.
            rescore_top_k (`int`, *optional*): rescore only this many candidates, the best by the NAT's score.
            max_length / max_new_tokens (`int`, *optional*): cap on the output length, EOS included.
            min_length (`int`, *optional*): shortest output, EOS included.
            return_dict_in_generate (`bool`, *optional*, defaults to `False`): return a [`NATGenerateOutput`].
            kwargs: `forward()` inputs (labels...) are ignored, as stock `generate()` ignores them; knobs of
                autoregressive search (num_beams, do_sample...) are ignored, with a warning when set; anything else
                is a `TypeError`.
        Returns:
            `torch.LongTensor` of shape `(batch, max_len)`: EOS-terminated, PAD-padded ids (no start token), or a
            [`NATGenerateOutput`] with `return_dict_in_generate=True`.
        """
        if input_ids is None:
            input_ids = kwargs.pop("inputs", None)
        if input_ids is None:
            raise ValueError("NAT generate() needs input_ids (batch, src_len).")
        kwargs.pop("inputs", None)
        self._check_unused_kwargs(kwargs)
        config = self._decoding_config(
            generation_config,
            length_beam=length_beam,
            odd=odd,
            odd_top_k=odd_top_k,
            rescore_alpha=rescore_alpha,
            rescore_top_k=rescore_top_k,
            max_length=max_length,
            max_new_tokens=max_new_tokens,
            min_length=min_length,
        )
        if rescorer is not None:
            self._check_rescorer(rescorer)
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id).long()
        if input_ids.shape[1] == 0:  # nothing to translate: EOS alone
            sequences = input_ids.new_full((input_ids.shape[0], 1), self.config.eos_token_id)
            if return_dict_in_generate:
                return NATGenerateOutput(
                    sequences=sequences,
                    sequences_scores=sequences.new_zeros(len(sequences), dtype=torch.float),
                    lengths=sequences.new_ones(len(sequences)),
                )
            return sequences
        input_ids, attention_mask = right_align(input_ids, attention_mask)
        encoder_states, memory_mask = self.model.encode(input_ids, attention_mask)
        shortest, longest = self._length_range(config)
        length_log_probs = self._length_log_probs(encoder_states, shortest, longest)  # (batch, classes)
        beam = config.length_beam
        lengths = length_candidates(length_log_probs.argmax(-1), beam, shortest, longest)  # (batch, beam)
        # a source with no content (blank, EOS only) translates to EOS alone, whatever the length head says
        lengths = lengths.masked_fill(~self._has_content(input_ids, attention_mask)[:, None], 1)
        lengths = lengths.flatten()  # (batch * beam,)
        if beam > 1:  # the decoder shares each source's encoding among its length candidates
            input_ids_rep = input_ids.repeat_interleave(beam, dim=0)
            attention_mask_rep = attention_mask.repeat_interleave(beam, dim=0)
        else:
            input_ids_rep, attention_mask_rep = input_ids, attention_mask
        max_len = int(lengths.max())
        embeds = self.model.decoder_inputs(lengths, max_len, input_ids_rep, attention_mask_rep)
        target_mask = _padding_mask(lengths, max_len)
        states = self.model.decode(embeds, target_mask, encoder_states, memory_mask)
        prune = config.rescore_top_k is not None and config.rescore_top_k < beam
        need_scores = return_dict_in_generate or (beam > 1 and (rescorer is None or prune))
        tokens, scores = self._fill_positions(states, lengths, config.odd_top_k if config.odd else 1, need_scores)
        sequences = self._finish(tokens, lengths, target_mask)  # (batch * beam, max_len)
        if need_scores:
            scores = scores + length_log_probs.repeat_interleave(beam, dim=0).gather(-1, lengths[:, None])[:, 0]
        if beam > 1:
            sequences, scores, lengths = self._pick_candidates(
                input_ids, attention_mask, sequences, scores, lengths, beam, rescorer, config
            )
        if return_dict_in_generate:
            return NATGenerateOutput(sequences=sequences, sequences_scores=scores, lengths=lengths)
        return sequences

    def _length_log_probs(self, encoder_states, shortest: int, longest: int):
        """Length log-probabilities with impossible lengths (0, below `shortest`, beyond `longest`) masked out."""
        logits = self.model.predict_length_logits(encoder_states).float()
        allowed = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        allowed[shortest : longest + 1] = True
        return logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)

    def _fill_positions(self, states, lengths, k: int, need_scores: bool):
        """Choose the tokens of positions 0..L-2 (position L-1 is EOS) by ODD over the `k` best tokens of each
        position, or by argmax when `k` is 1.

        The output projection runs on real content positions only. Choices work on raw logits: a per-position
        constant (the log-softmax normaliser) changes neither the argmax nor the ODD path, so the normaliser is
        computed only when scores are needed.

        Args:
            states: (batch, max_len, d) decoder states; lengths: (batch,), EOS included.
        Returns:
            tokens (batch, max_len) and, if `need_scores`, their summed log-probabilities (batch,) else None.
        """
        batch, width = states.shape[0], states.shape[1] - 1
        content_lengths = lengths - 1
        mask = _padding_mask(content_lengths, width)  # (batch, width)
        every = bool(mask.all())
        content = states[:, :-1].reshape(-1, states.shape[-1]) if every else states[:, :-1][mask]  # (n, d)
        logits = self.lm_head(content)  # (n, vocab)
        logits[:, self._special_ids] = float("-inf")  # content positions never hold PAD/EOS/BOS
        values, ids = top_k_per_position(logits, k)  # (n, k)
        if need_scores:
            values = values - logits.float().logsumexp(-1, keepdim=True).to(values.dtype)
        if every:
            top_values, top_ids = values.view(batch, width, k), ids.view(batch, width, k)
        else:
            top_values = values.new_zeros(batch, width, k).masked_scatter(mask[..., None], values)
            top_ids = ids.new_zeros(batch, width, k).masked_scatter(mask[..., None], ids)
        if k > 1 and width > 0:
            chosen, scores = odd_decode(top_values, top_ids, content_lengths)
        else:
            chosen, scores = top_ids[..., 0], (top_values[..., 0] * mask).sum(-1)
        tokens = torch.cat([chosen, chosen.new_zeros(batch, 1)], dim=1)  # room for the final EOS
        return tokens, scores if need_scores else None

    def _finish(self, tokens, lengths, target_mask):
        """Put EOS at position L-1 and PAD after it."""
        tokens = tokens.masked_fill(~target_mask, self.config.pad_token_id)
        return tokens.scatter(1, (lengths - 1)[:, None], self.config.eos_token_id)

    def _check_rescorer(self, rescorer) -> None:
        """The rescorer must read the NAT's token ids: one embedding per token of the same tokenizer (the rule
        `EMTrainer` applies to the pair) and the same PAD and EOS ids. Otherwise it would rank other words."""
        if isinstance(rescorer, PreTrainedModel):
            embeddings, special = rescorer.get_input_embeddings().num_embeddings, rescorer.config
        elif callable(getattr(rescorer, "rescore", None)):
            embeddings, special = rescorer.vocab_size, rescorer
        else:
            raise TypeError(
                f"generate(rescorer=...) takes an AutoModelForSeq2SeqLM or an object with a rescore() method (such as "
                f"em_nat.export.CT2Rescorer), got {type(rescorer).__name__}."
            )
        problems = []
        if embeddings != self.config.vocab_size:
            problems.append(f"it has {embeddings} token embeddings, the NAT {self.config.vocab_size}")
        for name in ("pad_token_id", "eos_token_id"):
            theirs, ours = getattr(special, name, None), getattr(self.config, name)
            if theirs is not None and theirs != ours:
                problems.append(f"its {name} is {theirs}, the NAT's {ours}")
        if problems:
            raise ValueError(
                "generate(rescorer=...) needs an AR on the NAT's tokenizer, but " + "; ".join(problems) + ". Pass "
                "the AR trained with this NAT (round-<t>/ar of its run), or build one with "
                "em_nat.build_ar_model(tokenizer, nat.config)."
            )

    def _pick_candidates(self, input_ids, attention_mask, sequences, scores, lengths, beam, rescorer, config):
        """Keep one of the `beam` length candidates per source: the rescorer's best (GNMT length penalty with
        exponent `config.rescore_alpha`) among the `config.rescore_top_k` best by the NAT's score (all when None)
        when a rescorer is given, else the NAT's own best. Returns the chosen ids, their scores (the rescorer's, or
        the NAT's) and lengths."""
        batch = input_ids.shape[0]
        candidates = sequences.view(batch, beam, -1)  # (batch, beam, max_len)
        cand_lengths = lengths.view(batch, beam)
        rows = torch.arange(batch, device=candidates.device)
        if rescorer is not None:
            kept = torch.arange(beam, device=candidates.device).expand(batch, beam)  # (batch, k): candidate indices
            if config.rescore_top_k is not None and config.rescore_top_k < beam:
                kept = scores.view(batch, beam).topk(config.rescore_top_k, dim=-1).indices
            rescored = self._rescore(rescorer, input_ids, attention_mask, candidates[rows[:, None], kept], config)
            best_kept = rescored.argmax(-1)
            best, chosen_scores = kept[rows, best_kept], rescored[rows, best_kept]
        else:
            scores = scores.view(batch, beam)
            best = select_best(scores)
            chosen_scores = scores[rows, best]
        chosen = candidates[rows, best]
        chosen_lengths = cand_lengths[rows, best]
        chosen = chosen[:, : int(chosen_lengths.max())]
        return chosen, chosen_scores, chosen_lengths

    def _rescore(self, rescorer, input_ids, attention_mask, candidates, config) -> torch.Tensor:
        """(batch, k) length-normalised rescorer scores of `candidates` (batch, k, max_len)."""
        alpha = float(config.rescore_alpha)
        if not isinstance(rescorer, PreTrainedModel):
            return rescorer.rescore(input_ids, attention_mask, candidates, alpha=alpha).to(candidates.device)
        _, normalised = ar_rescore(
            rescorer,
            input_ids,
            attention_mask,
            candidates,
            pad_token_id=self.config.pad_token_id,
            eos_token_id=self.config.eos_token_id,
            decoder_start_token_id=_decoder_start(rescorer),
            alpha=alpha,
        )
        return normalised


def _refuse_other_model_type(path) -> None:
    """Raise a `ValueError` when the local folder `path` has a `config.json` of another `model_type` than the NAT's."""
    config_file = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(config_file):
        return  # a Hub id, or no config: from_pretrained reports it
    with open(config_file) as handle:
        saved = json.load(handle)
    kind = saved.get("model_type")
    if kind is not None and kind != NATConfig.model_type:
        architectures = ", ".join(saved.get("architectures") or []) or "no architectures listed"
        raise ValueError(
            f"{path} holds a {kind!r} model ({architectures}), not an em-nat NAT (model_type "
            f"{NATConfig.model_type!r}). Load it with its own class, e.g. AutoModelForSeq2SeqLM.from_pretrained(...); "
            "a run's NAT is in round-<t>/nat, its AR in round-<t>/ar."
        )


def _decoder_start(model) -> int:
    """The decoder start token of a stock seq2seq model (Marian: PAD, BART: EOS, T5: PAD)."""
    start = getattr(model.config, "decoder_start_token_id", None)
    if start is None and getattr(model, "generation_config", None) is not None:
        start = model.generation_config.decoder_start_token_id
    if start is None:
        raise ValueError(f"{type(model).__name__} has no decoder_start_token_id; set it on its config to rescore.")
    return int(start)


__all__ = ["NATForConditionalGeneration", "NATModel", "NATPreTrainedModel", "NATOutput", "NATGenerateOutput"]
