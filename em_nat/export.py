"""Export an em-nat AR (a stock `MarianMTModel`) to CTranslate2, the CPU baseline that NAT speed is measured against.

    python -m em_nat.export ct2 AR_DIR OUTPUT_DIR [--quantization int8] [--force]
    python -m em_nat.export onnx NAT_DIR OUTPUT_DIR [--int8] [--force]   (the NAT: see em_nat.onnx_export)

CTranslate2's stock Marian converter (`ct2-transformers-converter`, `TransformersConverter`) assumes OPUS-MT's layout:
`<pad>` is the last id, which it drops from the vocabulary and the weights, and the decoder starts from a zero
vector where Hugging Face's Marian starts from the embedding of `decoder_start_token_id` (`<pad>`). An AR in that
layout whose start row is zero goes through the stock converter unchanged. Otherwise a copy is prepared first, so
that CTranslate2 decodes exactly like `generate()`:

- `<pad>` not the last id (folders from before em-nat used the OPUS-MT layout had `<pad>` = 0): the rows of the
  shared embedding, `lm_head` and `final_logits_bias`, the tokenizer's vocabulary and every special id in the config
  and generation config are permuted so that `<pad>` moves to the end and all other tokens keep their order.
- a nonzero start row (training moves the `<pad>` row through the tied output projection unless
  `em_nat.models.keep_pad_embedding_zero` masks it): the decoder's first input, `embed_scale * E[start] + P[0]`, is
  folded into the decoder's position-0 encoding, which only the start step reads; CTranslate2's zero start vector
  plus that encoding is then the same first input.

Token strings are the same in every layout, so CTranslate2 (which takes tokens) works with the AR's own tokenizer;
the output folder also gets the (re-laid-out) tokenizer, whose ids match the CTranslate2 vocabulary.
"""

import argparse
import json
import logging
import os
import tempfile

import torch
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, MarianMTModel, PreTrainedTokenizerFast

from .onnx_export import OnnxNAT, export_onnx, is_nat_folder  # noqa: F401  (OnnxNAT: em_nat.export.OnnxNAT)

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")
# state-dict entries indexed by token id (rows), and the one indexed by token id on its last dimension
_VOCAB_ROW_SUFFIXES = ("shared.weight", "embed_tokens.weight", "lm_head.weight")
_VOCAB_COLUMN_KEYS = ("final_logits_bias",)
_SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


def _require_ctranslate2():
    try:
        import ctranslate2  # noqa: F401
    except ImportError as error:  # optional dependency: pip install "em-nat[ct2]"
        raise ImportError('CTranslate2 export needs ctranslate2: pip install "em-nat[ct2]"') from error


def pad_is_last(tokenizer) -> bool:
    """Whether `<pad>` is the last id (OPUS-MT layout, what CTranslate2's Marian converter expects)."""
    return tokenizer.pad_token_id == len(tokenizer) - 1


def pad_last_order(vocab_size: int, pad_token_id: int) -> list[int]:
    """Old ids in their new order: every id but `pad_token_id` in order, then `pad_token_id`.
    `order[new_id] == old_id`."""
    return [i for i in range(vocab_size) if i != pad_token_id] + [pad_token_id]


