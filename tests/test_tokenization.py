"""Joint tokenizer training (files, strings, datasets), save/load, and the AR partner built on it; a NAT folder's
tokenizer loads as a stock tokenizer, with no custom code."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import TINY_SIZES
from datasets import Dataset, DatasetDict
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, MarianMTModel

import em_nat


def test_tokenizer_round_trip_and_special_tokens(tokenizer, pairs, tmp_path):
    # OPUS-MT's layout, which CTranslate2's stock Marian converter expects: <pad> is the last id
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.pad_token_id == len(tokenizer) - 1
    ids = tokenizer(pairs[0][0])["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == pairs[0][0]
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    texts = [a for pair in pairs[:10] for a in pair]
    assert loaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    assert len(loaded) == len(tokenizer)


def test_files_strings_and_datasets_train_the_same_tokenizer(pairs, tmp_path):
    src, tgt = tmp_path / "train.en", tmp_path / "train.de"
    src.write_text("\n".join(s for s, _ in pairs) + "\n")
    tgt.write_text("\n".join(t for _, t in pairs) + "\n")
    from_files = em_nat.train_tokenizer([src, tgt], vocab_size=100, min_frequency=1)
    from_strings = em_nat.train_tokenizer(
        [s for s, _ in pairs] + [t for _, t in pairs], vocab_size=100, min_frequency=1
    )
    rows = {"translation": [{"en": s, "de": t} for s, t in pairs]}
    held_out = {"translation": [{"en": "zebra quartz", "de": "zebra quartz"}] * 50}
    from_dataset = em_nat.train_tokenizer(
        DatasetDict(train=Dataset.from_dict(rows), test=Dataset.from_dict(held_out)), vocab_size=100, min_frequency=1
    )
    assert from_files.get_vocab() == from_strings.get_vocab()
    assert set(from_dataset.get_vocab()) == set(from_files.get_vocab())  # the test split was not used


def test_empty_source_is_a_clear_error():
    with pytest.raises(ValueError, match="No text"):
        em_nat.train_tokenizer(["", "  "], vocab_size=50)


def test_ar_partner_is_sized_like_the_nat(tokenizer, nat):
    ar = em_nat.build_ar_model(tokenizer, nat.config)
    assert isinstance(ar, MarianMTModel)
    for name in ("d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "max_position_embeddings"):
        assert getattr(ar.config, name) == getattr(nat.config, name)
    assert ar.config.vocab_size == len(tokenizer) == nat.config.vocab_size
    assert ar.config.pad_token_id == tokenizer.pad_token_id and ar.config.eos_token_id == tokenizer.eos_token_id


def test_locally_saved_pretrained_tokenizer_and_ar_can_be_used(tokenizer, tmp_path, pairs):
    """A 'pretrained' AR and tokenizer from a local folder: the NAT is built on that tokenizer and pairs with it."""
    torch.manual_seed(0)
    ar = em_nat.build_ar_model(tokenizer, em_nat.NATConfig(vocab_size=len(tokenizer), **TINY_SIZES))
    ar.save_pretrained(tmp_path / "opus-mt-local")
    tokenizer.save_pretrained(tmp_path / "opus-mt-local")
    loaded_tok = AutoTokenizer.from_pretrained(tmp_path / "opus-mt-local")
    loaded_ar = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "opus-mt-local")
    nat = em_nat.build_nat_model(loaded_tok, **TINY_SIZES)
    em_nat.trainers.check_models_share_tokenizer(loaded_ar, nat, loaded_tok)
    enc = loaded_tok([pairs[0][0]], return_tensors="pt")
    assert nat.generate(**enc)[0, -1] in (loaded_tok.eos_token_id, loaded_tok.pad_token_id)
    assert loaded_ar.generate(**enc, max_new_tokens=5).shape[0] == 1


NO_EM_NAT_TOKENIZER_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockEmNat(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "em_nat" or name.startswith("em_nat."):
                raise ImportError("em_nat is blocked in this interpreter")

    sys.meta_path.insert(0, BlockEmNat())
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder, texts = sys.argv[1], json.loads(sys.argv[2])
    result = {}
    for name, load in (
        ("auto", lambda: AutoTokenizer.from_pretrained(folder, trust_remote_code=False)),
        ("fast", lambda: PreTrainedTokenizerFast.from_pretrained(folder)),
    ):
        tokenizer = load()
        result[name] = {"class": type(tokenizer).__module__, "ids": tokenizer(texts)["input_ids"]}
    print(json.dumps(result), flush=True)
    print("--- plain AutoTokenizer.from_pretrained(folder) ---", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)  # transformers asks about config.json's code; nothing is run
    print(json.dumps({"class": type(tokenizer).__module__, "ids": tokenizer(texts)["input_ids"]}), flush=True)
    """
)


def test_nat_folder_tokenizer_loads_without_em_nat_and_without_remote_code(nat, tokenizer, pairs, tmp_path):
    """The tokenizer of a NAT folder is a stock fast tokenizer: where em_nat cannot be imported it loads with no
    prompt and no custom code through `AutoTokenizer.from_pretrained(folder, trust_remote_code=False)` or
    `PreTrainedTokenizerFast.from_pretrained(folder)`. A plain `AutoTokenizer.from_pretrained(folder)` reads
    config.json through `AutoConfig` first (transformers 5), whose `auto_map` names the model's code, hence
    transformers' question; declining it (here: stdin closed) still gives the stock tokenizer and runs no code."""
    folder = tmp_path / "nat"
    nat.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    modules = tmp_path / "modules"
    texts = [pairs[0][0], pairs[7][1]]
    proc = subprocess.run(
        [sys.executable, "-c", NO_EM_NAT_TOKENIZER_SCRIPT, str(folder), json.dumps(texts)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,  # a prompt that waited for an answer would fail here
        env={**os.environ, "HF_MODULES_CACHE": str(modules), "HF_HUB_OFFLINE": "1"},
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    before_plain, plain = proc.stdout.split("--- plain AutoTokenizer.from_pretrained(folder) ---")
    assert "custom code" not in before_plain and "[y/N]" not in before_plain
    assert "custom code" not in proc.stderr
    result = json.loads(before_plain.strip().splitlines()[-1])
    expected = tokenizer(texts)["input_ids"]
    for name in ("auto", "fast"):
        assert result[name]["class"].startswith("transformers."), result[name]
        assert result[name]["ids"] == expected
    last = plain.strip().splitlines()[-1]  # transformers' "[y/N] " question has no newline: the JSON follows it
    plain_result = json.loads(last[last.index("{") :])
    assert plain_result["class"].startswith("transformers.") and plain_result["ids"] == expected
    assert not (modules / "transformers_modules").exists() or not any((modules / "transformers_modules").iterdir())


def test_nat_folder_tokenizer_loads_with_em_nat_and_never_asks(nat, tokenizer, tmp_path, monkeypatch):
    def no_prompt(*args):
        raise AssertionError(f"interactive prompt: {args}")

    monkeypatch.setattr("builtins.input", no_prompt)
    nat.save_pretrained(tmp_path / "nat")
    tokenizer.save_pretrained(tmp_path / "nat")
    assert "auto_map" not in json.loads((tmp_path / "nat" / "tokenizer_config.json").read_text())  # no custom code
    loaded = AutoTokenizer.from_pretrained(tmp_path / "nat")  # em_nat is imported: the config is known
    assert type(loaded).__module__.startswith("transformers.")
    assert loaded.get_vocab() == tokenizer.get_vocab()
