"""NATForConditionalGeneration: loss, scoring, generate, config validation, bad input."""

import pytest
import torch
import torch.nn.functional as F
from transformers import GenerationConfig

import em_nat
from em_nat import NATConfig, NATForConditionalGeneration


def test_forward_returns_loss_logits_and_length_logits(nat, batch):
    out = nat(**batch)
    batch_size, tgt_len = batch["labels"].shape
    assert out.logits.shape == (batch_size, tgt_len, nat.config.vocab_size)
    assert out.length_logits.shape == (batch_size, nat.config.num_length_classes)
    assert torch.isfinite(out.loss)
    assert torch.allclose(out.loss, out.token_loss + nat.config.length_loss_weight * out.length_loss)


def test_token_loss_is_label_smoothed_mean_over_target_tokens(nat, batch):
    out = nat(**batch)
    labels = batch["labels"].masked_fill(batch["labels"] == nat.config.pad_token_id, -100)
    expected = F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=0.1)
    assert torch.allclose(out.token_loss, expected)
    lengths = (labels != -100).sum(-1)
    assert torch.allclose(out.length_loss, F.cross_entropy(out.length_logits, lengths, label_smoothing=0.1))


def test_minus_100_and_pad_padded_labels_agree(nat, batch):
    labels = batch["labels"].masked_fill(batch["labels"] == nat.config.pad_token_id, -100)
    assert torch.allclose(nat(**batch).loss, nat(**{**batch, "labels": labels}).loss)


