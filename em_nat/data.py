"""Parallel data for training: local files or `datasets` datasets -> a `DatasetDict` with a "translation" column.

Every split comes out in the Hugging Face convention for translation data: a column `"translation"` holding
`{source_lang: str, target_lang: str}` per example (the layout of `wmt16`, `opus_books`, ...), so tokenizers and
trainers see one shape whatever the input was:

- plain text: two line-aligned files (`("train.en", "train.de")`) or a prefix (`"data/train"` for `data/train.en` and
  `data/train.de`, the Multi30k and fairseq layout); lines are split on "\\n" only, as `wc -l` counts them;
- TSV: one file, `source<TAB>target` per line, optionally a header line naming the two languages;
- JSONL: one file, each line `{"translation": {"en": ..., "de": ...}}` or `{"en": ..., "de": ...}`;
- a `datasets` name (Hub or a local folder written by `DatasetDict.save_to_disk`), or an in-memory `Dataset` /
  `DatasetDict` through `from_dataset`, with a "translation" column or one string column per language.

Bad input fails here, before any training, with a `DataError` (a `ValueError`) or a `FileNotFoundError` whose
message names the file, the line and the fix. The library never prints; it logs through `logging`.
"""

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

FORMATS = ("text", "tsv", "jsonl")
SPLITS = ("train", "validation", "test")
MAX_LISTED = 5  # line numbers quoted in one error message
SCAN_BATCH_SIZE = 10_000  # rows per batch when checking a `datasets` split for empty sentences
EMPTY_FIX = (
    "Fix: clean the data (remove or complete those pairs), or pass drop_empty=True to drop such pairs "
    "(examples/train_em.py: --drop_empty)."
)


class DataError(ValueError):
    """Parallel data that cannot be trained on; the message names the problem and how to fix it."""


@dataclass
class _FilePairs:
    """Sentence pairs read from local files, with where each pair came from (for error messages)."""

    sources: list[str]
    targets: list[str]
    line_numbers: list[int]  # 1-based line of each pair in its file(s)
    source_file: Path
    target_file: Path  # the same file as source_file for TSV and JSONL


