"""The NAT exported to ONNX and run with ONNX Runtime, optionally with dynamic int8 weights.

    python -m em_nat.export onnx [--int8] [--force] NAT_DIR OUTPUT_DIR

The NAT's one parallel pass is split into two graphs so that no shape depends on data inside a graph (torch.export
cannot trace `argmax -> length -> tensor size`):

- `encoder.onnx`: `input_ids`, `attention_mask` (batch, src_len) -> `encoder_states` (batch, 1 + src_len, d_model),
  `length_logits` (batch, num_length_classes);
- `decoder.onnx`: `encoder_states`, `attention_mask`, `input_ids` (one row per candidate), `target_mask`
  (batch, tgt_len) -> the `top_k` best non-special tokens of every content position, `topk_values` (raw logits) and
  `topk_ids` (batch, tgt_len - 1, top_k), and the `content_states` (batch, tgt_len - 1, d_model) they came from;
- `normaliser.onnx`: `content_states` -> `log_normaliser` (batch, tgt_len - 1), the log-softmax normaliser, run only
  when scores are needed (length beam, `return_dict_in_generate`): argmax and ODD do not change under a
  per-position constant, and over an 8k vocabulary the normaliser costs as much as the projection.

The output projection in both graphs holds only the rows of the choosable (non-special) ids, as a weight of its own
(the NAT ties it to the embedding), so int8 quantization takes it and no masking of special ids is needed.

Between and after the graphs [`OnnxNAT.generate`] takes the steps of `NATForConditionalGeneration.generate` on the
host, with the same functions (`length_candidates`, `odd_decode`, the NAT's candidate choice) and the same settings handling, so
argmax, ODD, the length beam and AR rescoring (a PyTorch AR or `CT2Rescorer`) give the ids PyTorch gives.

Both graphs come from `torch.onnx.export(..., dynamo=True)`; int8 is ONNX Runtime's `quantize_dynamic` over the
float32 graphs (int8 weights of every MatMul with a constant weight, activations quantized at run time), because a
torch dynamic-int8 Linear does not export and `torch.ao.quantization` is deprecated.

The output folder also holds the NAT's `config.json`, `generation_config.json` and tokenizer, so that
`OnnxNAT.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)` work from it alone, and
`onnx_export.json`, which names the graphs and how they were made.
"""

import json
import logging
import os

import torch
from torch import nn
from transformers import AutoTokenizer, GenerationConfig

from .modeling import NATConfig, NATForConditionalGeneration, NATGenerateOutput, NATGenerationConfig
from .modeling.decoding import length_candidates, odd_decode, top_k_per_position
from .modeling.modeling_nat import right_align

logger = logging.getLogger(__name__)

MANIFEST = "onnx_export.json"
FORMAT = "em-nat-onnx"
FORMAT_VERSION = 2  # 1: the decoder graph computed the normaliser itself, over a tied float32 projection
GRAPHS = {
    "float32": {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "normaliser": "normaliser.onnx"},
    "int8": {"encoder": "encoder_int8.onnx", "decoder": "decoder_int8.onnx", "normaliser": "normaliser_int8.onnx"},
}
# The decoder graph returns this many candidates per position (at least the saved `odd_top_k`); `generate()` takes
# the first `odd_top_k` of them, which are the top `odd_top_k` (TopK is sorted).
DEFAULT_TOP_K = 8
# the keyword knobs of NATForConditionalGeneration.generate() that OnnxNAT.generate() passes through the same way
NAT_KNOBS = (
    "length_beam",
    "odd",
    "odd_top_k",
    "rescore_alpha",
    "rescore_top_k",
    "max_length",
    "max_new_tokens",
    "min_length",
)
INSTALL_HINT = 'ONNX export needs onnx, onnxruntime and onnxscript: pip install "em-nat[onnx]"'


def _require(*modules: str) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:  # optional dependencies
            raise ImportError(f"{INSTALL_HINT} ({name} is missing)") from error


