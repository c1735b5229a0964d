"""em_nat.data: every local format and dataset layout -> the same "translation" DatasetDict, and clear errors."""

import importlib.util
import json
import logging
import sys
from pathlib import Path

import datasets
import pytest

try:
    from em_nat import data
except Exception:  # the package may be mid-edit elsewhere; data.py imports nothing from it
    _spec = importlib.util.spec_from_file_location(
        "em_nat_data_standalone", Path(__file__).resolve().parents[1] / "em_nat" / "data.py"
    )
    data = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = data
    _spec.loader.exec_module(data)

DataError = data.DataError
MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k_en_de"


def pairs(split: datasets.Dataset, source_lang: str, target_lang: str) -> tuple[list[str], list[str]]:
    """The (sources, targets) of one converted split, in row order."""
    rows = split["translation"]
    return [row[source_lang] for row in rows], [row[target_lang] for row in rows]


PAIRS = [
    ("A dog runs .", "Ein Hund rennt ."),
    ('She says "hi" \\ bye', 'Sie sagt "hallo" \\ tschüss'),
    ("Two men , one ball .", "Zwei Männer , ein Ball ."),
    ("naïve café – ok", "naives Café – ok"),
    ("The end .", "Das Ende ."),
]
EXPECTED = [{"en": en, "de": de} for en, de in PAIRS]


def write_lines(path: Path, lines, newline="\n") -> Path:
    path.write_text("".join(line + newline for line in lines), encoding="utf-8")
    return path


def write_text_pair(folder: Path, pairs=PAIRS, name="train") -> Path:
    write_lines(folder / f"{name}.en", [en for en, _ in pairs])
    write_lines(folder / f"{name}.de", [de for _, de in pairs])
    return folder / name


def write_tsv(path: Path, pairs=PAIRS, header=None) -> Path:
    return write_lines(path, ([header] if header else []) + [f"{en}\t{de}" for en, de in pairs])


def write_jsonl(path: Path, pairs=PAIRS, nested=True) -> Path:
    records = [{"translation": {"en": en, "de": de}} if nested else {"de": de, "en": en} for en, de in pairs]
    return write_lines(path, [json.dumps(record, ensure_ascii=False) for record in records])


def load(train, **kwargs):
    return data.load_parallel_data(train, source_lang="en", target_lang="de", **kwargs)


# Each layout writes PAIRS under tmp_path and returns the load_parallel_data arguments for them.
LAYOUTS = {
    "text-pair": lambda tmp: {"train": (write_text_pair(tmp).with_suffix(".en"), tmp / "train.de")},
    "text-pair-str": lambda tmp: {"train": [str(write_text_pair(tmp)) + ".en", str(tmp / "train.de")]},
    "text-prefix": lambda tmp: {"train": str(write_text_pair(tmp))},
    "text-prefix-forced": lambda tmp: {"train": write_text_pair(tmp), "format": "text"},
    "tsv": lambda tmp: {"train": write_tsv(tmp / "train.tsv")},
    "tsv-header": lambda tmp: {"train": write_tsv(tmp / "train.tsv", header="en\tde")},
    "tsv-header-reversed": lambda tmp: {
        "train": write_tsv(tmp / "train.tsv", [(de, en) for en, de in PAIRS], header="de\ten")
    },
    "tsv-sniffed": lambda tmp: {"train": write_tsv(tmp / "train.txt")},
    "tsv-forced": lambda tmp: {"train": write_tsv(tmp / "train.data"), "format": "tsv"},
    "jsonl-nested": lambda tmp: {"train": write_jsonl(tmp / "train.jsonl")},
    "jsonl-flat": lambda tmp: {"train": write_jsonl(tmp / "train.jsonl", nested=False)},
    "jsonl-json-extension": lambda tmp: {"train": write_jsonl(tmp / "train.json")},
    "jsonl-sniffed": lambda tmp: {"train": write_jsonl(tmp / "train.txt", nested=False)},
}


def test_layout_table_is_not_empty():
    assert len(LAYOUTS) >= 10


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_format_gives_the_same_dataset(tmp_path, layout):
    kwargs = LAYOUTS[layout](tmp_path)
    dataset = load(kwargs.pop("train"), **kwargs)
    assert isinstance(dataset, datasets.DatasetDict)
    assert list(dataset) == ["train"]
    assert dataset["train"].column_names == ["translation"]
    assert dataset["train"].features["translation"] == datasets.Translation(languages=["en", "de"])
    assert list(dataset["train"]["translation"]) == EXPECTED


