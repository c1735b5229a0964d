"""pipeline("translation") for the NAT and a stock Marian, from objects and from a saved folder."""

import pytest
import torch
from conftest import TINY_SIZES
from transformers import pipeline

import em_nat


def _check(translator, tokenizer):
    single = translator("the cat sees the house .")
    assert isinstance(single, list) and set(single[0]) == {"translation_text"}
    assert isinstance(single[0]["translation_text"], str)
    batch = translator(["a dog likes the garden .", "my friend paints a red ball .", "the cat sees the house ."])
    # transformers' convention: a list in, one dict per input out
    assert len(batch) == 3 and all(isinstance(item, dict) and set(item) == {"translation_text"} for item in batch)
    assert batch[2] == single[0]
    assert batch[0]["translation_text"] == translator("a dog likes the garden .")[0]["translation_text"]
    assert translator(["a dog likes the garden .", "the cat sees the house ."], batch_size=2) == [batch[0], batch[2]]
    return batch


@pytest.mark.parametrize("which", ["nat", "marian"])
def test_translation_pipeline_with_model_objects(which, nat, marian, tokenizer):
    model = {"nat": nat, "marian": marian}[which]
    translator = pipeline("translation", model=model, tokenizer=tokenizer)
    assert isinstance(translator, em_nat.TranslationPipeline)
    _check(translator, tokenizer)


def test_pipeline_text_equals_generate_then_decode(nat, tokenizer):
    translator = pipeline("translation", model=nat, tokenizer=tokenizer)
    enc = tokenizer(["a dog likes the garden ."], return_tensors="pt")
    expected = tokenizer.batch_decode(nat.generate(**enc), skip_special_tokens=True)[0].strip()
    assert translator("a dog likes the garden .")[0]["translation_text"] == expected


def test_pipeline_passes_decoding_kwargs(nat, tokenizer):
    translator = pipeline("translation", model=nat, tokenizer=tokenizer)
    capped = translator("a dog likes the garden .", max_new_tokens=2)[0]["translation_text"]
    assert len(tokenizer(capped)["input_ids"]) <= 3


def test_pipeline_from_saved_folder_with_em_nat_imported(nat, tokenizer, tmp_path):
    nat.save_pretrained(tmp_path / "nat")
    tokenizer.save_pretrained(tmp_path / "nat")
    translator = pipeline("translation", model=str(tmp_path / "nat"))
    assert isinstance(translator.model, em_nat.NATForConditionalGeneration)
    reference = pipeline("translation", model=nat, tokenizer=tokenizer)
    assert translator("the cat sees the house .") == reference("the cat sees the house .")


def test_blank_inputs_become_empty_translations_with_a_warning(nat, tokenizer):
    translator = pipeline("translation", model=nat, tokenizer=tokenizer)
    with pytest.warns(UserWarning, match="Blank inputs"):
        out = translator(["", "the cat sees the house .", "   "])
    assert out[0] == {"translation_text": ""} and out[2] == {"translation_text": ""}
    assert out[1] == translator("the cat sees the house .")[0]


def test_long_inputs_are_truncated_to_the_model_positions(nat, tokenizer):
    translator = pipeline("translation", model=nat, tokenizer=tokenizer)
    long_text = " ".join(["the cat sees the house ."] * 40)
    assert len(tokenizer(long_text)["input_ids"]) > nat.config.max_position_embeddings
    assert isinstance(translator(long_text)[0]["translation_text"], str)


def test_mismatched_tokenizer_is_a_clear_error(nat, pairs):
    other = em_nat.train_tokenizer(
        [text for pair in pairs for text in pair] + ["zebra xylophone quartz"] * 3, vocab_size=200, min_frequency=1
    )
    assert len(other) > nat.config.vocab_size
    with pytest.raises(ValueError, match="Tokenizer and model do not match"):
        pipeline("translation", model=nat, tokenizer=other)


def test_smaller_tokenizer_with_the_same_special_ids_is_refused_for_the_nat(tokenizer):
    """Issue 17: a tokenizer of another size with the NAT's pad and EOS ids used to translate into garbage."""
    torch.manual_seed(0)
    specials = {name: getattr(tokenizer, name) for name in ("pad_token_id", "eos_token_id", "bos_token_id")}
    larger = em_nat.NATConfig(vocab_size=len(tokenizer) + 40, **specials, **TINY_SIZES)
    nat = em_nat.NATForConditionalGeneration(larger).eval()
    message = (
        f"the tokenizer has {len(tokenizer)} tokens but the NAT's vocab_size is {len(tokenizer) + 40}"
        ".*Use the tokenizer the model was trained with"
    )
    with pytest.raises(ValueError, match=message):
        pipeline("translation", model=nat, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=message):
        em_nat.check_tokenizer_compatible(tokenizer, nat.config)
    # a stock seq2seq model may pad its embeddings past its tokenizer (T5 does): a smaller tokenizer stays accepted
    marian = em_nat.build_ar_model(tokenizer, larger).eval()
    assert isinstance(pipeline("translation", model=marian, tokenizer=tokenizer)("a dog likes the garden ."), list)


def test_pipeline_passes_nat_decoding_knobs(nat, marian, tokenizer):
    translator = pipeline("translation", model=nat, tokenizer=tokenizer)
    text = "a dog likes the garden ."
    enc = tokenizer([text], return_tensors="pt")
    for knobs in ({"odd": False}, {"length_beam": 3}, {"length_beam": 3, "rescorer": marian, "rescore_alpha": 1.0}):
        expected = tokenizer.batch_decode(nat.generate(**enc, **knobs), skip_special_tokens=True)[0].strip()
        assert translator(text, **knobs)[0]["translation_text"] == expected


def test_several_translations_per_input_give_a_list_per_input(marian, tokenizer):
    translator = pipeline("translation", model=marian, tokenizer=tokenizer)
    texts = ["a dog likes the garden .", "the cat sees the house ."]
    out = translator(texts, num_beams=3, num_return_sequences=2, max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(item, list) and len(item) == 2 for item in out)
    single = translator(texts[0], num_beams=3, num_return_sequences=2, max_new_tokens=5)
    assert isinstance(single, list) and len(single) == 2 and single == out[0]


def test_return_tensors_gives_the_generated_ids(nat, tokenizer):
    translator = pipeline("translation", model=nat, tokenizer=tokenizer)
    text = "a dog likes the garden ."
    out = translator(text, return_tensors=True)[0]
    expected = nat.generate(**tokenizer([text], return_tensors="pt"))[0]
    assert out["translation_token_ids"].tolist() == expected.tolist()
    assert out["translation_text"] == tokenizer.decode(expected, skip_special_tokens=True).strip()