def load_parallel_data(
    train=None,
    validation=None,
    test=None,
    *,
    source_lang: str,
    target_lang: str,
    dataset_name: str | os.PathLike | None = None,
    dataset_config: str | None = None,
    format: str | None = None,
    max_samples: int | None = None,
    strip: bool = True,
    drop_empty: bool = False,
    require_train: bool = True,
) -> datasets.DatasetDict:
    """Load parallel data into a `DatasetDict` whose splits have a `"translation"` column.

    Args:
        train, validation, test: local data for that split, or `None`: a `(source_file, target_file)` pair of
            line-aligned text files, a prefix `"dir/name"` for `dir/name.<source_lang>` and `dir/name.<target_lang>`,
            a `.tsv` file or a `.jsonl`/`.json` (JSON Lines) file. Without `format` the format comes from the
            extension, else from the first line (a `{` means JSONL, a TAB means TSV).
        source_lang, target_lang: language codes, the keys inside "translation" (file suffixes for text files).
        dataset_name: a `datasets.load_dataset` name (Hub or local), or a folder saved with
            `DatasetDict.save_to_disk` (a saved single `Dataset` becomes the train split). Its splits are validated by
            `from_dataset`; a split also given as local files is taken from the files.
        dataset_config: the configuration of `dataset_name` (e.g. `"de-en"` for `wmt16`).
        format: `"text"`, `"tsv"` or `"jsonl"` to force the format of every local split.
        max_samples: keep only the first `max_samples` pairs of each split (quick runs). The whole input is still
            validated, so a quick run fails on the same bad lines as the full one.
        strip: strip whitespace from both ends of every sentence. Inner whitespace, TABs included, is kept.
        drop_empty: drop pairs with an empty side (after stripping) and log how many, instead of raising.
        require_train: raise unless the result has a "train" split.

    Returns:
        `datasets.DatasetDict` with the given splits (train, validation, test, then any other split of the named
        dataset), each with a "translation" column of `{source_lang: str, target_lang: str}`.

    Raises:
        FileNotFoundError: a file does not exist.
        DataError: anything else that cannot be trained on (misaligned files, empty sentences, bad TSV rows or
            JSONL records, missing languages or columns, no train split, unreachable Hub dataset).
    """
    _check_languages(source_lang, target_lang)
    if format is not None and format not in FORMATS:
        raise DataError(f"format={format!r} is not supported; use one of {FORMATS} or None to infer it.")
    _check_max_samples(max_samples)
    local = {split: spec for split, spec in zip(SPLITS, (train, validation, test)) if spec is not None}
    if require_train and "train" not in local and dataset_name is None:
        raise DataError(
            "No training data: pass train=... (a (source_file, target_file) pair, a prefix, a .tsv or a .jsonl "
            "file) or dataset_name=... for a dataset with a 'train' split; pass require_train=False to load "
            "evaluation splits only."
        )

    # Local files first: reading them is cheap, and their errors should come before any download.
    read = {
        split: _read_split(split, spec, source_lang, target_lang, format, strip, drop_empty)
        for split, spec in local.items()
    }
    result = {}
    if dataset_name is not None:
        named = _load_named_dataset(dataset_name, dataset_config)
        if require_train and "train" not in local and "train" not in named:
            raise DataError(
                f"No training data: the dataset {str(dataset_name)!r} has splits {list(named)} and no 'train' split. "
                "Pass train=... with local files, or require_train=False to load evaluation splits only."
            )
        for split in local:
            if split in named:
                logger.info("Split %r of %s is replaced by the local files given for it.", split, dataset_name)
        named = datasets.DatasetDict({name: split for name, split in named.items() if name not in local})
        result.update(
            from_dataset(named, source_lang, target_lang, strip=strip, drop_empty=drop_empty, max_samples=max_samples)
        )
    for split, file_pairs in read.items():
        result[split] = _to_dataset(
            file_pairs.sources[:max_samples], file_pairs.targets[:max_samples], source_lang, target_lang
        )

    order = [split for split in SPLITS if split in result] + [split for split in result if split not in SPLITS]
    return datasets.DatasetDict({split: result[split] for split in order})