def _remap_ids(value, new_id: dict):
    """`value` (an id, a list of ids, or nested lists of ids) with every id mapped through `new_id`."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return new_id.get(value, value)
    if isinstance(value, (list, tuple)):
        return type(value)(_remap_ids(v, new_id) for v in value)
    return value


# config / generation-config fields holding token ids (besides every field named *_token_id)
_ID_LIST_FIELDS = ("bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "force_words_ids")


def _remap_config_dict(values: dict, new_id: dict) -> dict:
    return {
        key: _remap_ids(value, new_id) if key.endswith("_token_id") or key in _ID_LIST_FIELDS else value
        for key, value in values.items()
    }


def _remap_post_processor(node, new_id: dict):
    """Map the ids that a `tokenizers` post-processor (TemplateProcessing, Bert/Roberta, Sequence) stores."""
    if isinstance(node, list):
        return [_remap_post_processor(item, new_id) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "ids" and isinstance(value, list):  # TemplateProcessing special_tokens entries
            out[key] = [new_id[i] for i in value]
        elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:  # BertProcessing: [token, id]
            out[key] = [value[0], new_id[value[1]]]
        else:
            out[key] = _remap_post_processor(value, new_id)
    return out


def permute_tokenizer(tokenizer: PreTrainedTokenizerFast, order: list[int]) -> PreTrainedTokenizerFast:
    """A copy of a fast tokenizer whose token `order[i]` has id `i`; it splits text exactly as before.

    Args:
        tokenizer: a `PreTrainedTokenizerFast` (BPE, WordLevel, WordPiece or Unigram model).
        order: a permutation of `range(len(tokenizer))`, old ids in their new order.
    """
    if sorted(order) != list(range(len(tokenizer))):
        raise ValueError(f"`order` must be a permutation of range({len(tokenizer)}).")
    from tokenizers import Tokenizer

    new_id = {old: new for new, old in enumerate(order)}
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    model = data["model"]
    if isinstance(model.get("vocab"), dict):  # BPE, WordLevel, WordPiece: token -> id
        model["vocab"] = {token: new_id[i] for token, i in model["vocab"].items()}
    elif isinstance(model.get("vocab"), list):  # Unigram: [token, score] in id order
        model["vocab"] = [model["vocab"][old] for old in order]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:
        raise ValueError(f"Cannot permute a tokenizer model of type {model.get('type')}.")
    for added in data.get("added_tokens") or []:
        added["id"] = new_id[added["id"]]
    data["added_tokens"] = sorted(data.get("added_tokens") or [], key=lambda added: added["id"])
    if data.get("post_processor"):
        data["post_processor"] = _remap_post_processor(data["post_processor"], new_id)
    specials = {name: getattr(tokenizer, name) for name in _SPECIAL_TOKEN_NAMES if getattr(tokenizer, name)}
    permuted = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)),
        model_max_length=tokenizer.model_max_length,
        **specials,
    )
    moved = permuted.convert_ids_to_tokens(list(range(len(order))))
    if moved != tokenizer.convert_ids_to_tokens(order):
        raise ValueError("The permuted tokenizer does not hold the tokens in the requested order.")
    return permuted


def move_pad_last(model: MarianMTModel, tokenizer: PreTrainedTokenizerFast) -> tuple:
    """A copy of a Marian AR and its tokenizer with `<pad>` moved to the last id (OPUS-MT layout).

    The copy computes the same function: embedding, `lm_head` and `final_logits_bias` entries and every special id in
    the config and generation config follow their tokens. Returns `(model, tokenizer, order)` with
    `order[new_id] == old_id`.
    """
    vocab_size = model.config.vocab_size
    if len(tokenizer) != vocab_size:
        raise ValueError(f"The tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {vocab_size}.")
    order = pad_last_order(vocab_size, tokenizer.pad_token_id)
    new_id = {old: new for new, old in enumerate(order)}
    index = torch.tensor(order)
    state = {}
    for key, tensor in model.state_dict().items():
        if key in _VOCAB_COLUMN_KEYS:
            state[key] = tensor[..., index]
        elif key.endswith(_VOCAB_ROW_SUFFIXES):
            state[key] = tensor[index]
        elif vocab_size in tensor.shape:
            raise ValueError(f"Do not know how to permute {key} of shape {tuple(tensor.shape)} by token id.")
        else:
            state[key] = tensor
    config = type(model.config).from_dict(_remap_config_dict(model.config.to_dict(), new_id))
    moved = type(model)(config).eval()
    missing, unexpected = moved.load_state_dict(state, strict=False)
    if unexpected or any("embed_positions" not in key for key in missing):  # sinusoids are rebuilt, not loaded
        raise ValueError(f"The permuted weights do not fit: missing {missing}, unexpected {unexpected}.")
    moved.generation_config = GenerationConfig.from_dict(_remap_config_dict(model.generation_config.to_dict(), new_id))
    return moved, permute_tokenizer(tokenizer, order), order


def start_embedding(model: MarianMTModel) -> torch.Tensor:
    """The decoder's start-token embedding row (unscaled), shape (d_model,)."""
    decoder = model.get_decoder()
    return decoder.embed_tokens.weight[model.config.decoder_start_token_id].detach()


def fold_start_embedding(model: MarianMTModel) -> MarianMTModel:
    """Add the decoder's scaled start embedding to its position-0 encoding (in place), so that a decoder starting
    from a zero vector, as CTranslate2's does, gets the same first input `embed_scale * E[start] + P[0]`. Position 0
    is read only at the start step. For conversion only: `generate()` on the result would add E[start] twice."""
    decoder = model.get_decoder()
    positions = decoder.embed_positions.weight.detach().clone()  # (max_positions, d_model)
    positions[0] += decoder.embed_scale * start_embedding(model)
    decoder.embed_positions.weight = torch.nn.Parameter(positions, requires_grad=False)
    return model


def _is_marian(model_dir):
    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type != "marian":
        return False
    if not getattr(config, "share_encoder_decoder_embeddings", True):
        raise ValueError("Only Marian ARs with shared source/target embeddings (em-nat's layout) are supported.")
    return True


