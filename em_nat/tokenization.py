"""A joint source/target subword tokenizer (BPE from the `tokenizers` library) wrapped as `PreTrainedTokenizerFast`.

The NAT shares one embedding matrix between source, target and output projection (PAPER.md), so source and target
share one vocabulary. Encoding appends EOS; ids 0-2 are BOS, EOS, UNK and PAD is the last id, the layout of OPUS-MT
Marian models, which is what CTranslate2's stock Marian converter expects (it drops the last row, `<pad>`, and
starts the decoder from a zero embedding). Tokenizers saved with an older layout (`<pad>` = 0) stay loadable: the ids
are read from the saved files, never assumed.
"""

import os
from collections.abc import Iterable, Iterator

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
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
        `PreTrainedTokenizerFast` with `<s>`=0, `</s>`=1, `<unk>`=2 and `<pad>` the last id; `save_pretrained` /
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
    if vocab_size < 5:
        raise ValueError(f"vocab_size must be >= 5 (4 special tokens and at least one symbol), got {vocab_size}.")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # <pad> is added after training, as the last id
        min_frequency=min_frequency,
        special_tokens=[SPECIAL_TOKENS[k] for k in ("bos_token", "eos_token", "unk_token")],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts(), trainer=trainer)
    if not seen[0]:
        raise ValueError("No text to train the tokenizer on: the source is empty or holds only blank lines.")
    tokenizer.add_special_tokens([AddedToken(SPECIAL_TOKENS["pad_token"], special=True)])
    eos = SPECIAL_TOKENS["eos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, tokenizer.token_to_id(eos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length, **SPECIAL_TOKENS)
