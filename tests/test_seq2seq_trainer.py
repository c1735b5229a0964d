"""The NAT in stock `Seq2SeqTrainer`: train, evaluate, and predict with `predict_with_generate=True`."""

import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

from em_nat.metrics import corpus_bleu


@pytest.fixture
def tokenized(tokenizer, pairs):
    def encode(rows):
        enc = tokenizer(rows["src"], truncation=True, max_length=32)
        enc["labels"] = tokenizer(text_target=rows["tgt"], truncation=True, max_length=32)["input_ids"]
        return enc

    data = Dataset.from_dict({"src": [s for s, _ in pairs[:24]], "tgt": [t for _, t in pairs[:24]]})
    return data.map(encode, batched=True, remove_columns=["src", "tgt"])


def test_seq2seq_trainer_trains_evaluates_and_predicts_with_generate(nat, tokenizer, tokenized, tmp_path):
    def compute_metrics(prediction):
        predictions, labels = prediction
        labels = [[t for t in row if t != -100] for row in labels.tolist()]
        hyps = tokenizer.batch_decode(predictions.clip(min=0), skip_special_tokens=True)
        refs = tokenizer.batch_decode(labels, skip_special_tokens=True)
        return {"bleu": corpus_bleu(hyps, refs)["score"]}

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
    assert "test_bleu" in output.metrics
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