def _folding_converter(model_dir):
    """The stock `TransformersConverter`, fed the model with its start embedding folded into position 0."""
    from ctranslate2.converters import TransformersConverter

    class FoldingConverter(TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            return fold_start_embedding(super().load_model(model_class, model_name_or_path, **kwargs))

    return FoldingConverter(model_dir)


def convert_to_ct2(
    model_dir: str | os.PathLike, output_dir: str | os.PathLike, quantization: str | None = None, force: bool = False
) -> dict:
    """Convert a saved em-nat AR (model + tokenizer folder) to a CTranslate2 folder that decodes like `generate()`.

    Args:
        model_dir: `save_pretrained` folder of the AR with its tokenizer. Marian ARs in any `<pad>` layout; other
            architectures go to the stock converter as they are.
        output_dir: the CTranslate2 model folder to write (with the tokenizer whose ids match its vocabulary).
        quantization: weight type (`int8`, `float16`, ...; default: as stored, float32).
        force: overwrite `output_dir`.
    Returns:
        What was done: `{"output_dir", "pad_moved", "start_folded", "quantization"}`.
    """
    _require_ctranslate2()
    from ctranslate2.converters import TransformersConverter

    model_dir, output_dir = os.fspath(model_dir), os.fspath(output_dir)
    report = {"output_dir": output_dir, "pad_moved": False, "start_folded": False, "quantization": quantization}
    if not _is_marian(model_dir):
        TransformersConverter(model_dir).convert(output_dir, quantization=quantization, force=force)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(output_dir)
        return report
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token != "<pad>":
        raise ValueError(
            f"CTranslate2's Marian converter drops a last token named '<pad>'; this pad is {tokenizer.pad_token!r}."
        )
    model = MarianMTModel.from_pretrained(model_dir).eval()
    report["pad_moved"] = not pad_is_last(tokenizer)
    report["start_folded"] = bool(start_embedding(model).any())
    with tempfile.TemporaryDirectory(prefix="em-nat-ct2-") as scratch:
        source = model_dir
        if report["pad_moved"]:
            model, tokenizer, _ = move_pad_last(model, tokenizer)
            model.save_pretrained(scratch)
            tokenizer.save_pretrained(scratch)
            source = scratch
        converter = _folding_converter(source) if report["start_folded"] else TransformersConverter(source)
        converter.convert(output_dir, quantization=quantization, force=force)
    tokenizer.save_pretrained(output_dir)
    logger.info("Converted %s to CTranslate2 in %s (%s)", model_dir, output_dir, report)
    return report


def load_ct2_translator(
    model_dir: str | os.PathLike,
    device: str = "cpu",
    device_index: int = 0,
    compute_type: str = "default",
    intra_threads: int = 1,
    inter_threads: int = 1,
):
    """A `ctranslate2.Translator` on a converted folder.

    Args:
        model_dir: a folder written by [`convert_to_ct2`] (or any CTranslate2 model).
        device: "cpu", "cuda" or "auto".
        device_index: the GPU's index when `device` is "cuda".
        compute_type: "default" (as converted), "int8", "float32", ... (converted at load time when it differs).
        intra_threads: OpenMP threads per translation. Default 1: on small CPUs more threads can be much slower at
            batch 1 (measure with examples/benchmark.py, which sweeps 1 and 2).
        inter_threads: translations run in parallel (throughput on several batches submitted together).
    """
    _require_ctranslate2()
    import ctranslate2

    if not os.path.isfile(os.path.join(os.fspath(model_dir), "model.bin")):
        raise FileNotFoundError(
            f"{model_dir} is not a CTranslate2 model folder (no model.bin). Convert the AR first: "
            f"python -m em_nat.export ct2 AR_DIR {model_dir}"
        )
    return ctranslate2.Translator(
        os.fspath(model_dir),
        device=device,
        device_index=device_index,
        compute_type=compute_type,
        intra_threads=intra_threads,
        inter_threads=inter_threads,
    )


def ct2_translate(translator, tokenizer, sentences: list[str], beam_size: int = 1, **options) -> list[str]:
    """Translate sentences with a CTranslate2 translator and the AR's tokenizer (any layout: tokens are strings).

    `options` go to `Translator.translate_batch` (`max_decoding_length`, `length_penalty`, ...)."""
    tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(sentences)["input_ids"]]
    results = translator.translate_batch(tokens, beam_size=beam_size, **options)
    ids = [tokenizer.convert_tokens_to_ids(result.hypotheses[0]) for result in results]
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


