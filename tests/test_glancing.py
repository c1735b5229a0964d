"""Glancing training (GLAT): the sampled count follows the ratio, ratio 0 lets no reference token into the decoder,
glanced inputs are the target embeddings and leave the loss, decoding is unchanged, the ratio anneals."""

import pytest
import torch
import torch.nn.functional as F

from em_nat.trainers.glancing import glancing_ratio_at, parse_glancing_ratio


@pytest.fixture
def batch_with_labels(tokenizer, pairs):
    sources = tokenizer([s for s, _ in pairs[:8]], return_tensors="pt", padding=True)
    labels = tokenizer(text_target=[t for _, t in pairs[:8]], return_tensors="pt", padding=True)["input_ids"]
    labels = labels.masked_fill(labels == tokenizer.pad_token_id, -100)
    return {"input_ids": sources["input_ids"], "attention_mask": sources["attention_mask"], "labels": labels}


def _hamming(nat, batch) -> torch.Tensor:
    """Per target, positions where the NAT's argmax (no glancing) differs from the target, computed independently."""
    with torch.no_grad():
        logits = nat.eval()(**batch).logits
    valid = batch["labels"] != -100
    return ((logits.argmax(-1) != batch["labels"]) & valid).sum(-1)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0])
def test_glanced_count_is_the_ratio_times_the_hamming_distance(nat, batch_with_labels, ratio):
    distance = _hamming(nat, batch_with_labels)  # dropout is 0 in the tiny config: train and eval passes agree
    assert int(distance.sum()) > 0
    nat.train()
    torch.manual_seed(0)
    out = nat(**batch_with_labels, glancing_ratio=ratio)
    assert out.glanced_mask.sum(-1).tolist() == (distance.float() * ratio).round().long().tolist()
    assert not bool((out.glanced_mask & (batch_with_labels["labels"] == -100)).any())  # never a padding position


def test_ratio_zero_lets_no_reference_token_into_the_decoder(nat, batch_with_labels, tokenizer):
    other = batch_with_labels["labels"].clone()
    real = other != -100
    other[real] = (other[real] + 7) % (tokenizer.pad_token_id - 1)  # other tokens, same lengths
    nat.train()
    with torch.no_grad():
        plain = nat(**batch_with_labels, glancing_ratio=0.0).logits
        swapped = nat(**{**batch_with_labels, "labels": other}, glancing_ratio=0.0).logits
        assert torch.equal(plain, swapped)
        glanced = nat(**batch_with_labels, glancing_ratio=1.0).logits
        assert not torch.allclose(plain, glanced)  # with glancing, the reference does reach the decoder


def test_glanced_inputs_are_target_embeddings_and_leave_the_loss(nat, batch_with_labels):
    captured = {}
    original = nat.model.decode

    def spy(embeds, *args):
        captured.setdefault("inputs", []).append(embeds.detach())
        return original(embeds, *args)

    nat.model.decode = spy
    nat.train()
    out = nat(**batch_with_labels, glancing_ratio=0.5)
    first, second = captured["inputs"]  # the no-grad glancing pass, then the trained pass
    labels, mask = batch_with_labels["labels"], out.glanced_mask
    assert int(mask.sum()) > 0
    model = nat.model
    expected = (
        model.shared(labels.clamp(min=0)) * model.embed_scale + model.decoder_positions.weight[: labels.shape[1]]
    )
    assert torch.allclose(second[mask], expected[mask])
    assert torch.equal(second[~mask], first[~mask])
    kept = labels.masked_fill(mask, -100)
    token_loss = F.cross_entropy(
        out.logits.flatten(0, 1).float(), kept.flatten(), ignore_index=-100, label_smoothing=nat.config.label_smoothing
    )
    assert out.token_loss.item() == pytest.approx(token_loss.item(), rel=1e-5)


def test_decoding_and_eval_forward_are_unchanged_by_glancing(nat, batch_with_labels):
    nat.eval()
    with torch.no_grad():
        assert torch.equal(nat(**batch_with_labels, glancing_ratio=0.7).logits, nat(**batch_with_labels).logits)
    inputs = {k: v for k, v in batch_with_labels.items() if k != "labels"}
    before = nat.generate(**inputs)
    nat.train()
    nat(**batch_with_labels, glancing_ratio=0.7)
    nat.eval()
    assert torch.equal(nat.generate(**inputs), before)


def test_bad_ratio_is_refused(nat, batch_with_labels):
    with pytest.raises(ValueError, match="glancing_ratio must be in"):
        nat.train()(**batch_with_labels, glancing_ratio=1.5)


@pytest.mark.parametrize(
    "value, expected",
    [("0.5:0.3", (0.5, 0.3)), ("0.3", (0.3, 0.3)), ("none", (0.0, 0.0)), (None, (0.0, 0.0)), ("0", (0.0, 0.0))],
)
def test_glancing_option_parsing(value, expected):
    assert parse_glancing_ratio(value) == expected


@pytest.mark.parametrize("value", ["1.5", "-0.1", "0.5:0.3:0.1", "half", "0.5:x"])
def test_bad_glancing_option_names_the_option_and_the_form(value):
    with pytest.raises(ValueError, match="nat_glancing_ratio must be a ratio in \\[0, 1\\] or 'start:end'"):
        parse_glancing_ratio(value)


def test_ratio_anneals_linearly_from_start_to_end():
    ratios = [glancing_ratio_at(step, 5, 0.5, 0.3) for step in range(5)]
    assert ratios == pytest.approx([0.5, 0.45, 0.4, 0.35, 0.3])
    assert glancing_ratio_at(0, 1, 0.5, 0.3) == 0.5


def test_em_run_with_glancing_trains_every_nat_with_the_annealed_ratio(tokenizer, pairs, tmp_path, monkeypatch):
    from conftest import tiny_models
    from datasets import Dataset

    from em_nat import EMTrainer, EMTrainingArguments

    seen = []
    ar, nat = tiny_models(tokenizer)
    original = type(nat).forward

    def spy(self, *args, glancing_ratio=0.0, **kwargs):
        if self.training and kwargs.get("labels") is not None:
            seen.append(glancing_ratio)
        return original(self, *args, glancing_ratio=glancing_ratio, **kwargs)

    monkeypatch.setattr(type(nat), "forward", spy)
    data = Dataset.from_dict({"translation": [{"src": s, "tgt": t} for s, t in pairs]})
    args = EMTrainingArguments(
        output_dir=str(tmp_path / "run"),
        num_rounds=1,
        num_candidates=2,
        candidate_beam_size=2,
        ar_max_steps=2,
        nat_max_steps=5,
        warmup_steps=1,
        max_tokens=256,
        max_target_length=24,
        eval_steps=5,
        save_steps=5,
        eval_num_beams=1,
        nat_glancing_ratio="0.5:0.3",
    )
    metrics = EMTrainer(ar, nat, tokenizer, data, data.select(range(4)), args=args).train()
    assert seen == pytest.approx([0.5, 0.45, 0.4, 0.35, 0.3] * 2)  # the raw-data NAT and round 1's NAT
    assert metrics["round-1"]["em/settings"]["nat_glancing_ratio"] == "0.5:0.3"
    assert metrics["round-1"]["nat/history"][-1]["nat/glancing_ratio"] == pytest.approx(0.3)
    assert list(metrics["round-0"]["nat/config"]["glancing_ratio"]) == [0.5, 0.3]