# ----- the two graphs -------------------------------------------------------------------------------------------------


class NATEncoderGraph(nn.Module):
    """Encoder + length head of a NAT, as one graph. Mirrors `NATModel.encode` without its input checks and its
    no-padding fast path (both branch on tensor values): the mask is always applied; an all-ones mask changes nothing.
    """

    def __init__(self, nat: NATForConditionalGeneration):
        super().__init__()
        self.model = nat.model

    def forward(self, input_ids, attention_mask):
        """input_ids, attention_mask (batch, src_len) -> encoder_states (batch, 1 + src_len, d), length_logits
        (batch, num_length_classes)."""
        model = self.model
        batch, src_len = input_ids.shape
        tokens = model.shared(input_ids) * model.embed_scale  # (batch, src_len, d)
        slot = model.length_slot.to(tokens.dtype).expand(batch, 1, -1)  # (batch, 1, d)
        hidden = torch.cat([slot, tokens], dim=1) + model.encoder_positions.weight[: src_len + 1]
        memory_mask = _memory_mask(attention_mask)  # (batch, 1, 1, 1 + src_len)
        for layer in model.encoder_layers:
            hidden = layer(hidden, memory_mask)
        states = model.encoder_layer_norm(hidden)
        return states, model.predict_length_logits(states)


class NATDecoderGraph(nn.Module):
    """Decoder input, decoder and output projection over given target lengths, reduced to the top-k candidates of
    every content position (the projection runs on content positions only, not on padding). Mirrors
    `NATModel.decode` (mask always applied) and the projection step of
    `NATForConditionalGeneration._fill_positions`: special ids are never chosen, so the projection holds the other
    rows only (its own copy of the tied embedding, which dynamic quantization can then make int8) and the chosen ids
    are mapped back to vocabulary ids. The log-softmax normaliser is left to [`NATNormaliserGraph`], run only when
    scores are asked for: argmax and ODD do not change under a per-position constant."""

    def __init__(self, nat: NATForConditionalGeneration, top_k: int):
        super().__init__()
        self.model = nat.model
        self.top_k = top_k
        self.projection = _choosable_projection(nat)
        self.register_buffer("choosable_ids", _choosable_ids(nat), persistent=False)

    def forward(self, encoder_states, attention_mask, input_ids, target_mask):
        """encoder_states (batch, 1 + src_len, d); attention_mask, input_ids (batch, src_len); target_mask
        (batch, tgt_len), 1 on the first L positions of a length-L target (EOS included) ->
        topk_values (raw logits), topk_ids (batch, tgt_len - 1, top_k); content_states (batch, tgt_len - 1, d)."""
        model = self.model
        lengths = target_mask.sum(-1)  # (batch,)
        embeds = model.decoder_inputs(lengths, target_mask.shape[1], input_ids, attention_mask)  # (batch, tgt_len, d)
        self_mask = target_mask.bool()[:, None, None, :]  # (batch, 1, 1, tgt_len)
        memory_mask = _memory_mask(attention_mask)
        hidden = embeds
        for layer in model.decoder_layers:
            hidden = layer(hidden, self_mask, encoder_states, memory_mask)
        states = model.decoder_layer_norm(hidden)[:, :-1]  # the last position is EOS
        batch, width, d_model = states.shape
        # project the content positions only (position p of a length-L target is content iff p + 1 < L): in a
        # batch of mixed lengths the padding is a large share of the positions (about 40% at batch 64 on Multi30k)
        content = target_mask[:, 1:].reshape(-1).nonzero().squeeze(-1)  # (n,) flat indices
        rows = states.reshape(-1, d_model).index_select(0, content)  # (n, d)
        values, columns = top_k_per_position(self.projection(rows).float(), self.top_k)  # (n, top_k)
        ids = self.choosable_ids[columns]
        shape = (batch, width, self.top_k)  # padding positions hold 0, as generate() leaves them
        values = values.new_zeros(batch * width, self.top_k).index_copy(0, content, values).view(shape)
        ids = ids.new_zeros(batch * width, self.top_k).index_copy(0, content, ids).view(shape)
        return values, ids, states