def from_dataset(
    dataset: datasets.Dataset | datasets.DatasetDict,
    source_lang: str,
    target_lang: str,
    *,
    strip: bool = True,
    drop_empty: bool = False,
    max_samples: int | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """Validate a `datasets` dataset and bring it to the "translation" layout.

    Accepts a "translation" column whose feature is `datasets.Translation` or a dict of string features with both
    languages (other languages in it are dropped), or two string columns named `source_lang` and `target_lang`
    (turned into a "translation" column). Other columns are kept.

    Args:
        dataset: a `Dataset` (one split) or a `DatasetDict`.
        source_lang, target_lang: the language codes to keep.
        strip, drop_empty, max_samples: as in `load_parallel_data`.

    Returns:
        The same kind of object as `dataset`, every split with a "translation" column of
        `{source_lang: str, target_lang: str}`.
    """
    _check_languages(source_lang, target_lang)
    _check_max_samples(max_samples)
    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict(
            {
                name: _convert_split(name, split, source_lang, target_lang, strip, drop_empty, max_samples)
                for name, split in dataset.items()
            }
        )
    if isinstance(dataset, datasets.Dataset):
        return _convert_split("dataset", dataset, source_lang, target_lang, strip, drop_empty, max_samples)
    if isinstance(dataset, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise DataError("Streaming (iterable) datasets are not supported; load the dataset without streaming=True.")
    raise DataError(f"Expected a datasets.Dataset or datasets.DatasetDict, got {type(dataset).__name__}.")


# ---------------------------------------------------------------------------------------------------- arguments


def _check_languages(source_lang, target_lang) -> None:
    for name, lang in (("source_lang", source_lang), ("target_lang", target_lang)):
        if not isinstance(lang, str) or not lang:
            raise DataError(f"{name} must be a non-empty language code such as 'en', got {lang!r}.")
    if source_lang == target_lang:
        raise DataError(f"source_lang and target_lang are both {source_lang!r}; they must differ.")


def _check_max_samples(max_samples) -> None:
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise DataError(f"max_samples must be a positive integer or None, got {max_samples!r}.")


# ---------------------------------------------------------------------------------------------------- local files


def _read_split(split, spec, source_lang, target_lang, format, strip, drop_empty) -> _FilePairs:
    """Read, validate and (with drop_empty) filter the local data of one split."""
    kind, paths = _resolve(split, spec, source_lang, target_lang, format)
    if kind == "text":
        file_pairs = _read_text_pair(split, *paths, strip)
    elif kind == "tsv":
        file_pairs = _read_tsv(paths[0], source_lang, target_lang, strip)
    else:
        file_pairs = _read_jsonl(paths[0], source_lang, target_lang, strip)
    if not file_pairs.sources:
        raise DataError(f"Split {split!r}: {_describe_files(file_pairs)} holds no sentence pairs.")

    empty_src = [i for i, text in enumerate(file_pairs.sources) if not text.strip()]
    empty_tgt = [i for i, text in enumerate(file_pairs.targets) if not text.strip()]
    drop = _empty_policy(
        split,
        len(file_pairs.sources),
        [(source_lang, file_pairs.source_file, empty_src), (target_lang, file_pairs.target_file, empty_tgt)],
        lambda i: file_pairs.line_numbers[i],
        "line",
        drop_empty,
    )
    if drop:
        keep = [i for i in range(len(file_pairs.sources)) if i not in drop]
        file_pairs.sources = [file_pairs.sources[i] for i in keep]
        file_pairs.targets = [file_pairs.targets[i] for i in keep]
        file_pairs.line_numbers = [file_pairs.line_numbers[i] for i in keep]
    return file_pairs


def _resolve(split, spec, source_lang, target_lang, format) -> tuple[str, tuple[Path, ...]]:
    """The format of one split's local data and its file(s)."""
    if isinstance(spec, (list, tuple)):
        if len(spec) != 2:
            raise DataError(f"Split {split!r}: expected a (source_file, target_file) pair, got {len(spec)} items.")
        if format not in (None, "text"):
            raise DataError(
                f"Split {split!r}: format={format!r} reads one file, but a pair of files was given; "
                "a pair of files is the 'text' format."
            )
        return "text", (Path(spec[0]).expanduser(), Path(spec[1]).expanduser())
    if not isinstance(spec, (str, os.PathLike)):
        raise DataError(
            f"Split {split!r}: expected a file path, a prefix or a (source_file, target_file) pair, "
            f"got {type(spec).__name__}."
        )

    path = Path(spec).expanduser()
    prefixed = (_with_language(path, source_lang), _with_language(path, target_lang))
    if format == "text" or (format is None and not path.exists() and any(p.exists() for p in prefixed)):
        return "text", prefixed
    if not path.exists():
        raise FileNotFoundError(
            f"Split {split!r}: {path} does not exist (absolute: {path.resolve()}), nor do the files of the prefix "
            f"layout {prefixed[0]} and {prefixed[1]}. Check the path."
        )
    if path.is_dir():
        raise DataError(
            f"Split {split!r}: {path} is a directory. Pass a file, a prefix such as {path / 'train'} for "
            f"train.{source_lang}/train.{target_lang}, or dataset_name={str(path)!r} for a folder saved with "
            "DatasetDict.save_to_disk."
        )
    if format is not None:
        return format, (path,)
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "tsv", (path,)
    if suffix in (".jsonl", ".json"):
        return "jsonl", (path,)
    return _sniff(split, path), (path,)


def _with_language(prefix: Path, lang: str) -> Path:
    return prefix.with_name(f"{prefix.name}.{lang}")


def _sniff(split, path: Path) -> str:
    """Guess TSV or JSONL from the first non-blank line of a file with an unknown extension."""
    first = next((line for _, line in _lines(path) if line.strip()), "")
    if first.lstrip().startswith("{"):
        kind = "jsonl"
    elif "\t" in first:
        kind = "tsv"
    else:
        raise DataError(
            f"Split {split!r}: cannot tell the format of {path} (extension {path.suffix or 'none'}, first line is "
            "neither a JSON object nor TAB-separated). Pass format='tsv' or format='jsonl', or for plain text a "
            "(source_file, target_file) pair or a prefix."
        )
    logger.info("Reading %s as %s (from its first line).", path, kind.upper())
    return kind


def _open(path: Path):
    # newline="\n": lines end at "\n" only (a stray "\r" or U+2028 inside a sentence must not shift the alignment);
    # utf-8-sig: a byte-order mark at the start of the file is not part of the first sentence.
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist or is not a file (absolute: {path.resolve()}).")
    return open(path, encoding="utf-8-sig", newline="\n")


def _lines(path: Path):
    """Yield (line_number, line without its line ending) of a UTF-8 file."""
    with _open(path) as f:
        try:
            for number, line in enumerate(f, start=1):
                line = line[:-1] if line.endswith("\n") else line
                yield number, line[:-1] if line.endswith("\r") else line
        except UnicodeDecodeError as err:
            raise DataError(f"{path} is not valid UTF-8 ({err}); re-encode it as UTF-8.") from err


def _clean(text: str, strip: bool) -> str:
    return text.strip() if strip else text


def _read_text_pair(split, source_file: Path, target_file: Path, strip: bool) -> _FilePairs:
    sources = [_clean(line, strip) for _, line in _lines(source_file)]
    targets = [_clean(line, strip) for _, line in _lines(target_file)]
    if len(sources) != len(targets):
        raise DataError(
            f"Split {split!r}: the files are not line-aligned: {source_file} has {len(sources)} lines but "
            f"{target_file} has {len(targets)}. Line i of one file must translate line i of the other; check that "
            "both files are complete and that no line was added, removed or split."
        )
    return _FilePairs(sources, targets, list(range(1, len(sources) + 1)), source_file, target_file)


def _read_tsv(path: Path, source_lang: str, target_lang: str, strip: bool) -> _FilePairs:
    sources, targets, numbers, bad_rows = [], [], [], []
    swap = False
    for number, line in _lines(path):
        if not line.strip():  # an empty pair: reported (or dropped) with the other empty sentences
            sources.append("")
            targets.append("")
            numbers.append(number)
            continue
        cells = line.split("\t")
        if number == 1:
            header = [cell.strip() for cell in cells]
            if header == [source_lang, target_lang] or header == [target_lang, source_lang]:
                swap = header[0] == target_lang
                logger.info("%s: header line %r, columns %s.", path, line, header)
                continue
            if _looks_like_language_header(header):
                raise DataError(
                    f"{path}: the first line {line.strip()!r} looks like a header naming the languages {header}, "
                    f"but this run's languages are {source_lang!r} -> {target_lang!r}. Pass source_lang/target_lang "
                    f"to match it (--source_lang {header[0]} --target_lang {header[1]}), or remove the line."
                )
        if len(cells) != 2:
            bad_rows.append((number, len(cells)))
            continue
        source, target = (cells[1], cells[0]) if swap else (cells[0], cells[1])
        sources.append(_clean(source, strip))
        targets.append(_clean(target, strip))
        numbers.append(number)
    if bad_rows:
        listed = ", ".join(f"line {number} has {count}" for number, count in bad_rows[:MAX_LISTED])
        more = f" (and {len(bad_rows) - MAX_LISTED} more lines)" if len(bad_rows) > MAX_LISTED else ""
        raise DataError(
            f"{path}: every line must have exactly 2 TAB-separated columns ({source_lang}<TAB>{target_lang}), but "
            f"{listed} columns{more}. A TAB inside a sentence cannot be told apart from the separator: replace it "
            "with a space, or use two line-aligned text files or JSONL."
        )
    return _FilePairs(sources, targets, numbers, path, path)


# ISO 639-1 codes, optionally with a region or script (`pt_BR`, `zh-Hant`), and the generic column names
ISO_639_1 = set(
    "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el en "
    "eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv "
    "ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne "
    "ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st "
    "su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu".split()
)
GENERIC_COLUMNS = {"src", "tgt", "source", "target"}


def _is_language_code(cell: str) -> bool:
    base, _, region = cell.replace("-", "_").partition("_")
    if cell in GENERIC_COLUMNS:
        return True
    return base in ISO_639_1 and (not region or re.fullmatch(r"[A-Za-z]{2,4}", region) is not None)


def _looks_like_language_header(cells: list[str]) -> bool:
    """Two different language codes (`en`, `de`, `pt_BR`, `src`...): a header, not a sentence pair."""
    return len(cells) == 2 and cells[0] != cells[1] and all(_is_language_code(cell) for cell in cells)


def _read_jsonl(path: Path, source_lang: str, target_lang: str, strip: bool) -> _FilePairs:
    example = json.dumps({"translation": {source_lang: "...", target_lang: "..."}})
    sources, targets, numbers = [], [], []
    for number, line in _lines(path):
        if not line.strip():  # blank lines separate nothing in JSON Lines; skipping them is the common reading
            continue
        if number == 1 and line.lstrip().startswith("["):
            raise DataError(
                f"{path} holds a JSON array; this loader reads JSON Lines, one object per line such as {example}. "
                "Convert the file (e.g. `jq -c '.[]' in.json > out.jsonl`)."
            )
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}, line {number}: not valid JSON ({err.msg} at column {err.colno}). Each line must be one "
                f"JSON object such as {example}."
            ) from err
        if not isinstance(record, dict):
            raise DataError(
                f"{path}, line {number}: expected a JSON object such as {example}, got {type(record).__name__}."
            )
        pair, where = record, "object"
        if "translation" in record:
            pair, where = record["translation"], "'translation' object"
            if not isinstance(pair, dict):
                raise DataError(
                    f"{path}, line {number}: 'translation' must be an object such as {example}, "
                    f"got {type(pair).__name__}."
                )
        for lang in (source_lang, target_lang):
            if lang not in pair:
                raise DataError(
                    f"{path}, line {number}: no {lang!r} sentence; the {where} has keys {sorted(pair)}. Every line "
                    f"needs both languages, e.g. {example}; check source_lang/target_lang against the file."
                )
            if not isinstance(pair[lang], str):
                raise DataError(
                    f"{path}, line {number}: the {lang!r} value is {type(pair[lang]).__name__} "
                    f"({json.dumps(pair[lang])[:60]}), not a string."
                )
        sources.append(_clean(pair[source_lang], strip))
        targets.append(_clean(pair[target_lang], strip))
        numbers.append(number)
    return _FilePairs(sources, targets, numbers, path, path)


