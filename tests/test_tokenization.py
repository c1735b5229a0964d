"""Joint tokenizer training (files, strings, datasets), save/load, and the AR partner built on it."""

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
