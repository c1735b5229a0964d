"""Exact checks of the synthetic task's targets against its grammar, for the tests (`from synthetic_checks import ...`).

`em_nat.synthetic` builds the task; this module parses a source back into its meaning and matches hypotheses
against that meaning's choice points, so a test can say exactly whether a target is valid, enumerate or count the
valid targets, and measure how multi-modal a corpus is. It reuses the grammar (lexicon, trees, enumeration) of
`em_nat.synthetic`.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets

try:
    from em_nat import synthetic
except Exception:  # the package is not importable (yet, or broken elsewhere): load the module from its file
    _path = Path(__file__).resolve().parents[1] / "em_nat" / "synthetic.py"
    _spec = importlib.util.spec_from_file_location("em_nat_synthetic_standalone", _path)
    synthetic = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = synthetic
    _spec.loader.exec_module(synthetic)

SOURCE_LANG, TARGET_LANG = synthetic.SOURCE_LANG, synthetic.TARGET_LANG
_NP, _Frame, _SRC, _NAMES = synthetic._NP, synthetic._Frame, synthetic._SRC, synthetic._NAMES
_DEF, _END, _SUBJ, _OBJ, _LOC = synthetic._DEF, synthetic._END, synthetic._SUBJ, synthetic._OBJ, synthetic._LOC
_MAX_NUMBER, _MAX_DAY = synthetic._MAX_NUMBER, synthetic._MAX_DAY
_target_tree, _count, _iterate, _detokenize = (
    synthetic._target_tree,
    synthetic._count,
    synthetic._iterate,
    synthetic._detokenize,
)

_SRC_TO_KEY = {word: key for key, word in _SRC.items()}

__all__ = [
    "synthetic",
    "valid_targets",
    "count_valid_targets",
    "canonical_target",
    "is_valid_translation",
    "exact_match_rate",
    "oracle_multimodality_stats",
]

# --------------------------------------------------------------------------------------------------------------
# Parsing a source back into its meaning frame, and matching a hypothesis against the frame's target tree
# --------------------------------------------------------------------------------------------------------------


def _normalize(text: str) -> tuple[str, ...]:
    """Tokens of a sentence: whitespace-insensitive, "," and "." split off ("dog." -> "dog", ".")."""
    return tuple(re.sub(r"\s*([.,])\s*", r" \1 ", text).split())


def _bad_source(source: str, why: str) -> ValueError:
    return ValueError(f"Not a sentence of the synthetic source language ({why}): {source!r}")


def _parse_np(words: list[str], source: str, allow_number: bool) -> _NP:
    if len(words) == 1 and words[0] in _NAMES:
        return _NP(name=words[0])
    if not words:
        raise _bad_source(source, "empty noun phrase")
    key = _SRC_TO_KEY.get(words[0], "")
    if not key.startswith("noun:"):
        raise _bad_source(source, f"{words[0]!r} is not a noun")
    fields: dict = {"noun": key[5:]}
    rest = words[1:]
    if rest and _SRC_TO_KEY.get(rest[0], "").startswith("adj:"):
        fields["adjective"] = _SRC_TO_KEY[rest[0]][4:]
        rest = rest[1:]
        if rest and rest[0] == _SRC["intens:very"]:
            fields["intensified"] = True
            rest = rest[1:]
    if (
        allow_number
        and rest
        and rest[0].isdigit()
        and 2 <= int(rest[0]) <= _MAX_NUMBER
        and rest[0] == str(int(rest[0]))
    ):
        fields["number"] = int(rest[0])
        rest = rest[1:]
    if rest and rest[0] == _DEF:
        fields["definite"] = True
        rest = rest[1:]
    if rest:
        raise _bad_source(source, f"unexpected {rest[0]!r} in a noun phrase")
    return _NP(**fields)


@functools.lru_cache(maxsize=1 << 16)
def _parse(source: str) -> _Frame:
    words = list(_normalize(source))
    if len(words) < 6 or words[-1] != _END:
        raise _bad_source(source, "too short or no final '.'")
    verb_key = _SRC_TO_KEY.get(words[-2], "")
    if not verb_key.startswith("verb:"):
        raise _bad_source(source, "no verb before the final '.'")
    body = words[:-2]
    i, time, date = 0, None, None
    if i < len(body) and _SRC_TO_KEY.get(body[i], "").startswith("time:"):
        time = _SRC_TO_KEY[body[i]][5:]
        i += 1
    if i + 1 < len(body) and body[i].isdigit() and _SRC_TO_KEY.get(body[i + 1], "").startswith("month:"):
        day = int(body[i])
        if not 1 <= day <= _MAX_DAY or body[i] != str(day):
            raise _bad_source(source, "bad day")
        date = (day, _SRC_TO_KEY[body[i + 1]][6:])
        i += 2
    body = body[i:]
    if body.count(_SUBJ) != 1 or body.count(_OBJ) != 1 or body.count(_LOC) > 1:
        raise _bad_source(source, "particles")
    s, o = body.index(_SUBJ), body.index(_OBJ)
    if not s < o:
        raise _bad_source(source, "object before subject")
    place = None
    if _LOC in body:
        if body.index(_LOC) != len(body) - 1 or o != len(body) - 3:
            raise _bad_source(source, "place phrase")
        place_key = _SRC_TO_KEY.get(body[-2], "")
        if not place_key.startswith("place:"):
            raise _bad_source(source, f"{body[-2]!r} is not a place")
        place = place_key[6:]
    elif o != len(body) - 1:
        raise _bad_source(source, "words after the object")
    return _Frame(
        subject=_parse_np(body[:s], source, allow_number=False),
        verb=verb_key[5:],
        obj=_parse_np(body[s + 1 : o], source, allow_number=True),
        place=place,
        date=date,
        time=time,
    )


@functools.lru_cache(maxsize=1 << 16)
def _tree(source: str):
    return _target_tree(_parse(source))


def _match(node, tokens: tuple[str, ...], pos: int, trace: tuple) -> Iterator[tuple[int, tuple]]:
    """Yield (end position, choices taken) for every way `node` matches tokens[pos:end]."""
    kind = node[0]
    if kind == "t":
        end = pos + len(node[1])
        if tokens[pos:end] == node[1]:
            yield end, trace
    elif kind == "c":
        for index, alt in enumerate(node[2]):
            yield from _match(alt, tokens, pos, trace + ((node, index),))
    else:
        children = node[1]

        def rec(i: int, p: int, tr: tuple) -> Iterator[tuple[int, tuple]]:
            if i == len(children):
                yield p, tr
                return
            for q, tr2 in _match(children[i], tokens, p, tr):
                yield from rec(i + 1, q, tr2)

        yield from rec(0, pos, trace)


# --------------------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------------------


def valid_targets(source: str, limit: int | None = None) -> list[str]:
    """The valid targets of `source`, deterministically ordered: canonical first, then in lexicographic order of
    the choice indices (not alphabetically). `limit` caps the list (enumeration is lazy, so a limit is cheap even
    when `count_valid_targets(source)` is in the thousands). Raises ValueError for a malformed source."""
    realisations = _iterate(_tree(source))
    if limit is not None:
        realisations = itertools.islice(realisations, max(0, limit))
    return [_detokenize(tokens) for tokens in realisations]


def count_valid_targets(source: str) -> int:
    """Size of the valid-target set of `source` (exact: distinct choices always give distinct strings)."""
    return _count(_tree(source))


def canonical_target(source: str) -> str:
    """The canonical target of `source` (index 0 at every choice point): the unimodal oracle."""
    return valid_targets(source, limit=1)[0]


def is_valid_translation(source: str, hypothesis: str) -> bool:
    """Whether `hypothesis` is exactly one of the valid targets of `source` (up to whitespace and the spacing of
    "," and "."; case-sensitive). Parses against the choice points; never enumerates the set. Raises ValueError
    when `source` is not a sentence of the source language."""
    tokens = _normalize(hypothesis)
    return any(end == len(tokens) for end, _ in _match(_tree(source), tokens, 0, ()))


def exact_match_rate(sources: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Share of hypotheses that are a valid target of their source (`is_valid_translation`)."""
    if len(sources) != len(hypotheses):
        raise ValueError(f"{len(sources)} sources but {len(hypotheses)} hypotheses.")
    if not sources:
        raise ValueError("exact_match_rate needs at least one sentence.")
    return sum(is_valid_translation(s, h) for s, h in zip(sources, hypotheses)) / len(sources)