def test_splits_from_mixed_formats_in_fixed_order(tmp_path):
    dataset = data.load_parallel_data(
        test=write_jsonl(tmp_path / "test.jsonl", PAIRS[:2]),
        validation=write_tsv(tmp_path / "valid.tsv", PAIRS[2:]),
        train=write_text_pair(tmp_path),
        source_lang="en",
        target_lang="de",
    )
    assert list(dataset) == ["train", "validation", "test"]
    assert [len(dataset[split]) for split in dataset] == [5, 3, 2]
    assert list(dataset["validation"]["translation"]) == EXPECTED[2:]


def test_strip_keeps_inner_tab_in_text_files(tmp_path):
    write_lines(tmp_path / "train.en", ["  padded  ", "trailing \t", "inner\ttab"])
    write_lines(tmp_path / "train.de", ["gepolstert", "hinten", "innen"])
    stripped = load(tmp_path / "train")["train"]
    assert pairs(stripped, "en", "de")[0] == ["padded", "trailing", "inner\ttab"]
    raw = load(tmp_path / "train", strip=False)["train"]
    assert pairs(raw, "en", "de")[0] == ["  padded  ", "trailing \t", "inner\ttab"]


def test_crlf_and_byte_order_mark_are_not_text(tmp_path):
    (tmp_path / "train.en").write_bytes("\ufeffHello\r\nWorld \r\n".encode())
    (tmp_path / "train.de").write_bytes(b"Hallo\r\nWelt\r\n")
    assert pairs(load(tmp_path / "train", strip=False)["train"], "en", "de") == (
        ["Hello", "World "],
        ["Hallo", "Welt"],
    )


def test_only_newline_ends_a_line(tmp_path):
    # A stray carriage return or U+2028 inside a sentence must not shift the alignment of the two files.
    write_lines(tmp_path / "train.en", ["one\rtwo", "three\u2028four"])
    write_lines(tmp_path / "train.de", ["eins", "drei"])
    assert pairs(load(tmp_path / "train")["train"], "en", "de")[0] == ["one\rtwo", "three\u2028four"]


def test_tsv_cells_are_stripped_but_a_third_column_is_an_error(tmp_path):
    write_lines(tmp_path / "ok.tsv", [" a \t b ", "c\td  "])
    assert pairs(load(tmp_path / "ok.tsv")["train"], "en", "de") == (["a", "c"], ["b", "d"])
    write_lines(tmp_path / "bad.tsv", ["a\tb", "in\tner\ttab", "c\td", "no columns", "trailing\ttab\t"])
    with pytest.raises(DataError) as error:
        load(tmp_path / "bad.tsv")
    message = str(error.value)
    assert "bad.tsv" in message and "exactly 2 TAB-separated columns" in message
    assert "line 2 has 3" in message and "line 4 has 1" in message and "line 5 has 3" in message
    assert "replace it with a space" in message


def test_unaligned_files_name_both_files_and_counts(tmp_path):
    write_lines(tmp_path / "train.en", ["a", "b", "c"])
    write_lines(tmp_path / "train.de", ["a", "b"])
    with pytest.raises(DataError) as error:
        load((tmp_path / "train.en", tmp_path / "train.de"))
    message = str(error.value)
    assert "not line-aligned" in message
    assert f"{tmp_path / 'train.en'} has 3 lines" in message and f"{tmp_path / 'train.de'} has 2" in message


def test_empty_lines_are_listed_with_file_and_fix(tmp_path):
    write_lines(tmp_path / "train.en", ["a", "b", "c", "d", "   ", "f"])
    write_lines(tmp_path / "train.de", ["a", "b", "", "d", "e", "\t"])
    with pytest.raises(DataError) as error:
        load(tmp_path / "train")
    message = str(error.value)
    assert f"1 empty 'en' sentence(s) in {tmp_path / 'train.en'} at line(s) 5" in message
    assert f"2 empty 'de' sentence(s) in {tmp_path / 'train.de'} at line(s) 3, 6" in message
    assert "clean the data" in message and "drop_empty=True" in message


def test_many_empty_lines_are_capped(tmp_path):
    write_lines(tmp_path / "train.en", ["x"] * 10)
    write_lines(tmp_path / "train.de", [""] * 8 + ["y", "z"])
    with pytest.raises(DataError, match=r"8 empty 'de' sentence\(s\) .* at line\(s\) 1, 2, 3, 4, 5, \.\.\."):
        load(tmp_path / "train")