class NATNormaliserGraph(nn.Module):
    """The log-softmax normaliser of the content positions, over the choosable (non-special) ids, from the decoder
    graph's `content_states`; `generate()` runs it only when it returns or compares scores (length beam,
    `return_dict_in_generate`)."""

    def __init__(self, nat: NATForConditionalGeneration):
        super().__init__()
        self.projection = _choosable_projection(nat)

    def forward(self, content_states):
        """content_states (batch, tgt_len - 1, d) -> log_normaliser (batch, tgt_len - 1).

        Written out as max + log(sum(exp(x - max))) rather than `logsumexp`: ONNX Runtime ran the exported
        ReduceLogSumExp several times slower on this project's CPU, for the same values (the tests compare the
        scores with PyTorch's). The logits are finite (no special id is projected), so the max is too."""
        logits = self.projection(content_states).float()
        peak = logits.amax(-1, keepdim=True)
        return peak.squeeze(-1) + (logits - peak).exp().sum(-1).log()


def _choosable_ids(nat: NATForConditionalGeneration) -> torch.Tensor:
    """The ids a content position can hold: every id but the special ones (PAD, EOS, BOS), in order."""
    keep = torch.ones(nat.config.vocab_size, dtype=torch.bool)
    keep[nat._special_ids] = False
    return keep.nonzero().squeeze(-1)


def _choosable_projection(nat: NATForConditionalGeneration) -> nn.Linear:
    """A copy of the output projection restricted to the choosable ids: a weight of its own, not tied to the
    embedding that the decoder input also reads, so that it is a plain constant MatMul that int8 quantization takes."""
    rows = nat.lm_head.weight.detach()[_choosable_ids(nat)].clone()
    projection = nn.Linear(rows.shape[1], rows.shape[0], bias=False)
    projection.weight = nn.Parameter(rows, requires_grad=False)
    return projection


def _memory_mask(attention_mask):
    """(batch, src_len) source mask -> (batch, 1, 1, 1 + src_len) bool SDPA mask, the length slot always visible."""
    slot = attention_mask.new_ones(attention_mask.shape[0], 1)
    return torch.cat([slot, attention_mask], dim=1).bool()[:, None, None, :]


# ----- export ---------------------------------------------------------------------------------------------------------


def _example_inputs(config: NATConfig):
    """Inputs to trace with: sizes that differ from each other and from 0 and 1, so that no dimension is specialised
    or tied to another; the second source is padded."""
    batch, src_len, tgt_len = 2, 7, 5
    input_ids = 3 + torch.arange(batch * src_len).view(batch, src_len) % max(1, config.vocab_size - 3)
    attention_mask = torch.ones(batch, src_len, dtype=torch.long)
    attention_mask[1, 4:] = 0
    target_mask = torch.ones(batch, tgt_len, dtype=torch.long)
    target_mask[1, 3:] = 0
    return input_ids.clamp(max=config.vocab_size - 1), attention_mask, target_mask