class CT2Rescorer:
    """A CTranslate2 AR as the rescorer of the NAT's length beam: `nat.generate(..., length_beam=9,
    rescorer=CT2Rescorer.from_pretrained(CT2_DIR, tokenizer))`. Each candidate is scored in one teacher-forced pass
    (`Translator.score_batch`) and divided by the GNMT length penalty, as `ar_rescore` does with a PyTorch AR.

    Args:
        translator: a `ctranslate2.Translator` of the AR (`convert_to_ct2`, `load_ct2_translator`).
        tokenizer: the tokenizer the NAT and the AR share (ids are passed to CTranslate2 as token strings).
    """

    def __init__(self, translator, tokenizer):
        self.translator, self.tokenizer = translator, tokenizer
        self.vocab_size = len(tokenizer)
        self.pad_token_id, self.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, tokenizer, **translator_options) -> "CT2Rescorer":
        """`model_dir`: a converted folder; `tokenizer`: a tokenizer or its folder; `translator_options` go to
        [`load_ct2_translator`] (`compute_type`, `intra_threads`, `device`...)."""
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        return cls(load_ct2_translator(model_dir, **translator_options), tokenizer)

    def rescore(self, input_ids, attention_mask, candidates, alpha: float = 0.6) -> torch.Tensor:
        """(batch, m) summed log-probabilities of `candidates` (batch, m, tgt_len; EOS-terminated, PAD-padded)
        given the sources, over their tokens up to EOS included, divided by the GNMT length penalty."""
        from .modeling.decoding import gnmt_length_penalty

        batch, m, _ = candidates.shape
        if attention_mask is None:
            attention_mask = input_ids.ne(self.pad_token_id)
        sources = [
            self.tokenizer.convert_ids_to_tokens(row[mask.bool()].tolist())
            for row, mask in zip(input_ids.cpu(), attention_mask.cpu())
        ]
        targets = []
        for row in candidates.reshape(batch * m, -1).tolist():
            content = row[: row.index(self.eos_token_id)] if self.eos_token_id in row else row
            targets.append(self.tokenizer.convert_ids_to_tokens([t for t in content if t != self.pad_token_id]))
        results = self.translator.score_batch([s for s in sources for _ in range(m)], targets)
        log_probs = torch.tensor([sum(r.log_probs) for r in results], dtype=torch.float64).view(batch, m)
        lengths = torch.tensor([len(r.log_probs) for r in results]).view(batch, m)  # tokens + EOS
        return (log_probs / gnmt_length_penalty(lengths, alpha)).float()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m em_nat.export", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ct2 = commands.add_parser("ct2", help="Convert an em-nat AR folder to CTranslate2.")
    ct2.add_argument("model_dir", help="save_pretrained folder of the AR with its tokenizer.")
    ct2.add_argument("output_dir", help="CTranslate2 model folder to write.")
    ct2.add_argument("--quantization", choices=QUANTIZATIONS, default=None, help="Weight type (default float32).")
    ct2.add_argument("--force", action="store_true", help="Overwrite output_dir.")
    onnx = commands.add_parser("onnx", help="Export an em-nat NAT folder to ONNX Runtime (em_nat.onnx_export).")
    onnx.add_argument("model_dir", help="save_pretrained folder of the NAT with its tokenizer.")
    onnx.add_argument("output_dir", help="folder to write (graphs, config, generation config, tokenizer).")
    onnx.add_argument("--int8", action="store_true", help="Also write dynamic-int8 graphs (loaded by default).")
    onnx.add_argument("--per-channel", action="store_true", help="int8: per-channel weight scales.")
    onnx.add_argument("--reduce-range", action="store_true", help="int8: 7-bit weights (CPUs without VNNI).")
    onnx.add_argument("--force", action="store_true", help="Overwrite output_dir.")
    args = parser.parse_args(argv)
    partner = "AR" if args.command == "ct2" else "NAT"
    if not os.path.isfile(os.path.join(args.model_dir, "config.json")):
        parser.error(f"{args.model_dir} is not a saved model folder (no config.json); pass the {partner}'s folder.")
    if args.command == "onnx" and not is_nat_folder(args.model_dir):
        parser.error(f"{args.model_dir} does not hold an em-nat NAT; `onnx` exports a NAT (`ct2` converts an AR).")
    if os.path.exists(args.output_dir) and not args.force:
        parser.error(f"{args.output_dir} already exists; pass --force to overwrite it, or another output_dir.")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "onnx":
        report = export_onnx(
            args.model_dir,
            args.output_dir,
            int8=args.int8,
            force=args.force,
            per_channel=args.per_channel,
            reduce_range=args.reduce_range,
        )
    else:
        report = convert_to_ct2(args.model_dir, args.output_dir, quantization=args.quantization, force=args.force)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