def test_empty_sides_in_tsv_and_jsonl(tmp_path):
    write_lines(tmp_path / "train.tsv", ["a\tb", "", "c\t ", "d\te"])
    with pytest.raises(DataError, match=r"'de' sentence\(s\) in .*train.tsv at line\(s\) 2, 3"):
        load(tmp_path / "train.tsv")
    write_jsonl(tmp_path / "train.jsonl", [("a", "b"), (" ", "c")])
    with pytest.raises(DataError, match=r"1 empty 'en' sentence\(s\) in .*train.jsonl at line\(s\) 2"):
        load(tmp_path / "train.jsonl")


def test_drop_empty_drops_and_warns(tmp_path, caplog):
    write_lines(tmp_path / "train.en", ["a", "", "c", "d"])
    write_lines(tmp_path / "train.de", ["A", "B", " ", "D"])
    with caplog.at_level(logging.WARNING):
        dataset = load(tmp_path / "train", drop_empty=True)
    assert pairs(dataset["train"], "en", "de") == (["a", "d"], ["A", "D"])
    assert "dropped 2 of 4 pairs" in caplog.text
    write_lines(tmp_path / "all.en", ["", "x"])
    write_lines(tmp_path / "all.de", ["y", ""])
    with pytest.raises(DataError, match="nothing is left"):
        load(tmp_path / "all", drop_empty=True)


def test_jsonl_missing_language_names_keys(tmp_path):
    write_lines(
        tmp_path / "train.jsonl",
        ['{"translation": {"en": "a", "de": "b"}}', "", '{"translation": {"en": "c", "fr": "d"}}'],
    )
    with pytest.raises(DataError) as error:
        load(tmp_path / "train.jsonl")
    message = str(error.value)
    assert "train.jsonl, line 3" in message and "no 'de' sentence" in message and "['en', 'fr']" in message
    write_lines(tmp_path / "flat.jsonl", ['{"english": "a", "de": "b"}'])
    with pytest.raises(DataError, match=r"line 1: no 'en' sentence; the object has keys \['de', 'english'\]"):
        load(tmp_path / "flat.jsonl")


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"en": "a", "de": 3}', r"line 1: the 'de' value is int \(3\), not a string"),
        ('{"en": null, "de": "b"}', r"line 1: the 'en' value is NoneType \(null\), not a string"),
        ('{"en": "a", "de": "b"', r"line 1: not valid JSON"),
        ('["a", "b"]', r"holds a JSON array"),
        ('"just a string"', r"line 1: expected a JSON object .* got str"),
        ('{"translation": ["a", "b"]}', r"line 1: 'translation' must be an object"),
    ],
)
def test_jsonl_bad_records(tmp_path, line, expected):
    write_lines(tmp_path / "train.jsonl", [line])
    with pytest.raises(DataError, match=expected):
        load(tmp_path / "train.jsonl")


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.tsv does not exist"):
        load(tmp_path / "nope.tsv")
    with pytest.raises(FileNotFoundError) as error:
        load(tmp_path / "nope")
    assert "nope.en" in str(error.value) and "nope.de" in str(error.value)
    write_lines(tmp_path / "half.en", ["a"])
    with pytest.raises(FileNotFoundError, match=r"half\.de does not exist"):
        load(tmp_path / "half")
    with pytest.raises(FileNotFoundError, match=r"other\.de does not exist"):
        load((tmp_path / "half.en", tmp_path / "other.de"))


def test_bad_arguments(tmp_path):
    prefix = write_text_pair(tmp_path)
    with pytest.raises(DataError, match="must differ"):
        data.load_parallel_data(prefix, source_lang="en", target_lang="en")
    with pytest.raises(DataError, match="format='csv' is not supported"):
        load(prefix, format="csv")
    with pytest.raises(DataError, match="max_samples must be a positive integer"):
        load(prefix, max_samples=0)
    with pytest.raises(DataError, match="a pair of files is the 'text' format"):
        load((prefix.with_suffix(".en"), prefix.with_suffix(".de")), format="tsv")
    with pytest.raises(DataError, match="is a directory"):
        load(tmp_path)
    write_lines(tmp_path / "plain.txt", ["no tab here"])
    with pytest.raises(DataError, match="cannot tell the format .* Pass format='tsv' or format='jsonl'"):
        load(tmp_path / "plain.txt")
    (tmp_path / "latin1.tsv").write_bytes("caf\xe9\tcafé\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8"):
        load(tmp_path / "latin1.tsv")
    write_lines(tmp_path / "empty.tsv", [])
    with pytest.raises(DataError, match="holds no sentence pairs"):
        load(tmp_path / "empty.tsv")