def _describe_files(file_pairs: _FilePairs) -> str:
    if file_pairs.source_file == file_pairs.target_file:
        return str(file_pairs.source_file)
    return f"{file_pairs.source_file} / {file_pairs.target_file}"


def _to_dataset(sources: list[str], targets: list[str], source_lang: str, target_lang: str) -> datasets.Dataset:
    features = datasets.Features({"translation": datasets.Translation(languages=[source_lang, target_lang])})
    rows = [{source_lang: source, target_lang: target} for source, target in zip(sources, targets)]
    return datasets.Dataset.from_dict({"translation": rows}, features=features)


# ---------------------------------------------------------------------------------------------------- empty pairs


def _empty_policy(
    split: str,
    total: int,
    sides: Sequence[tuple[str, object, list[int]]],
    position: Callable[[int], int],
    unit: str,
    drop_empty: bool,
) -> set[int]:
    """Raise on pairs with an empty side, or with drop_empty return their indices to drop.

    Args:
        sides: `(language, where, indices of empty sentences)` for the source and the target side.
        position: maps an index to what the user can look up (a line number in a file, a row of a dataset).
        unit: the name of that position ("line" or "row").
    """
    drop = {index for _, _, indices in sides for index in indices}
    if not drop:
        return drop
    if drop_empty:
        logger.warning(
            "Split %r: dropped %d of %d pairs with an empty sentence (drop_empty=True).", split, len(drop), total
        )
        if len(drop) == total:
            raise DataError(f"Split {split!r}: all {total} pairs have an empty sentence; nothing is left to train on.")
        return drop
    details = []
    for lang, where, indices in sides:
        if indices:
            listed = ", ".join(str(position(index)) for index in indices[:MAX_LISTED])
            more = ", ..." if len(indices) > MAX_LISTED else ""
            details.append(f"{len(indices)} empty {lang!r} sentence(s) in {where} at {unit}(s) {listed}{more}")
    raise DataError(
        f"Split {split!r}: {'; '.join(details)} (empty after stripping whitespace). A pair with an empty side "
        f"teaches the model to translate something into nothing. {EMPTY_FIX}"
    )


