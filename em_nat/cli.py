"""Command-line option types that validate a number where it enters, with a message naming the value and the range
(argparse adds the option's name): `python examples/evaluate_em.py --batch_size 0` ends with
"argument --batch_size: must be >= 1, got 0"."""

import argparse


def bounded(kind=int, low=None, high=None):
    """An argparse `type`: `kind(text)` that must lie in [low, high] (either bound may be None)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            kind_name = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {kind_name}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low}" if high is None else (f"<= {high}" if low is None else f"in [{low}, {high}]")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def bounded_list(kind=int, low=None, high=None):
    """An argparse `type` for a comma-separated list ("1,64"), each item checked as `bounded`; at least one item."""
    item = bounded(kind, low, high)

    def parse(text: str) -> list:
        values = [item(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"needs at least one value, got {text!r}")
        return values

    parse.__name__ = "list"
    return parse


def read_pairs_for(parser, models: dict, source: str, reference: str, what: str) -> tuple[list[str], list[str]]:
    """The checks of a script that reads saved models and a pair of line-aligned files, before anything loads:
    every `{flag: folder}` of `models` holds a config.json and both files exist and pair up line by line (no blank
    line). Ends the script through `parser.error` (exit 2, the problem and the fix named); returns the pairs."""
    import os

    from em_nat.evaluation import read_test_set

    for flag, path in models.items():
        if not os.path.isfile(os.path.join(path, "config.json")):
            parser.error(f"{flag} {path}: not a saved model folder (no config.json); give its save_pretrained folder.")
    for flag, path in (("--source", source), ("--reference", reference)):
        if not os.path.isfile(path):
            parser.error(f"{flag} {path}: no such file; give {what}, one per line.")
    try:
        return read_test_set(source, reference)
    except ValueError as error:
        parser.error(str(error))


def load_nat_and_ar(nat_path: str, ar_path: str, threads: int):
    """`(tokenizer, nat, ar)` in eval mode, torch on `threads` intra-op threads; the tokenizer is the NAT's, and a
    pair that does not share it is refused (`check_models_share_tokenizer`)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import em_nat

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(nat_path)
    nat = em_nat.NATForConditionalGeneration.from_pretrained(nat_path).eval()
    ar = AutoModelForSeq2SeqLM.from_pretrained(ar_path).eval()
    em_nat.trainers.check_models_share_tokenizer(ar, nat, tokenizer)
    return tokenizer, nat, ar


def print_and_save(table: str, result: dict, output_md: str | None) -> None:
    """Print a script's table; with `output_md`, also write it there and `result` as JSON beside it (.json)."""
    import json
    import os

    print(table)
    if output_md:
        with open(output_md, "w") as handle:
            handle.write(table + "\n")
        with open(os.path.splitext(output_md)[0] + ".json", "w") as handle:
            json.dump(result, handle, indent=1)