def _export_graphs(nat: NATForConditionalGeneration, output_dir: str, top_k: int) -> int:
    """Write the float32 graphs (encoder, decoder, normaliser); returns the ONNX opset used."""
    from torch.export import Dim

    limit = nat.config.max_position_embeddings
    batch, src_len, tgt_len = Dim("batch"), Dim("src_len", max=limit), Dim("tgt_len", max=limit)
    input_ids, attention_mask, target_mask = _example_inputs(nat.config)
    source_shapes = {0: batch, 1: src_len}
    encoder = NATEncoderGraph(nat).eval()
    with torch.no_grad():
        encoder_states, _ = encoder(input_ids, attention_mask)
    programs = {
        "encoder": torch.onnx.export(
            encoder,
            (input_ids, attention_mask),
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            output_names=["encoder_states", "length_logits"],
            dynamic_shapes={"input_ids": source_shapes, "attention_mask": source_shapes},
            verbose=False,
        ),
        "decoder": torch.onnx.export(
            NATDecoderGraph(nat, top_k).eval(),
            (encoder_states, attention_mask, input_ids, target_mask),
            dynamo=True,
            input_names=["encoder_states", "attention_mask", "input_ids", "target_mask"],
            output_names=["topk_values", "topk_ids", "content_states"],
            dynamic_shapes={
                "encoder_states": {0: batch, 1: src_len + 1},
                "attention_mask": source_shapes,
                "input_ids": source_shapes,
                "target_mask": {0: batch, 1: tgt_len},
            },
            verbose=False,
        ),
        "normaliser": torch.onnx.export(
            NATNormaliserGraph(nat).eval(),
            (encoder_states[:, :4],),
            dynamo=True,
            input_names=["content_states"],
            output_names=["log_normaliser"],
            dynamic_shapes={"content_states": {0: batch, 1: Dim("content_len", max=limit)}},
            verbose=False,
        ),
    }
    for name, program in programs.items():
        program.save(os.path.join(output_dir, GRAPHS["float32"][name]))
    opsets = programs["encoder"].model_proto.opset_import
    return max(opset.version for opset in opsets if opset.domain in ("", "ai.onnx"))