# ---------------------------------------------------------------------------------------------------- datasets


def _load_named_dataset(dataset_name, dataset_config) -> datasets.DatasetDict:
    path = Path(dataset_name).expanduser()
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        if dataset_config is not None:
            raise DataError(
                f"dataset_config={dataset_config!r} was given, but {path} is a folder saved with save_to_disk, "
                "which has no configurations; drop dataset_config."
            )
        loaded = datasets.load_from_disk(str(path))
    else:
        try:
            loaded = datasets.load_dataset(str(dataset_name), dataset_config)
        except Exception as err:  # re-raised with the context a user needs; the original stays chained
            raise DataError(
                f"datasets.load_dataset({str(dataset_name)!r}, {dataset_config!r}) failed: "
                f"{type(err).__name__}: {err}\nIf this is a Hugging Face Hub dataset, the Hub may be unreachable "
                "(no network, or HF_HUB_OFFLINE=1 without a cached copy). Load it where the Hub is reachable and "
                "save it with DatasetDict.save_to_disk, then pass that folder as dataset_name; or pass local files "
                "(train=..., validation=..., test=...)."
            ) from err
    if isinstance(loaded, datasets.Dataset):
        logger.info("%s holds a single dataset; it is used as the 'train' split.", dataset_name)
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def _is_string(feature) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _layout(split: str, dataset: datasets.Dataset, source_lang: str, target_lang: str) -> tuple[str, list[str]]:
    """Which layout a split has ("translation" or "columns") and, for "translation", all languages in it."""
    features = dataset.features
    if "translation" in features:
        feature = features["translation"]
        if isinstance(feature, datasets.Translation):
            languages = list(feature.languages)
        elif isinstance(feature, dict):
            languages = list(feature)
            not_strings = [
                lang for lang in (source_lang, target_lang) if lang in feature and not _is_string(feature[lang])
            ]
            if not_strings:
                raise DataError(
                    f"Split {split!r}: the 'translation' entries {not_strings} are not strings (features: {feature})."
                )
        else:
            raise DataError(
                f"Split {split!r}: the 'translation' column has feature {type(feature).__name__}; expected "
                "datasets.Translation or a dict of language -> string (variable-language translation columns are "
                "not supported)."
            )
        missing = [lang for lang in (source_lang, target_lang) if lang not in languages]
        if missing:
            raise DataError(
                f"Split {split!r}: the 'translation' column has languages {languages}, not {missing}. Pass "
                f"source_lang/target_lang from {languages}."
            )
        return "translation", languages
    if source_lang in features and target_lang in features:
        not_strings = [lang for lang in (source_lang, target_lang) if not _is_string(features[lang])]
        if not_strings:
            raise DataError(f"Split {split!r}: the columns {not_strings} are not string columns ({features}).")
        return "columns", [source_lang, target_lang]
    raise DataError(
        f"Split {split!r} has columns {dataset.column_names}: it needs a 'translation' column with {source_lang!r} "
        f"and {target_lang!r} sentences, or two string columns named {source_lang!r} and {target_lang!r}. Rename "
        "the columns (Dataset.rename_column) or pass the matching source_lang/target_lang."
    )