def test_train_split_is_required(tmp_path):
    valid = write_tsv(tmp_path / "valid.tsv")
    with pytest.raises(DataError, match="No training data: pass train="):
        data.load_parallel_data(validation=valid, source_lang="en", target_lang="de")
    dataset = data.load_parallel_data(validation=valid, source_lang="en", target_lang="de", require_train=False)
    assert list(dataset) == ["validation"]


def test_max_samples_keeps_the_first_pairs_but_validates_all(tmp_path):
    dataset = data.load_parallel_data(
        write_text_pair(tmp_path),
        validation=write_tsv(tmp_path / "v.tsv", PAIRS[:2]),
        source_lang="en",
        target_lang="de",
        max_samples=3,
    )
    assert list(dataset["train"]["translation"]) == EXPECTED[:3]
    assert list(dataset["validation"]["translation"]) == EXPECTED[:2]
    write_tsv(tmp_path / "late.tsv", PAIRS + [("late", "")])
    with pytest.raises(DataError, match="at line\\(s\\) 6"):
        load(tmp_path / "late.tsv", max_samples=2)


# ---------------------------------------------------------------------------------------------------- datasets


def translation_dataset(rows, languages=("en", "de")):
    features = datasets.Features({"translation": datasets.Translation(languages=list(languages))})
    return datasets.Dataset.from_dict({"translation": rows}, features=features)


def test_dataset_saved_to_disk_via_dataset_name(tmp_path):
    rows = [{"en": en + " ", "de": de, "fr": "x"} for en, de in PAIRS]
    saved = datasets.DatasetDict(
        {
            "train": translation_dataset(rows, ("en", "de", "fr")),
            "test": translation_dataset(rows[:1], ("en", "de", "fr")),
        }
    )
    saved.save_to_disk(str(tmp_path / "saved"))
    dataset = data.load_parallel_data(dataset_name=tmp_path / "saved", source_lang="en", target_lang="de")
    assert list(dataset) == ["train", "test"]
    assert list(dataset["train"]["translation"]) == EXPECTED  # stripped, and "fr" dropped
    assert dataset["train"].features["translation"] == datasets.Translation(languages=["en", "de"])

    # Local files replace a split of the named dataset; max_samples applies to both.
    dataset = data.load_parallel_data(
        test=write_tsv(tmp_path / "test.tsv", [(de, en) for en, de in PAIRS[3:]]),  # source column: de
        dataset_name=str(tmp_path / "saved"),
        source_lang="de",
        target_lang="en",
        max_samples=4,
    )
    assert len(dataset["train"]) == 4 and list(dataset["test"]["translation"]) == EXPECTED[3:]
    with pytest.raises(DataError, match="drop dataset_config"):
        data.load_parallel_data(
            dataset_name=tmp_path / "saved", dataset_config="de-en", source_lang="en", target_lang="de"
        )
    with pytest.raises(DataError, match=r"languages \['en', 'de', 'fr'\], not \['it'\]"):
        data.load_parallel_data(dataset_name=tmp_path / "saved", source_lang="en", target_lang="it")


def test_saved_single_dataset_is_the_train_split(tmp_path):
    translation_dataset(EXPECTED).save_to_disk(str(tmp_path / "single"))
    dataset = data.load_parallel_data(dataset_name=tmp_path / "single", source_lang="en", target_lang="de")
    assert list(dataset) == ["train"] and list(dataset["train"]["translation"]) == EXPECTED


def test_saved_dataset_without_train_split(tmp_path):
    datasets.DatasetDict({"test": translation_dataset(EXPECTED)}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match=r"splits \['test'\] and no 'train' split"):
        data.load_parallel_data(dataset_name=tmp_path / "saved", source_lang="en", target_lang="de")


