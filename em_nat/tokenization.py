"""A joint source/target subword tokenizer (BPE from the `tokenizers` library) wrapped as `PreTrainedTokenizerFast`.

The NAT shares one embedding matrix between source, target and output projection (PAPER.md), so source and target
share one vocabulary. Encoding appends EOS; ids 0-3 are PAD, BOS, EOS, UNK.
"""

import os
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def _texts(source) -> Iterator[str]:
    """Yield the sentences of files, strings, or a `datasets` split with a "translation" column (both sides)."""
    if hasattr(source, "column_names") and not isinstance(source, dict):  # datasets.Dataset
        if "translation" not in source.column_names:
            raise ValueError(f"The dataset has columns {source.column_names}; a 'translation' column is needed.")
        for pair in source["translation"]:
            yield from pair.values()
        return
    if hasattr(source, "keys") and "train" in source:  # DatasetDict: train split only, never valid/test
        yield from _texts(source["train"])
        return
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    for item in source:
        if isinstance(item, (str, os.PathLike)) and os.path.isfile(item):
            with open(item, encoding="utf-8") as handle:
                yield from (line.strip() for line in handle)
        elif isinstance(item, str):
            yield item
        else:
            raise TypeError(
                f"Cannot read sentences from {type(item).__name__}; pass file paths, strings or a dataset."
            )


def train_tokenizer(
    source: Iterable[str] | str | os.PathLike,
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = False,
    model_max_length: int = 256,
) -> PreTrainedTokenizerFast:
    """Train a joint BPE tokenizer.

    Args:
        source: text file paths, an iterable of sentences, or a `datasets` Dataset/DatasetDict with a
            "translation" column (a DatasetDict contributes its "train" split only).
        vocab_size: target vocabulary size, special tokens included (smaller if the data has fewer merges).
        min_frequency: minimum pair frequency for a merge.
        lowercase: lowercase before tokenizing.
        model_max_length: what `truncation=True` cuts to by default.
    Returns:
        `PreTrainedTokenizerFast` with `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3; `save_pretrained` /
        `AutoTokenizer.from_pretrained` round-trip it.
    """
    seen = [0]

    def texts():
        for text in _texts(source):
            if text.strip():
                seen[0] += 1
                yield text

    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[SPECIAL_TOKENS[k] for k in ("pad_token", "bos_token", "eos_token", "unk_token")],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts(), trainer=trainer)
    if not seen[0]:
        raise ValueError("No text to train the tokenizer on: the source is empty or holds only blank lines.")
    eos = SPECIAL_TOKENS["eos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, tokenizer.token_to_id(eos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length, **SPECIAL_TOKENS)
