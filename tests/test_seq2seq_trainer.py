"""The NAT in stock `Seq2SeqTrainer`: train, evaluate, and predict with `predict_with_generate=True`, scored by
em-nat's `evaluate` modules in `compute_metrics`."""

import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

import em_nat
from em_nat.metrics import corpus_bleu, repeated_token_rate, structural_ids


@pytest.fixture
def tokenized(tokenizer, pairs):
    def encode(rows):
        enc = tokenizer(rows["src"], truncation=True, max_length=32)
        enc["labels"] = tokenizer(text_target=rows["tgt"], truncation=True, max_length=32)["input_ids"]
        return enc

    data = Dataset.from_dict({"src": [s for s, _ in pairs[:24]], "tgt": [t for _, t in pairs[:24]]})
    return data.map(encode, batched=True, remove_columns=["src", "tgt"])


def test_seq2seq_trainer_trains_evaluates_and_predicts_with_generate(nat, tokenizer, tokenized, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    bleu = em_nat.load_metric("sacrebleu_signature")
    repeats = em_nat.load_metric("repeated_tokens")
    ignore = sorted(structural_ids(tokenizer) | {-100})  # Seq2SeqTrainer pads predictions across batches with -100
    scored = []

    def compute_metrics(prediction):
        predictions, labels = prediction
        labels = [[t for t in row if t != -100] for row in labels.tolist()]
        hyps = tokenizer.batch_decode(predictions.clip(min=0), skip_special_tokens=True)
        refs = tokenizer.batch_decode(labels, skip_special_tokens=True)
        result = bleu.compute(predictions=hyps, references=[[ref] for ref in refs])
        rate = repeats.compute(predictions=predictions.tolist(), ignore_ids=ignore)["repeated_token_rate"]
        scored.append((hyps, refs, predictions.tolist(), result["signature"]))
        return {"bleu": result["score"], "repeated_token_rate": rate}

    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        max_steps=3,
        learning_rate=1e-3,
        predict_with_generate=True,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )
    trainer = Seq2SeqTrainer(
        model=nat.train(),
        args=args,
        train_dataset=tokenized,
        eval_dataset=tokenized,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=nat, label_pad_token_id=-100),
        compute_metrics=compute_metrics,
        processing_class=tokenizer,
    )
    before = {k: v.clone() for k, v in nat.state_dict().items()}
    trainer.train()
    assert any(not torch.equal(before[k], v) for k, v in nat.state_dict().items())
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and "eval_bleu" in metrics
    output = trainer.predict(tokenized)
    assert output.predictions.shape[0] == len(tokenized)
    assert "test_bleu" in output.metrics and "test_repeated_token_rate" in output.metrics
    hyps, refs, ids, signature = scored[-1]  # the modules agree with em_nat.metrics on what the trainer passed
    assert output.metrics["test_bleu"] == corpus_bleu(hyps, refs)["score"] and signature.startswith("nrefs:1|")
    assert output.metrics["test_repeated_token_rate"] == pytest.approx(repeated_token_rate(ids, ignore))
    assert ids == output.predictions.tolist()
    expected = nat.eval().generate(
        **tokenizer([tokenizer.decode(tokenized[0]["input_ids"], skip_special_tokens=True)], return_tensors="pt")
    )
    assert output.predictions[0][: expected.shape[1]].tolist() == expected[0].tolist()


def test_generate_ignores_forward_only_inputs_but_refuses_misspelt_knobs(nat, tokenizer, pairs):
    enc = tokenizer([pairs[0][0]], return_tensors="pt")
    labels = tokenizer(text_target=[pairs[0][1]], return_tensors="pt")["input_ids"]
    plain = nat.generate(**enc)
    assert torch.equal(nat.generate(**enc, labels=labels, decoder_attention_mask=labels.ne(0)), plain)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['lenght_beam'\\]"):
        nat.generate(**enc, lenght_beam=3)