def oracle_multimodality_stats(dataset: datasets.Dataset | Sequence[dict]) -> dict:
    """How multi-modal a set of (source, target) pairs is, measured with the grammar (the oracle).

    `dataset` is a split (or any sequence of rows) with a "translation" column / key, e.g. a split whose targets
    were replaced by a teacher's outputs. Returns:

    - `num_examples`, `num_unique_sources`;
    - `valid_rate`: share of targets that are valid for their source;
    - `canonical_rate`: share of targets equal to the canonical target;
    - `mean_distinct_targets_per_repeated_source`: over sources seen more than once (None if none is);
    - `choice_entropy_bits`: over the choice points of the valid targets, the mean (weighted by occurrences)
      entropy of which alternative the corpus uses for that choice point (0 = perfectly consistent corpus; about
      1 bit when two alternatives are used equally). This is the multi-modality distillation should remove;
    - `mean_target_tokens`.
    """
    pairs = dataset["translation"] if hasattr(dataset, "column_names") else [row["translation"] for row in dataset]
    by_source: dict[str, set[str]] = defaultdict(set)
    counts: dict[object, Counter] = defaultdict(Counter)
    valid = canonical = tokens = 0
    for pair in pairs:
        source, target = pair[SOURCE_LANG], pair[TARGET_LANG]
        by_source[source].add(target)
        normalized = _normalize(target)
        tokens += len(normalized)
        tree = _tree(source)
        if normalized == next(_iterate(tree)):
            canonical += 1
        for end, trace in _match(tree, normalized, 0, ()):
            if end == len(normalized):
                valid += 1
                for node, index in trace:
                    counts[node[3]][index] += 1
                break
    occurrences = sum(sum(c.values()) for c in counts.values())
    entropy = 0.0
    for counter in counts.values():
        n = sum(counter.values())
        entropy += n * -sum((c / n) * math.log2(c / n) for c in counter.values())
    seen = Counter(pair[SOURCE_LANG] for pair in pairs)
    repeated = [len(by_source[s]) for s, n in seen.items() if n > 1]
    n_pairs = len(pairs)
    return {
        "num_examples": n_pairs,
        "num_unique_sources": len(by_source),
        "valid_rate": valid / n_pairs if n_pairs else 0.0,
        "canonical_rate": canonical / n_pairs if n_pairs else 0.0,
        "mean_distinct_targets_per_repeated_source": sum(repeated) / len(repeated) if repeated else None,
        "choice_entropy_bits": entropy / occurrences if occurrences else 0.0,
        "mean_target_tokens": tokens / n_pairs if n_pairs else 0.0,
    }