def test_padding_does_not_change_an_example(nat, batch):
    pad = nat.config.pad_token_id
    src_len = int(batch["attention_mask"][0].sum())
    label_len = int((batch["labels"][0] != pad).sum())
    alone_ids = batch["input_ids"][:1, :src_len]
    alone_score = nat.score_targets(alone_ids, None, batch["labels"][:1, :label_len])
    assert torch.allclose(alone_score, nat.score_targets(**batch)[:1], atol=1e-5)
    alone_out = nat.generate(alone_ids)[0]
    batched_out = nat.generate(batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    assert torch.equal(batched_out[: len(alone_out)], alone_out)
    assert (batched_out[len(alone_out) :] == pad).all()


def test_score_targets_is_length_plus_token_log_probability(nat, batch):
    scores = nat.score_targets(**batch)
    out = nat(**batch)
    labels = batch["labels"]
    valid = labels != nat.config.pad_token_id
    token = out.logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    length = out.length_logits.log_softmax(-1).gather(-1, valid.sum(-1, keepdim=True)).squeeze(-1)
    assert torch.allclose(scores, (token * valid).sum(-1) + length, atol=1e-5)


def test_score_targets_with_candidates_equals_flat_scoring(nat, batch):
    labels = batch["labels"]
    candidates = torch.stack([labels, labels.roll(1, dims=0), labels.roll(2, dims=0)], dim=1)  # (batch, 3, T)
    scored = nat.score_targets(batch["input_ids"], batch["attention_mask"], candidates)
    assert scored.shape == (labels.shape[0], 3)
    for c in range(3):
        flat = nat.score_targets(batch["input_ids"], batch["attention_mask"], candidates[:, c])
        assert torch.allclose(scored[:, c], flat, atol=1e-5)


def _overfit(nat, batch, steps=150):
    nat.train()
    optimizer = torch.optim.Adam(nat.parameters(), lr=3e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        nat(**batch).loss.backward()
        optimizer.step()
    return nat.eval()


def test_training_makes_generate_reproduce_the_targets(nat, batch, tokenizer):
    start = nat(**batch).loss.item()
    _overfit(nat, batch)
    assert nat(**batch).loss.item() < start / 3
    out = nat.generate(batch["input_ids"], attention_mask=batch["attention_mask"], odd=False)
    expected = tokenizer.batch_decode(batch["labels"], skip_special_tokens=True)
    assert tokenizer.batch_decode(out, skip_special_tokens=True) == expected


def test_generate_output_is_eos_terminated_and_pad_padded(nat, batch):
    out = nat.generate(batch["input_ids"], attention_mask=batch["attention_mask"], return_dict_in_generate=True)
    eos, pad = nat.config.eos_token_id, nat.config.pad_token_id
    for row, length in zip(out.sequences, out.lengths):
        assert row[length - 1] == eos
        assert (row[length:] == pad).all()
        assert not ((row[: length - 1] == eos) | (row[: length - 1] == pad)).any()
    assert out.sequences.shape[1] == int(out.lengths.max())


@pytest.mark.parametrize("decoder_input", ["positional", "uniform_copy"])
def test_both_decoder_inputs_train_and_generate(tokenizer, batch, decoder_input):
    from conftest import TINY_SIZES

    torch.manual_seed(0)
    model = em_nat.build_nat_model(tokenizer, **TINY_SIZES, decoder_input=decoder_input)
    _overfit(model, batch, steps=120)
    out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"])
    expected = tokenizer.batch_decode(batch["labels"], skip_special_tokens=True)
    assert tokenizer.batch_decode(out, skip_special_tokens=True) == expected


def test_uniform_copy_reads_source_tokens_at_scaled_positions(tokenizer):
    from conftest import TINY_SIZES

    model = em_nat.build_nat_model(tokenizer, **TINY_SIZES, decoder_input="uniform_copy").model
    input_ids = torch.tensor([[5, 6, 7, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 0, 0]])
    embeds = model.decoder_inputs(torch.tensor([5]), 5, input_ids, attention_mask)
    copied = embeds - model.decoder_positions.weight[:5]
    expected_ids = torch.tensor([5, 5, 6, 7, 7])  # round(j * 2 / 4) = 0, 0 (half to even), 1, 2, 2
    assert torch.allclose(copied[0], model.shared(expected_ids) * model.embed_scale, atol=1e-6)


def test_generate_accepts_generic_kwargs(nat, batch):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    base = nat.generate(ids, attention_mask=mask)
    with pytest.warns(UserWarning, match="num_beams"):
        assert torch.equal(nat.generate(ids, attention_mask=mask, num_beams=4), base)
    assert torch.equal(nat.generate(input_ids=ids, attention_mask=mask, do_sample=False, use_cache=True), base)
    capped = nat.generate(ids, attention_mask=mask, max_new_tokens=3)
    assert capped.shape[1] <= 3
    config = GenerationConfig(max_length=4, length_beam=1, odd=False)
    assert nat.generate(ids, attention_mask=mask, generation_config=config).shape[1] <= 4
    with pytest.raises(TypeError, match="lenght_beam"):
        nat.generate(ids, attention_mask=mask, lenght_beam=3)


def test_generation_defaults_live_in_generation_config_not_model_config(nat):
    assert isinstance(nat.generation_config, em_nat.modeling.NATGenerationConfig)
    assert nat.generation_config.length_beam == 1
    assert nat.generation_config.odd is True
    assert not hasattr(nat.config, "length_beam")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_model=30, encoder_attention_heads=4, decoder_attention_heads=5), "divisible"),
        (dict(max_position_embeddings=64, num_length_classes=32), "num_length_classes"),
        (dict(decoder_input="copy"), "decoder_input"),
        (dict(vocab_size=10, pad_token_id=12), "pad_token_id"),
        (dict(encoder_layers=0), "encoder_layers"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_impossible_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NATConfig(**kwargs)


def test_too_long_input_is_a_clear_error(nat):
    too_long = torch.full((1, nat.config.max_position_embeddings + 1), 5)
    with pytest.raises(ValueError, match="truncation=True"):
        nat.generate(too_long)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        nat(too_long, labels=torch.tensor([[5, 2]]))


def test_too_long_labels_are_a_clear_error(nat):
    labels = torch.full((1, nat.config.max_position_embeddings + 1), 5)
    with pytest.raises(ValueError, match="truncate the labels"):
        nat(torch.tensor([[5, 2]]), labels=labels)


def test_blank_source_still_generates_eos_terminated_ids(nat, tokenizer):
    enc = tokenizer(["", "   ", "the cat sees the house ."], return_tensors="pt", padding=True)
    out = nat.generate(**enc)
    assert (out == nat.config.eos_token_id).sum(-1).eq(1).all()


def test_config_is_a_stock_seq2seq_size_vocabulary():
    config = NATConfig()
    for name in (
        "vocab_size",
        "d_model",
        "encoder_layers",
        "decoder_layers",
        "encoder_attention_heads",
        "decoder_attention_heads",
        "encoder_ffn_dim",
        "decoder_ffn_dim",
        "max_position_embeddings",
        "dropout",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
    ):
        assert hasattr(config, name), name
    assert config.model_type == "em_nat"
    assert config.hidden_size == config.d_model
    assert isinstance(
        NATForConditionalGeneration(
            NATConfig(
                d_model=16,
                encoder_layers=1,
                decoder_layers=1,
                encoder_attention_heads=2,
                decoder_attention_heads=2,
                vocab_size=50,
            )
        ),
        NATForConditionalGeneration,
    )


def test_source_without_content_translates_to_eos_alone(nat, tokenizer):
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    real = tokenizer(["the cat sees the house ."], return_tensors="pt")["input_ids"]
    only_eos = torch.full_like(real, pad)
    only_eos[0, 0] = eos
    batch = torch.cat([only_eos, real])
    for knobs in ({}, {"length_beam": 3}, {"odd": False}):
        out = nat.generate(input_ids=batch, attention_mask=batch.ne(pad).long(), **knobs)
        assert out[0, 0].item() == eos and bool(out[0, 1:].eq(pad).all())
        assert (out[1] == eos).sum() == 1 and out[1, 0].item() != eos  # a real source still gets content
    empty = nat.generate(input_ids=torch.zeros(2, 0, dtype=torch.long))
    assert empty.tolist() == [[eos], [eos]]


def test_left_padded_sources_decode_like_each_sentence_alone(nat, tokenizer, pairs):
    texts = [pairs[0][0], pairs[5][0] + " " + pairs[6][0], pairs[9][0]]
    tokenizer.padding_side = "left"
    try:
        left = tokenizer(texts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = "right"
    assert not bool(left["attention_mask"][:, 0].all())  # some rows really are left-padded
    out = nat.generate(**left, return_dict_in_generate=True)
    scores = nat.score_targets(**left, labels=out.sequences.masked_fill(out.sequences == tokenizer.pad_token_id, -100))
    for row, text in enumerate(texts):
        alone = nat.generate(**tokenizer([text], return_tensors="pt"), return_dict_in_generate=True)
        length = int(alone.lengths[0])
        assert out.sequences[row, :length].tolist() == alone.sequences[0, :length].tolist()
        alone_score = nat.score_targets(**tokenizer([text], return_tensors="pt"), labels=alone.sequences)
        assert scores[row].item() == pytest.approx(alone_score[0].item(), abs=1e-4)


def test_ids_beyond_the_vocabulary_are_a_clear_error(nat):
    bad = torch.tensor([[5, nat.config.vocab_size + 3, nat.config.eos_token_id]])
    with pytest.raises(ValueError, match=f"vocab_size={nat.config.vocab_size}"):
        nat.generate(input_ids=bad)
    with pytest.raises(ValueError, match="encode with the tokenizer saved with the model"):
        nat(input_ids=torch.tensor([[-1, 5]]))


def test_loading_an_ar_folder_as_a_nat_is_refused(tokenizer, tmp_path):
    """An AR folder given to the NAT class is refused, naming what it holds, not loaded with random NAT weights."""
    from conftest import tiny_models

    ar, _ = tiny_models(tokenizer)
    ar.save_pretrained(tmp_path / "ar")
    with pytest.raises(ValueError, match=r"holds a 'marian' model \(MarianMTModel\), not an em-nat NAT"):
        em_nat.NATForConditionalGeneration.from_pretrained(tmp_path / "ar")
