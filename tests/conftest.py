"""Shared fixtures: a tokenizer trained on a few dozen sentence pairs, tiny NAT and Marian models built in code."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import em_nat  # noqa: E402  (registers the Auto classes and the pipeline)

SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "our neighbour", "a small child"]
VERBS = [("sees", "sieht"), ("likes", "mag"), ("finds", "findet"), ("paints", "malt")]
OBJECTS = [("the house", "das haus"), ("a red ball", "einen roten ball"), ("the garden", "den garten")]
SUBJECTS_DE = ["die katze", "ein hund", "mein freund", "der lehrer", "unser nachbar", "ein kleines kind"]


def make_pairs() -> list[tuple[str, str]]:
    """A few dozen deterministic English-German-like sentence pairs."""
    pairs = []
    for subject, subject_de in zip(SUBJECTS, SUBJECTS_DE):
        for verb, verb_de in VERBS:
            for obj, obj_de in OBJECTS:
                pairs.append((f"{subject} {verb} {obj} .", f"{subject_de} {verb_de} {obj_de} ."))
    return pairs


@pytest.fixture(scope="session")
def pairs():
    return make_pairs()


@pytest.fixture(scope="session")
def tokenizer(pairs):
    return em_nat.train_tokenizer([text for pair in pairs for text in pair], vocab_size=120, min_frequency=1)


TINY_SIZES = dict(
    d_model=32,
    encoder_layers=1,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    max_position_embeddings=48,
    dropout=0.0,
)


@pytest.fixture
def nat(tokenizer):
    torch.manual_seed(0)
    return em_nat.build_nat_model(tokenizer, **TINY_SIZES).eval()


@pytest.fixture
def marian(tokenizer, nat):
    torch.manual_seed(1)
    return em_nat.build_ar_model(tokenizer, nat.config).eval()


@pytest.fixture
def batch(tokenizer, pairs):
    sources = [pairs[0][0], pairs[5][0] + " " + pairs[9][0], pairs[17][0]]
    targets = [pairs[0][1], pairs[5][1] + " " + pairs[9][1], pairs[17][1]]
    enc = tokenizer(sources, return_tensors="pt", padding=True)
    labels = tokenizer(text_target=targets, return_tensors="pt", padding=True)["input_ids"]
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def tiny_marian(vocab_size: int = 50, eos_token_id: int = 2, seed: int = 0):
    """A tiny random stock MarianMTModel (PAD 0 is also the decoder start), the AR stand-in of unit tests."""
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=vocab_size,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=eos_token_id,
        decoder_start_token_id=0,
    )
    return MarianMTModel(config).eval()


def tiny_models(tokenizer, seed: int = 0):
    """A tiny NAT and a Marian AR of the same size on `tokenizer`: the (ar, nat) pair of trainer tests."""
    torch.manual_seed(seed)
    nat = em_nat.build_nat_model(tokenizer, **TINY_SIZES)
    return em_nat.build_ar_model(tokenizer, nat.config), nat