def test_unreachable_hub_dataset_says_so(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'wmt16' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as error:
        data.load_parallel_data(dataset_name="wmt16", dataset_config="de-en", source_lang="en", target_lang="de")
    message = str(error.value)
    assert "load_dataset('wmt16', 'de-en') failed: ConnectionError: Couldn't reach" in message
    assert "the Hub may be unreachable" in message and "save_to_disk" in message
    assert isinstance(error.value.__cause__, ConnectionError)


@pytest.mark.skipif(not datasets.config.HF_HUB_OFFLINE, reason="needs HF_HUB_OFFLINE=1 to fail fast without network")
def test_unknown_dataset_name_offline():
    with pytest.raises(DataError, match="the Hub may be unreachable"):
        data.load_parallel_data(dataset_name="em-nat-tests/no-such-dataset", source_lang="en", target_lang="de")


def test_from_dataset_converts_language_columns():
    dataset = datasets.Dataset.from_dict(
        {"id": list(range(len(PAIRS))), "en": [f" {en}" for en, _ in PAIRS], "de": [de for _, de in PAIRS]}
    )
    converted = data.from_dataset(dataset, "en", "de")
    assert isinstance(converted, datasets.Dataset)
    assert sorted(converted.column_names) == ["id", "translation"]
    assert list(converted["translation"]) == EXPECTED and list(converted["id"]) == list(range(len(PAIRS)))
    assert converted.features["translation"] == datasets.Translation(languages=["en", "de"])

    as_dict = data.from_dataset(datasets.DatasetDict({"train": dataset, "validation": dataset}), "en", "de")
    assert isinstance(as_dict, datasets.DatasetDict) and list(as_dict) == ["train", "validation"]
    assert list(as_dict["validation"]["translation"]) == EXPECTED


def test_from_dataset_keeps_a_clean_dataset_as_is():
    dataset = translation_dataset(EXPECTED)
    assert data.from_dataset(dataset, "en", "de") is dataset
    nested = datasets.Dataset.from_dict({"translation": EXPECTED})  # a dict feature, not datasets.Translation
    assert list(data.from_dataset(nested, "de", "en", max_samples=2)["translation"]) == EXPECTED[:2]


def test_from_dataset_errors_name_what_is_there():
    with pytest.raises(DataError) as error:
        data.from_dataset(datasets.Dataset.from_dict({"src": ["a"], "tgt": ["b"]}), "en", "de")
    message = str(error.value)
    assert "has columns ['src', 'tgt']" in message and "rename_column" in message
    with pytest.raises(DataError, match=r"'translation' column has languages \['en', 'fr'\], not \['de'\]"):
        data.from_dataset(translation_dataset([{"en": "a", "fr": "b"}], ("en", "fr")), "en", "de")
    with pytest.raises(DataError, match=r"columns \['de'\] are not string columns"):
        data.from_dataset(datasets.Dataset.from_dict({"en": ["a"], "de": [1]}), "en", "de")
    with pytest.raises(DataError, match="Expected a datasets.Dataset"):
        data.from_dataset([{"en": "a", "de": "b"}], "en", "de")


def test_from_dataset_empty_rows():
    dataset = datasets.Dataset.from_dict({"en": ["a", None, "c", "d"], "de": ["A", "B", " ", "D"]})
    with pytest.raises(DataError) as error:
        data.from_dataset(datasets.DatasetDict({"train": dataset}), "en", "de")
    message = str(error.value)
    assert "Split 'train'" in message and "1 empty 'en' sentence(s) in split 'train' at row(s) 1" in message
    assert "1 empty 'de' sentence(s) in split 'train' at row(s) 2" in message and "drop_empty=True" in message
    kept = data.from_dataset(dataset, "en", "de", drop_empty=True)
    assert pairs(kept, "en", "de") == (["a", "d"], ["A", "D"])


# ---------------------------------------------------------------------------------------------------- real data


@pytest.mark.skipif(not MULTI30K.is_dir(), reason="Multi30k is not available next to the repository")
def test_multi30k_first_lines():
    dataset = data.load_parallel_data(
        MULTI30K / "train",
        validation=str(MULTI30K / "valid"),
        test=MULTI30K / "test",
        source_lang="en",
        target_lang="de",
        max_samples=200,
    )
    assert {split: len(dataset[split]) for split in dataset} == {"train": 200, "validation": 200, "test": 200}
    with open(MULTI30K / "train.en", encoding="utf-8") as f_en, open(MULTI30K / "train.de", encoding="utf-8") as f_de:
        first = {"en": f_en.readline().strip(), "de": f_de.readline().strip()}
    assert dataset["train"][0]["translation"] == first
    sources, targets = pairs(dataset["validation"], "en", "de")
    assert all(text and text == text.strip() for text in sources + targets)


@pytest.mark.parametrize("header", ["en\tde", "de\ten", "src\ttgt", "pt_BR\ten"])
def test_a_language_header_that_does_not_name_the_run_languages_is_an_error(tmp_path, header):
    path = write_tsv(tmp_path / "train.tsv", header=header)
    with pytest.raises(DataError, match="looks like a header naming the languages"):
        data.load_parallel_data(train=str(path), source_lang="fr", target_lang="it")


def test_a_pair_of_short_words_is_not_mistaken_for_a_header(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", [("yes", "ja")] + list(PAIRS))
    loaded = data.load_parallel_data(train=str(path), source_lang="en", target_lang="de")
    assert loaded["train"][0]["translation"] == {"en": "yes", "de": "ja"}