def _side_columns(batch, layout: str, source_lang: str, target_lang: str) -> tuple[list, list]:
    """The source and target sentences of a pyarrow batch, as Python lists (None where missing)."""
    if layout == "translation":
        column = batch.column("translation")
        return pc.struct_field(column, source_lang).to_pylist(), pc.struct_field(column, target_lang).to_pylist()
    return batch.column(source_lang).to_pylist(), batch.column(target_lang).to_pylist()


def _convert_split(split, dataset, source_lang, target_lang, strip, drop_empty, max_samples) -> datasets.Dataset:
    layout, languages = _layout(split, dataset, source_lang, target_lang)

    # One pass over the whole split (as with files): empty or missing sentences, and whether stripping changes any.
    empty_src, empty_tgt, needs_strip, offset = [], [], False, 0
    for batch in dataset.with_format("arrow").iter(batch_size=SCAN_BATCH_SIZE):
        sources, targets = _side_columns(batch, layout, source_lang, target_lang)
        for side, empty in ((sources, empty_src), (targets, empty_tgt)):
            for i, text in enumerate(side):
                if text is None or not text.strip():
                    empty.append(offset + i)
                elif not needs_strip and text != text.strip():
                    needs_strip = True
        offset += batch.num_rows
    if offset == 0:
        raise DataError(f"Split {split!r} holds no sentence pairs.")
    drop = _empty_policy(
        split,
        offset,
        [(source_lang, f"split {split!r}", empty_src), (target_lang, f"split {split!r}", empty_tgt)],
        lambda i: i,
        "row",
        drop_empty,
    )
    if drop:
        dataset = dataset.select([i for i in range(offset) if i not in drop])
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.select(range(max_samples))

    if layout == "translation" and len(languages) == 2 and not (strip and needs_strip):
        return dataset  # already in shape: no copy of a possibly large dataset

    def rewrite(batch):
        if layout == "translation":
            sources = [pair[source_lang] for pair in batch["translation"]]
            targets = [pair[target_lang] for pair in batch["translation"]]
        else:
            sources, targets = batch[source_lang], batch[target_lang]
        return {
            "translation": [
                {source_lang: _clean(source, strip), target_lang: _clean(target, strip)}
                for source, target in zip(sources, targets)
            ]
        }

    features = datasets.Features(
        {
            name: feature
            for name, feature in dataset.features.items()
            if layout == "translation" or name not in languages
        }
    )
    features["translation"] = datasets.Translation(languages=[source_lang, target_lang])
    remove = [source_lang, target_lang] if layout == "columns" else None
    return dataset.map(rewrite, batched=True, remove_columns=remove, features=features, desc=f"Preparing {split}")


