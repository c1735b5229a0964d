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