def _quantize_graphs(output_dir: str, per_channel: bool, reduce_range: bool) -> None:
    """Dynamic int8 copies of the graphs: int8 weights for every MatMul whose weight is a constant (the linear layers
    and the output projection), uint8 activations quantized at run time; everything else stays float32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in GRAPHS["int8"]:
        quantize_dynamic(
            os.path.join(output_dir, GRAPHS["float32"][name]),
            os.path.join(output_dir, GRAPHS["int8"][name]),
            op_types_to_quantize=["MatMul"],
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
        )


def _model_type(model_dir: str | os.PathLike) -> str | None:
    """The `model_type` that a saved model folder's config.json names (None without one)."""
    path = os.path.join(os.fspath(model_dir), "config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle).get("model_type")


def is_nat_folder(model_dir: str | os.PathLike) -> bool:
    """Whether `model_dir` holds a saved NAT (its config.json names `model_type` em_nat)."""
    return _model_type(model_dir) == NATConfig.model_type


def export_onnx(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    int8: bool = False,
    force: bool = False,
    *,
    top_k: int | None = None,
    per_channel: bool = False,
    reduce_range: bool = False,
) -> dict:
    """Export a saved NAT to ONNX (two graphs, see the module docstring) and, with `int8`, quantize it.

    Args:
        model_dir: `save_pretrained` folder of the NAT with its tokenizer.
        output_dir: the folder to write: float32 graphs, int8 graphs with `int8`, config, generation config,
            tokenizer and `onnx_export.json`.
        int8: also write dynamic-int8 graphs (`OnnxNAT.from_pretrained` then loads them by default).
        force: write into an existing `output_dir` (the files named above are replaced, others are left alone).
        top_k: candidates per position in the decoder graph, the largest `odd_top_k` the export serves; default
            the larger of 8 and the saved `odd_top_k`.
        per_channel / reduce_range: `quantize_dynamic` options (`reduce_range` (7-bit weights) can help on CPUs
            without VNNI; compare BLEU).
    Returns:
        What was written: `{"output_dir", "precisions", "opset", "top_k", "files"}` (file sizes in bytes).
    """
    _require("onnx", "onnxscript", "onnxruntime")
    model_dir, output_dir = os.fspath(model_dir), os.fspath(output_dir)
    if not is_nat_folder(model_dir):
        raise ValueError(
            f"{model_dir} does not hold an em-nat NAT (config.json model_type: {_model_type(model_dir)!r}); ONNX "
            "export takes a NAT folder. Convert an AR with `python -m em_nat.export ct2` instead."
        )
    if os.path.exists(output_dir) and not force:
        raise FileExistsError(f"{output_dir} already exists; pass force=True (--force) to overwrite it.")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    nat = NATForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    saved_top_k = int(getattr(nat.generation_config, "odd_top_k", None) or 1)
    top_k = int(top_k) if top_k is not None else max(DEFAULT_TOP_K, saved_top_k)
    choosable = nat.config.vocab_size - len(nat._special_ids)
    if not 1 <= top_k <= choosable:
        raise ValueError(f"top_k must be in [1, {choosable}] (the non-special vocabulary), got {top_k}.")
    os.makedirs(output_dir, exist_ok=True)
    for path in list(GRAPHS["int8"].values()) + [MANIFEST]:  # nothing stale from an earlier export
        if os.path.isfile(os.path.join(output_dir, path)):
            os.remove(os.path.join(output_dir, path))
    opset = _export_graphs(nat, output_dir, top_k)
    precisions = ["float32"]
    if int8:
        _quantize_graphs(output_dir, per_channel, reduce_range)
        precisions.append("int8")
    nat.config.save_pretrained(output_dir)
    nat.generation_config.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exporter": "torch.onnx.export(dynamo=True)",
        "opset": opset,
        "top_k": top_k,
        "graphs": {precision: GRAPHS[precision] for precision in precisions},
        "int8": {
            "method": "onnxruntime.quantization.quantize_dynamic",
            "op_types": ["MatMul"],
            "per_channel": per_channel,
            "reduce_range": reduce_range,
        }
        if int8
        else None,
        "torch_version": torch.__version__,
    }
    with open(os.path.join(output_dir, MANIFEST), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
    files = {
        name: os.path.getsize(os.path.join(output_dir, name))
        for precision in precisions
        for name in GRAPHS[precision].values()
    }
    logger.info("Exported %s to ONNX in %s (%s)", model_dir, output_dir, ", ".join(precisions))
    return {"output_dir": output_dir, "precisions": precisions, "opset": opset, "top_k": top_k, "files": files}


# ----- run ------------------------------------------------------------------------------------------------------------


class OnnxNAT:
    """A NAT exported by [`export_onnx`], run with ONNX Runtime; `generate()` as `NATForConditionalGeneration`'s.

    Works where a NAT does for inference: `generate(input_ids=..., attention_mask=..., odd=..., length_beam=...)`
    returns EOS-terminated, PAD-padded ids, and `pipeline("translation", model=onnx_nat, tokenizer=tokenizer)`
    translates with it. The host-side steps (settings, length candidates, ODD, candidate choice, EOS and padding) are
    those of the PyTorch NAT, run by a weightless copy of it on the meta device.

    Example:
        ```python
        from transformers import AutoTokenizer, pipeline
        from em_nat.export import OnnxNAT

        nat = OnnxNAT.from_pretrained("nat-onnx")
        translator = pipeline("translation", model=nat, tokenizer=AutoTokenizer.from_pretrained("nat-onnx"))
        ```
    """

    main_input_name = "input_ids"
    input_modalities = "text"
    output_modalities = ("text",)

    def __init__(
        self,
        config: NATConfig,
        generation_config: GenerationConfig | None,
        sessions: dict,
        top_k: int,
        precision: str,
        name_or_path: str = "",
    ):
        """Use [`from_pretrained`]. `sessions`: ONNX Runtime sessions of the "encoder", "decoder" and "normaliser"
        graphs."""
        self.config = config
        with torch.device("meta"):  # no weights: only generate()'s host-side steps are used
            self._nat = NATForConditionalGeneration(config)
        if generation_config is not None:  # else the defaults of a freshly built NAT
            self.generation_config = generation_config
        self._encoder, self._decoder, self._normaliser = (
            sessions["encoder"],
            sessions["decoder"],
            sessions["normaliser"],
        )
        self._decoder_inputs = {value.name for value in self._decoder.get_inputs()}
        self.top_k = top_k
        self.precision = precision
        self.name_or_path = name_or_path

    @classmethod
    def from_pretrained(
        cls,
        output_dir: str | os.PathLike,
        precision: str = "auto",
        intra_op_num_threads: int | None = None,
        providers: list | None = None,
        session_options=None,
    ) -> "OnnxNAT":
        """Load a folder written by [`export_onnx`].

        Args:
            output_dir: the export folder.
            precision: "auto" (int8 when the folder has it, else float32), "float32" or "int8".
            intra_op_num_threads: ONNX Runtime threads per graph run (default: ONNX Runtime's choice). On small
                CPUs 1 can be much faster at batch 1; measure.
            providers: ONNX Runtime execution providers (default: CPU).
            session_options: an `onnxruntime.SessionOptions` to start from.
        """
        _require("onnxruntime")
        import onnxruntime as ort

        folder = os.fspath(output_dir)
        manifest_path = os.path.join(folder, MANIFEST)
        if not os.path.isfile(manifest_path):
            hint = " It holds a PyTorch NAT: export it first" if is_nat_folder(folder) else ""
            raise ValueError(
                f"{folder} is not an ONNX export of a NAT (no {MANIFEST}).{hint}: "
                f"python -m em_nat.export onnx NAT_DIR {folder}"
            )
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{manifest_path} is not a version-{FORMAT_VERSION} {FORMAT} manifest (an older em-nat wrote it); "
                f"export the NAT again: python -m em_nat.export onnx [--int8] NAT_DIR {folder} --force"
            )
        available = manifest["graphs"]
        if precision == "auto":
            precision = "int8" if "int8" in available else "float32"
        if precision not in available:
            raise ValueError(
                f"{folder} has {sorted(available)} graphs, not {precision!r}; export with --int8 for int8 graphs."
            )
        options = session_options if session_options is not None else ort.SessionOptions()
        if intra_op_num_threads is not None:
            options.intra_op_num_threads = int(intra_op_num_threads)
        sessions = {
            name: ort.InferenceSession(
                os.path.join(folder, path), options, providers=providers or ["CPUExecutionProvider"]
            )
            for name, path in available[precision].items()
        }
        config = NATConfig.from_pretrained(folder)
        generation_path = os.path.join(folder, "generation_config.json")
        generation_config = GenerationConfig.from_pretrained(folder) if os.path.isfile(generation_path) else None
        return cls(config, generation_config, sessions, int(manifest["top_k"]), precision, folder)

    # ----- what pipelines and generic callers read ------------------------------------------------------------------

    @property
    def generation_config(self) -> GenerationConfig:
        return self._nat.generation_config

    @generation_config.setter
    def generation_config(self, value: GenerationConfig) -> None:
        """Kept as a `NATGenerationConfig` (a stock one read from disk holds the knobs untyped), as the PyTorch NAT
        keeps it: `generate()` then copies it instead of rebuilding it from a dict on every call."""
        self._nat.generation_config = NATGenerationConfig.from_generation_config(value)

    @property
    def device(self) -> torch.device:
        """Where `generate()` takes its inputs: the CPU (outputs go back to the inputs' device)."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def to(self, *args, **kwargs) -> "OnnxNAT":
        """A no-op, for callers that move models (pipelines): ONNX Runtime runs where its providers say."""
        return self

    def eval(self) -> "OnnxNAT":
        return self

    def can_generate(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"OnnxNAT({self.name_or_path!r}, precision={self.precision!r}, top_k={self.top_k})"

    # ----- generation -----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        rescorer=None,
        return_dict_in_generate: bool = False,
        **kwargs,
    ):
        """Parallel decoding as `NATForConditionalGeneration.generate`, the network run by ONNX Runtime.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, src_len)`): source ids.
            attention_mask (`torch.Tensor` of shape `(batch, src_len)`, *optional*).
            generation_config (`GenerationConfig`, *optional*): defaults to the one saved with the model.
            rescorer (*optional*): with `length_beam > 1`, picks among the length candidates as in the PyTorch
                `generate()`: an `AutoModelForSeq2SeqLM` on the NAT's tokenizer, or `em_nat.export.CT2Rescorer`.
            kwargs: the NAT knobs (`length_beam`, `odd`, `odd_top_k` up to the exported `top_k`, `max_length`,
                `max_new_tokens`, `min_length`), as in the PyTorch `generate()`; unknown knobs are a `TypeError`.
        Returns:
            `torch.LongTensor` of shape `(batch, max_len)`: EOS-terminated, PAD-padded ids, or a
            `NATGenerateOutput` with `return_dict_in_generate=True`.
        """
        if input_ids is None:
            input_ids = kwargs.pop("inputs", None)
        if input_ids is None:
            raise ValueError("NAT generate() needs input_ids (batch, src_len).")
        kwargs.pop("inputs", None)
        nat = self._nat
        if rescorer is not None:
            nat._check_rescorer(rescorer)
        knobs = {name: kwargs.pop(name, None) for name in NAT_KNOBS}
        nat._check_unused_kwargs(kwargs)
        config = nat._decoding_config(generation_config, **knobs)
        k = config.odd_top_k if config.odd else 1
        if k > self.top_k:
            raise ValueError(
                f"odd_top_k={k} but this export serves at most {self.top_k} candidates per position; lower odd_top_k "
                f"or export again with top_k={k}."
            )
        device = input_ids.device if isinstance(input_ids, torch.Tensor) else torch.device("cpu")
        input_ids = torch.as_tensor(input_ids).cpu().long()
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id).long()
        attention_mask = torch.as_tensor(attention_mask).cpu().long()
        if input_ids.shape[1] == 0:  # nothing to translate: EOS alone
            sequences = input_ids.new_full((input_ids.shape[0], 1), self.config.eos_token_id)
            scores = torch.zeros(len(sequences))
            return self._output(sequences, scores, sequences.new_ones(len(sequences)), return_dict_in_generate, device)
        nat.model.check_source_length(input_ids)
        nat.model.check_token_ids(input_ids)
        input_ids, attention_mask = right_align(input_ids, attention_mask)
        encoder_states, length_logits = self._encoder.run(
            None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        )
        shortest, longest = nat._length_range(config)
        length_log_probs = self._length_log_probs(
            torch.from_numpy(length_logits), shortest, longest
        )  # (batch, classes)
        beam = config.length_beam
        lengths = length_candidates(length_log_probs.argmax(-1), beam, shortest, longest)
        # a source with no content (blank, EOS only) translates to EOS alone, whatever the length head says
        lengths = lengths.masked_fill(~nat._has_content(input_ids, attention_mask)[:, None], 1).flatten()
        prune = config.rescore_top_k is not None and config.rescore_top_k < beam
        # the NAT's scores rank candidates without a rescorer, or prune them for it; a rescorer of all needs none
        need_scores = return_dict_in_generate or (beam > 1 and (rescorer is None or prune))
        tokens, scores, target_mask = self._fill_positions(
            torch.from_numpy(encoder_states), input_ids, attention_mask, lengths, beam, k, need_scores
        )
        sequences = nat._finish(tokens, lengths, target_mask)  # (batch * beam, max_len)
        if need_scores:
            scores = scores + length_log_probs.repeat_interleave(beam, dim=0).gather(-1, lengths[:, None])[:, 0]
        if beam > 1:
            sequences, scores, lengths = nat._pick_candidates(
                input_ids, attention_mask, sequences, scores, lengths, beam, rescorer, config
            )
        return self._output(sequences, scores, lengths, return_dict_in_generate, device)

    def generate_many(self, batches, workers: int = 1, **kwargs) -> list:
        """`generate(**batch, **kwargs)` for every batch (dicts with `input_ids` and optionally `attention_mask`),
        with `workers` batches in flight at once, each from its own thread (ONNX Runtime releases the GIL while a
        graph runs), the counterpart of CTranslate2's `inter_threads`. On a CPU with c cores, try `workers` x
        `intra_op_num_threads` <= c. Returns the outputs in the order of `batches`."""
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer (batches in flight at once), got {workers!r}.")
        batches = list(batches)
        if workers == 1 or len(batches) < 2:
            return [self.generate(**batch, **kwargs) for batch in batches]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(workers, len(batches))) as pool:
            return list(pool.map(lambda batch: self.generate(**batch, **kwargs), batches))

    @staticmethod
    def _length_log_probs(length_logits, shortest: int, longest: int):
        """As `NATForConditionalGeneration._length_log_probs`: impossible lengths masked out, then log-softmax."""
        allowed = torch.zeros(length_logits.shape[-1], dtype=torch.bool)
        allowed[shortest : longest + 1] = True
        return length_logits.float().masked_fill(~allowed, float("-inf")).log_softmax(-1)

    def _fill_positions(self, encoder_states, input_ids, attention_mask, lengths, beam, k, need_scores):
        """Run the decoder graph at `lengths` (batch * beam,) and choose positions 0..L-2 by argmax or ODD, as
        `NATForConditionalGeneration._fill_positions` does.

        Returns:
            tokens (batch * beam, max_len), their summed scores (batch * beam,) (log-probabilities if
            `need_scores`, else raw logits), and the target mask (batch * beam, max_len).
        """
        max_len = int(lengths.max())
        target_mask = torch.arange(max_len)[None, :] < lengths[:, None]  # (batch * beam, max_len)
        rows, width = lengths.shape[0], max_len - 1
        if width == 0:  # every output is EOS alone
            return lengths.new_zeros(rows, 1), torch.zeros(rows), target_mask
        if beam > 1:  # one decoder row per candidate; the encoder ran once per source
            encoder_states = encoder_states.repeat_interleave(beam, dim=0)
            input_ids = input_ids.repeat_interleave(beam, dim=0)
            attention_mask = attention_mask.repeat_interleave(beam, dim=0)
        feeds = {
            "encoder_states": encoder_states.numpy(),
            "attention_mask": attention_mask.numpy(),
            "input_ids": input_ids.numpy(),
            "target_mask": target_mask.long().numpy(),
        }
        values, ids, states = self._decoder.run(None, {n: v for n, v in feeds.items() if n in self._decoder_inputs})
        values, ids = torch.from_numpy(values)[..., :k], torch.from_numpy(ids)[..., :k]  # (rows, width, k)
        if need_scores:
            (normaliser,) = self._normaliser.run(None, {"content_states": states})
            values = values - torch.from_numpy(normaliser)[..., None]
        content_lengths = lengths - 1
        mask = torch.arange(width)[None, :] < content_lengths[:, None]  # (rows, width): the L - 1 content positions
        values = torch.where(mask[..., None], values, 0)  # padding positions as PyTorch leaves them
        ids = torch.where(mask[..., None], ids, 0)
        if k > 1:
            chosen, scores = odd_decode(values, ids, content_lengths)
        else:
            chosen, scores = ids[..., 0], (values[..., 0] * mask).sum(-1)
        tokens = torch.cat([chosen, chosen.new_zeros(rows, 1)], dim=1)  # room for the final EOS
        return tokens, scores, target_mask

    @staticmethod
    def _output(sequences, scores, lengths, return_dict_in_generate, device):
        if return_dict_in_generate:
            return NATGenerateOutput(
                sequences=sequences.to(device), sequences_scores=scores.to(device), lengths=lengths.to(device)
            )
        return sequences.to(device)


__all__ = ["OnnxNAT", "export_onnx", "is_nat_folder"]