def tokenize_pairs(dataset, tokenizer, args, name: str = "dataset") -> tuple[list[list[int]], list[list[int]]]:
    """Source and target ids of a `datasets.Dataset` with a "translation" column, truncated to
    `args.max_source_length` / `args.max_target_length` (`args`: an `EMTrainingArguments`, or anything with those,
    `source_lang` and `target_lang`). Missing languages and empty sides raise a `ValueError` naming `name`."""
    if "translation" not in dataset.column_names:
        raise ValueError(f"{name} has columns {dataset.column_names}; a 'translation' column is needed.")
    pairs = dataset["translation"]
    if not pairs:
        raise ValueError(f"{name} is empty.")
    missing = {args.source_lang, args.target_lang} - set(pairs[0])
    if missing:
        raise ValueError(
            f"{name}'s translations have languages {sorted(pairs[0])}, not {sorted(missing)}; set "
            "source_lang/target_lang to match the data."
        )
    sources = [p[args.source_lang].strip() for p in pairs]
    targets = [p[args.target_lang].strip() for p in pairs]
    empty = [i for i, (s, t) in enumerate(zip(sources, targets)) if not s or not t]
    if empty:
        raise ValueError(f"{name} has {len(empty)} pairs with an empty side (rows {empty[:5]}...); drop them.")
    enc = tokenizer(sources, truncation=True, max_length=args.max_source_length)["input_ids"]
    dec = tokenizer(text_target=targets, truncation=True, max_length=args.max_target_length)["input_ids"]
    return enc, dec
