"""The embedded default task: a synthetic "src" -> "tgt" translation task with controlled multi-modality.

Non-autoregressive translation (NAT) suffers from *multi-modality*: when a source has several valid translations
and the training targets pick among them at random, a model that predicts every target position independently
mixes the modes ("the the big house", "yesterday the dog sees a cat yesterday."). Sequence-level knowledge
distillation and the EM loop of Sun & Yang (ICML 2020) reduce that multi-modality by replacing the raw targets
with consistent ones. This module builds, in about a second and with no download, a toy language pair on which
that effect is visible and *exactly measurable*: the set of valid targets of every source is known.

The source language ("src")
---------------------------
An invented, verb-final language with case particles. Its content words are pseudo-words derived
deterministically from their meaning (e.g. dog -> a fixed two-syllable word), numbers and days are digits and
person names are written as in the target. One sentence is::

    [TIME] [DAY MONTH] SUBJECT ka OBJECT mo [PLACE ne] VERB.

where a noun phrase is ``NOUN [ADJECTIVE [INTENSIFIER]] [NUMBER] [te]`` (``te`` = definite; a NUMBER only on
objects, and it makes them plural) or a person name, e.g. "lasu te ka nina mo rume." = "the dog sells nina.".
Every source sentence has exactly one meaning.

The target language ("tgt")
---------------------------
English-like and lower-cased. Texts on both sides are detokenized ("," and "." attached to the previous word,
as sacreBLEU expects); tokens are the whitespace-separated words with "," and "." split off::

    SUBJECT VERB OBJECT [PLACE] [DATE] [TIME].      (canonical order)

The tense comes from the time adverbial (past for "yesterday", future for "tomorrow", present otherwise).
Every target is a *deterministic function of the source up to these choice points*, which are where the
multi-modality comes from:

- synonyms (``synonym_prob``): nouns, adjectives, verbs, intensifiers, time adverbials and place prepositions
  have 1-3 interchangeable variants ("big"/"large", "sees"/"spots"/"notices", "in"/"at the park"); the future
  is "will X" or "is going to X" (different lengths). Every verb has at least two variants, so every source has
  at least two valid targets.
- formats (``format_prob``): numbers as digits or words ("21 cars"/"twenty one cars"); dates as
  "march 12", "12 march" or "the 12th of march".
- word order (``reorder_prob``): the time adverbial at the end or at the front ("yesterday, the dog ...");
  place and date in either order when both are present.
- optional words (``optional_word_prob``): "on" before a date and the comma after a fronted adverbial may be
  dropped.

The valid targets of a source are the full product of its choice points (from 2 to about 10^4-10^5 for the
longest sentences; with the default config the deciles are about 8 ... 400, the median about 50). Index 0 of every choice point is its *canonical* realisation; a training target is sampled
independently per example and per choice point, departing from the canonical realisation with the probability
of that choice point's kind. With all four probabilities at 0 the data are unimodal (every target canonical):
the oracle that distillation approximates. Because many choices change the target length and shift the
following words, a NAT trained on the raw pairs mixes modes position by position, while an autoregressive
teacher's beam output commits to one mode per sentence.

The `references` column holds up to `num_references` distinct valid targets per source, the first one being the
row's "tgt": multi-reference BLEU scores against it (`em_nat.metrics.corpus_bleu` takes a list of references per
line). Validity itself is exact: a hypothesis is parsed against its source's choice points (the tests do so, with
the checks in tests/synthetic_checks.py).

Sources of the three splits are disjoint; in the training split each source appears
`train_targets_per_source` times (by default twice) with independently sampled targets, which is the raw
multi-modality distillation removes. Everything is deterministic given the config (string-seeded
`random.Random`, no dependence on hash randomisation).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import datasets

__all__ = ["SyntheticTaskConfig", "build_synthetic_task", "SOURCE_LANG", "TARGET_LANG"]

SOURCE_LANG = "src"
TARGET_LANG = "tgt"

# --------------------------------------------------------------------------------------------------------------
# Lexicon. Variant 0 of every entry is canonical. Words that can follow "a" start with a consonant.
# --------------------------------------------------------------------------------------------------------------

# nouns: key -> variants of (singular, plural)
_ANIMATE = {
    "dog": [("dog", "dogs"), ("hound", "hounds")],
    "cat": [("cat", "cats"), ("kitty", "kitties")],
    "child": [("child", "children"), ("kid", "kids")],
    "teacher": [("teacher", "teachers"), ("tutor", "tutors")],
    "doctor": [("doctor", "doctors"), ("physician", "physicians")],
    "farmer": [("farmer", "farmers")],
    "friend": [("friend", "friends"), ("buddy", "buddies"), ("pal", "pals")],
    "neighbour": [("neighbour", "neighbours"), ("neighbor", "neighbors")],
    "student": [("student", "students"), ("pupil", "pupils")],
    "baker": [("baker", "bakers")],
    "girl": [("girl", "girls")],
    "boy": [("boy", "boys"), ("lad", "lads")],
    "woman": [("woman", "women"), ("lady", "ladies")],
    "man": [("man", "men"), ("guy", "guys")],
    "horse": [("horse", "horses"), ("steed", "steeds")],
    "bird": [("bird", "birds")],
    "painter": [("painter", "painters")],
    "pilot": [("pilot", "pilots")],
    "singer": [("singer", "singers"), ("vocalist", "vocalists")],
}
_THINGS = {
    "car": [("car", "cars"), ("vehicle", "vehicles")],
    "house": [("house", "houses"), ("home", "homes")],
    "book": [("book", "books"), ("novel", "novels")],
    "ball": [("ball", "balls")],
    "box": [("box", "boxes"), ("crate", "crates")],
    "bag": [("bag", "bags"), ("sack", "sacks")],
    "cup": [("cup", "cups"), ("mug", "mugs")],
    "letter": [("letter", "letters"), ("note", "notes")],
    "picture": [("picture", "pictures"), ("photo", "photos"), ("photograph", "photographs")],
    "bicycle": [("bicycle", "bicycles"), ("bike", "bikes")],
    "boat": [("boat", "boats"), ("ship", "ships")],
    "chair": [("chair", "chairs"), ("seat", "seats")],
    "table": [("table", "tables")],
    "door": [("door", "doors")],
    "window": [("window", "windows")],
    "shirt": [("shirt", "shirts")],
    "hat": [("hat", "hats"), ("cap", "caps")],
    "phone": [("phone", "phones"), ("telephone", "telephones")],
    "cake": [("cake", "cakes")],
    "flower": [("flower", "flowers"), ("blossom", "blossoms")],
    "stone": [("stone", "stones"), ("rock", "rocks")],
    "gift": [("gift", "gifts"), ("present", "presents")],
    "key": [("key", "keys")],
    "map": [("map", "maps")],
    "lamp": [("lamp", "lamps"), ("light", "lights")],
    "coat": [("coat", "coats"), ("jacket", "jackets")],
    "toy": [("toy", "toys")],
    "basket": [("basket", "baskets")],
    "pen": [("pen", "pens")],
    "shoe": [("shoe", "shoes")],
}
_NOUNS = {**_ANIMATE, **_THINGS}

_ADJECTIVES = {
    "big": ["big", "large"],
    "small": ["small", "little", "tiny"],
    "red": ["red"],
    "blue": ["blue"],
    "green": ["green"],
    "yellow": ["yellow"],
    "white": ["white"],
    "black": ["black"],
    "new": ["new"],
    "young": ["young"],
    "happy": ["happy", "glad", "cheerful"],
    "sad": ["sad"],
    "fast": ["fast", "quick"],
    "slow": ["slow"],
    "beautiful": ["beautiful", "pretty", "lovely"],
    "dirty": ["dirty", "filthy"],
    "clean": ["clean"],
    "heavy": ["heavy"],
    "strong": ["strong", "powerful"],
    "cheap": ["cheap"],
    "famous": ["famous", "renowned"],
    "funny": ["funny", "comical"],
    "quiet": ["quiet", "silent"],
    "warm": ["warm"],
    "cold": ["cold", "chilly"],
    "tall": ["tall"],
    "lazy": ["lazy"],
    "brave": ["brave", "bold", "courageous"],
}
_INTENSIFIER = ["very", "really"]

# verbs: key -> variants of (present 3rd person singular, past, base form); a form may be several words
_VERBS = {
    "see": [("sees", "saw", "see"), ("spots", "spotted", "spot"), ("notices", "noticed", "notice")],
    "buy": [("buys", "bought", "buy"), ("purchases", "purchased", "purchase")],
    "like": [("likes", "liked", "like"), ("loves", "loved", "love"), ("enjoys", "enjoyed", "enjoy")],
    "find": [("finds", "found", "find"), ("discovers", "discovered", "discover")],
    "paint": [("paints", "painted", "paint"), ("draws", "drew", "draw")],
    "carry": [("carries", "carried", "carry"), ("holds", "held", "hold")],
    "build": [("builds", "built", "build"), ("makes", "made", "make")],
    "clean": [("cleans", "cleaned", "clean"), ("washes", "washed", "wash")],
    "visit": [("visits", "visited", "visit"), ("calls on", "called on", "call on")],
    "sell": [("sells", "sold", "sell"), ("trades", "traded", "trade")],
    "bring": [("brings", "brought", "bring"), ("fetches", "fetched", "fetch")],
    "want": [("wants", "wanted", "want"), ("desires", "desired", "desire")],
    "take": [("takes", "took", "take"), ("grabs", "grabbed", "grab")],
    "seek": [("looks for", "looked for", "look for"), ("searches for", "searched for", "search for")],
    "throw": [("throws", "threw", "throw"), ("tosses", "tossed", "toss")],
    "lift": [("picks up", "picked up", "pick up"), ("lifts", "lifted", "lift")],
    "follow": [("follows", "followed", "follow"), ("chases", "chased", "chase")],
    "help": [("helps", "helped", "help"), ("assists", "assisted", "assist")],
    "meet": [("meets", "met", "meet"), ("greets", "greeted", "greet")],
}
_FUTURE = ["will", "is going to"]

# time adverbials: key -> (tense, variants)
_TIMES = {
    "yesterday": ("past", ["yesterday"]),
    "last_night": ("past", ["last night"]),
    "last_week": ("past", ["last week"]),
    "earlier": ("past", ["earlier", "before"]),
    "today": ("present", ["today"]),
    "now": ("present", ["now", "right now"]),
    "every_day": ("present", ["every day", "daily"]),
    "often": ("present", ["often", "frequently"]),
    "tomorrow": ("future", ["tomorrow"]),
    "next_week": ("future", ["next week"]),
    "soon": ("future", ["soon", "shortly"]),
    "later": ("future", ["later", "afterwards"]),
}

# places: key -> (preposition variants, noun variants); always definite ("in the park")
_PLACES = {
    "garden": (["in"], ["garden", "yard"]),
    "park": (["in", "at"], ["park"]),
    "city": (["in"], ["city", "town"]),
    "kitchen": (["in"], ["kitchen"]),
    "school": (["at", "in"], ["school"]),
    "market": (["at", "in"], ["market", "bazaar"]),
    "office": (["at", "in"], ["office"]),
    "library": (["at", "in"], ["library"]),
    "station": (["at"], ["station"]),
    "beach": (["on", "at"], ["beach", "shore"]),
    "forest": (["in"], ["forest", "woods"]),
    "river": (["by", "near"], ["river"]),
    "village": (["in"], ["village"]),
    "museum": (["at", "in"], ["museum"]),
    "harbour": (["at", "in"], ["harbour", "harbor", "port"]),
}

_MONTHS = [
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
]  # fmt: skip
_NAMES = ["anna", "tom", "maria", "peter", "lisa", "john", "sara", "david", "emma", "paul", "nina", "omar"]

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()

# source particles (hand-picked, two letters, distinct from every generated word)
_SUBJ, _OBJ, _LOC, _DEF, _END = "ka", "mo", "ne", "te", "."
_MAX_NUMBER, _MAX_DAY = 99, 28


def _number_words(n: int) -> tuple[str, ...]:
    if n < 20:
        return (_ONES[n],)
    return (_TENS[n // 10],) + ((_ONES[n % 10],) if n % 10 else ())


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _build_source_lexicon() -> dict[str, str]:
    """Meaning key ("noun:dog") -> invented source word, derived from the key's md5 (stable across runs)."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"

    def words(obj) -> Iterator[str]:
        if isinstance(obj, str):
            yield from obj.split()
        elif isinstance(obj, dict):
            yield from words(list(obj.values()))
        else:
            for item in obj:
                yield from words(item)

    target_words = set(words([_NOUNS, _ADJECTIVES, _INTENSIFIER, _VERBS, _FUTURE, _TIMES, _PLACES, _MONTHS]))
    target_words |= set(_NAMES) | set(_ONES) | set(_TENS) | {"a", "the", "on", "of", _SUBJ, _OBJ, _LOC, _DEF}
    keys = (
        [f"noun:{k}" for k in _NOUNS]
        + [f"adj:{k}" for k in _ADJECTIVES]
        + ["intens:very"]
        + [f"verb:{k}" for k in _VERBS]
        + [f"time:{k}" for k in _TIMES]
        + [f"place:{k}" for k in _PLACES]
        + [f"month:{m}" for m in _MONTHS]
    )
    lexicon: dict[str, str] = {}
    used = set(target_words)
    for key in keys:
        for salt in itertools.count():
            digest = hashlib.md5(f"{key}#{salt}".encode()).digest()
            syllables = 2 + digest[0] % 2
            word = "".join(
                consonants[digest[1 + 2 * i] % len(consonants)] + vowels[digest[2 + 2 * i] % len(vowels)]
                for i in range(syllables)
            )
            if word not in used:
                break
        used.add(word)
        lexicon[key] = word
    return lexicon


_SRC = _build_source_lexicon()

# --------------------------------------------------------------------------------------------------------------
# Meaning frames and target trees. A tree node is ("t", tokens) | ("s", children) | ("c", kind, alternatives).
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NP:
    name: str | None = None
    noun: str | None = None
    adjective: str | None = None
    intensified: bool = False
    number: int | None = None
    definite: bool = False


@dataclass(frozen=True)
class _Frame:
    subject: _NP
    verb: str
    obj: _NP
    place: str | None = None
    date: tuple[int, str] | None = None
    time: str | None = None


def _tok(*tokens: str):
    return ("t", tuple(tokens))


def _words(text: str):
    return ("t", tuple(text.split()))


def _seq(*children):
    """A sequence, flattened: nested sequences are spliced in and adjacent token runs merged."""
    flat: list = []
    for child in children:
        for node in child[1] if child[0] == "s" else (child,):
            if node[0] == "t" and flat and flat[-1][0] == "t":
                flat[-1] = ("t", flat[-1][1] + node[1])
            elif node != ("t", ()):
                flat.append(node)
    if len(flat) <= 1:
        return flat[0] if flat else ("t", ())
    return ("s", tuple(flat))


def _choice(kind: str, alternatives, label=None):
    """A choice point (alternative 0 is canonical); `label` names it for corpus statistics (default: the words
    of its alternatives)."""
    alternatives = tuple(alternatives)
    if len(alternatives) == 1:
        return alternatives[0]
    return ("c", kind, alternatives, label if label is not None else tuple(" ".join(alt[1]) for alt in alternatives))


_THE, _A, _DOT, _EMPTY = _tok("the"), _tok("a"), _tok("."), _tok()
_ON = _choice("optional", [_tok("on"), _EMPTY], "date-on")
_COMMA = _choice("optional", [_tok(","), _EMPTY], "front-comma")
_INTENS_NODE = _choice("synonym", [_tok(w) for w in _INTENSIFIER])
_FUTURE_NODE = _choice("synonym", [_words(w) for w in _FUTURE])


@functools.cache
def _noun_node(key: str, plural: bool):
    return _choice("synonym", [_tok(pair[int(plural)]) for pair in _NOUNS[key]])


@functools.cache
def _adjective_node(key: str):
    return _choice("synonym", [_tok(w) for w in _ADJECTIVES[key]])


@functools.cache
def _number_node(n: int):
    return _choice("format", [_tok(str(n)), _tok(*_number_words(n))], "number-format")


@functools.cache
def _verb_node(key: str, tense: str):
    variants = _VERBS[key]
    if tense == "future":
        return _seq(_FUTURE_NODE, _choice("synonym", [_words(v[2]) for v in variants]))
    return _choice("synonym", [_words(v[0 if tense == "present" else 1]) for v in variants])


@functools.cache
def _time_node(key: str):
    return _choice("synonym", [_words(w) for w in _TIMES[key][1]])


@functools.cache
def _place_node(key: str):
    preps, nouns = _PLACES[key]
    return _seq(_choice("synonym", [_tok(p) for p in preps]), _THE, _choice("synonym", [_tok(n) for n in nouns]))


@functools.cache
def _date_node(day: int, month: str):
    formats = [_tok(month, str(day)), _tok(str(day), month), _tok("the", _ordinal(day), "of", month)]
    return _seq(_ON, _choice("format", formats, "date-format"))


@functools.lru_cache(maxsize=1 << 14)
def _np_tree(np: _NP):
    if np.name is not None:
        return _tok(np.name)
    parts = []
    if np.definite:
        parts.append(_THE)
    elif np.number is None:
        parts.append(_A)
    if np.number is not None:
        parts.append(_number_node(np.number))
    if np.adjective is not None:
        if np.intensified:
            parts.append(_INTENS_NODE)
        parts.append(_adjective_node(np.adjective))
    parts.append(_noun_node(np.noun, np.number is not None))
    return _seq(*parts)


def _target_tree(frame: _Frame):
    tense = _TIMES[frame.time][0] if frame.time else "present"
    tail = []
    if frame.place is not None:
        tail.append(_place_node(frame.place))
    if frame.date is not None:
        tail.append(_date_node(*frame.date))
    if len(tail) == 2:
        tail = [_choice("reorder", [_seq(tail[0], tail[1]), _seq(tail[1], tail[0])], "place-date-order")]
    core = _seq(_np_tree(frame.subject), _verb_node(frame.verb, tense), _np_tree(frame.obj), *tail)
    if frame.time is None:
        return _seq(core, _DOT)
    time = _time_node(frame.time)
    return _choice("reorder", [_seq(core, time, _DOT), _seq(time, _COMMA, core, _DOT)], "time-position")


def _count(node) -> int:
    if node[0] == "t":
        return 1
    if node[0] == "s":
        return math.prod(_count(child) for child in node[1])
    return sum(_count(alt) for alt in node[2])


def _iterate(node) -> Iterator[tuple[str, ...]]:
    """All realisations, canonical first, in lexicographic order of choice indices (lazy)."""
    if node[0] == "t":
        yield node[1]
    elif node[0] == "c":
        for alt in node[2]:
            yield from _iterate(alt)
    else:
        children = node[1]

        def rec(i: int) -> Iterator[tuple[str, ...]]:
            if i == len(children):
                yield ()
                return
            for head in _iterate(children[i]):
                for rest in rec(i + 1):
                    yield head + rest

        yield from rec(0)


def _sample(node, rng: random.Random, probs: dict[str, float] | None, out: list[str]) -> None:
    """Append one realisation; probs[kind] is the chance of leaving the canonical alternative (None: uniform)."""
    if node[0] == "s":
        children = node[1]
    else:
        children = (node,)
    for child in children:
        while child[0] == "c":
            alternatives = child[2]
            if probs is None:
                child = alternatives[rng.randrange(len(alternatives))]
            elif rng.random() < probs[child[1]]:
                child = alternatives[rng.randrange(1, len(alternatives))]
            else:
                child = alternatives[0]
        if child[0] == "t":
            out.extend(child[1])
        else:
            _sample(child, rng, probs, out)


# --------------------------------------------------------------------------------------------------------------
# Source rendering
# --------------------------------------------------------------------------------------------------------------


def _render_np(np: _NP) -> list[str]:
    if np.name is not None:
        return [np.name]
    words = [_SRC[f"noun:{np.noun}"]]
    if np.adjective is not None:
        words.append(_SRC[f"adj:{np.adjective}"])
        if np.intensified:
            words.append(_SRC["intens:very"])
    if np.number is not None:
        words.append(str(np.number))
    if np.definite:
        words.append(_DEF)
    return words


def _render_source(frame: _Frame) -> str:
    words = []
    if frame.time is not None:
        words.append(_SRC[f"time:{frame.time}"])
    if frame.date is not None:
        words += [str(frame.date[0]), _SRC[f"month:{frame.date[1]}"]]
    words += _render_np(frame.subject) + [_SUBJ] + _render_np(frame.obj) + [_OBJ]
    if frame.place is not None:
        words += [_SRC[f"place:{frame.place}"], _LOC]
    words += [_SRC[f"verb:{frame.verb}"], _END]
    return _detokenize(words)


def _detokenize(tokens: Sequence[str]) -> str:
    """Tokens to text, "," and "." attached to the preceding word."""
    return " ".join(tokens).replace(" ,", ",").replace(" .", ".")


@dataclass
class SyntheticTaskConfig:
    """How the synthetic task is generated. The same config always gives identical datasets.

    Attributes:
        seed: Seed of every random draw (sources, targets, references).
        num_train: Number of training rows.
        num_valid: Number of validation rows (distinct sources, none of them in train or test).
        num_test: Number of test rows (distinct sources, none of them in train or validation).
        train_targets_per_source: How many training rows each training source gets, each with an
            independently sampled target (1 = every training source once; 2, the default, makes the raw
            multi-modality directly visible as identical sources with different targets).
        num_references: Maximum number of distinct valid targets in the `references` column (the first is
            the row's "tgt", the others are drawn uniformly at every choice point; fewer when the source has fewer
            valid targets).
        train_references: Also add the `references` column to the training split (slower to build).
        synonym_prob: Chance that a lexical choice point (noun, adjective, verb, intensifier, time adverbial,
            place preposition, "will" vs "is going to") leaves its canonical variant in a sampled target (then a
            non-canonical variant is drawn uniformly).
        format_prob: Same for number formats (digits vs words) and date formats ("march 12" canonical,
            "12 march", "the 12th of march").
        reorder_prob: Same for word order: time adverbial at the front instead of the end; date before
            place instead of after.
        optional_word_prob: Chance of dropping an optional word ("on" before a date, the comma after a fronted
            adverbial), which are present in the canonical target.
        name_prob: Chance that the subject (and, independently, the object) is a person name.
        adjective_prob: Chance that a noun phrase has an adjective.
        intensifier_prob: Chance that an adjective is intensified ("very"/"really").
        number_prob: Chance that the object carries a number (2-99; then it is plural).
        definite_prob: Chance that a noun phrase is definite ("the") rather than indefinite ("a", or no article
            with a number).
        place_prob: Chance of a place phrase ("in the park").
        date_prob: Chance of a date (day 1-28 and month).
        time_prob: Chance of a time adverbial (which also sets the tense).
    """

    seed: int = 0
    num_train: int = 20000
    num_valid: int = 500
    num_test: int = 500
    train_targets_per_source: int = 2
    num_references: int = 8
    train_references: bool = False
    synonym_prob: float = 0.4
    format_prob: float = 0.4
    reorder_prob: float = 0.4
    optional_word_prob: float = 0.3
    name_prob: float = 0.15
    adjective_prob: float = 0.35
    intensifier_prob: float = 0.3
    number_prob: float = 0.3
    definite_prob: float = 0.5
    place_prob: float = 0.4
    date_prob: float = 0.3
    time_prob: float = 0.5

    def __post_init__(self):
        for name in ("num_train", "num_valid", "num_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.train_targets_per_source < 1 or self.num_references < 1:
            raise ValueError("train_targets_per_source and num_references must be >= 1.")
        for name, value in vars(self).items():
            if name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}.")

    def choice_probabilities(self) -> dict[str, float]:
        """Chance of a non-canonical alternative, per kind of choice point."""
        return {
            "synonym": self.synonym_prob,
            "format": self.format_prob,
            "reorder": self.reorder_prob,
            "optional": self.optional_word_prob,
        }


def _sample_np(rng: random.Random, config: SyntheticTaskConfig, nouns: list[str], allow_number: bool) -> _NP:
    if rng.random() < config.name_prob:
        return _NP(name=rng.choice(_NAMES))
    adjective = rng.choice(_ADJECTIVE_KEYS) if rng.random() < config.adjective_prob else None
    return _NP(
        noun=rng.choice(nouns),
        adjective=adjective,
        intensified=adjective is not None and rng.random() < config.intensifier_prob,
        number=rng.randint(2, _MAX_NUMBER) if allow_number and rng.random() < config.number_prob else None,
        definite=rng.random() < config.definite_prob,
    )


_ADJECTIVE_KEYS = list(_ADJECTIVES)
_ANIMATE_KEYS, _NOUN_KEYS = list(_ANIMATE), list(_NOUNS)
_VERB_KEYS, _TIME_KEYS, _PLACE_KEYS = list(_VERBS), list(_TIMES), list(_PLACES)


def _sample_frame(rng: random.Random, config: SyntheticTaskConfig) -> _Frame:
    return _Frame(
        subject=_sample_np(rng, config, _ANIMATE_KEYS, allow_number=False),
        verb=rng.choice(_VERB_KEYS),
        obj=_sample_np(rng, config, _NOUN_KEYS, allow_number=True),
        place=rng.choice(_PLACE_KEYS) if rng.random() < config.place_prob else None,
        date=(rng.randint(1, _MAX_DAY), rng.choice(_MONTHS)) if rng.random() < config.date_prob else None,
        time=rng.choice(_TIME_KEYS) if rng.random() < config.time_prob else None,
    )


def _references(tree, first: str, k: int, rng: random.Random) -> list[str]:
    """`first`, then distinct valid targets up to `k` in all: drawn uniformly from the set when it is small, else
    uniformly at every choice point (min(k, set size) references in practice)."""
    if _count(tree) <= 256:
        others = [text for text in map(_detokenize, _iterate(tree)) if text != first]
        return [first] + rng.sample(others, min(k - 1, len(others)))
    refs = {first: None}
    for _ in range(50 * k):
        if len(refs) >= k:
            break
        out: list[str] = []
        _sample(tree, rng, None, out)
        refs.setdefault(_detokenize(out), None)
    return list(refs)


def _features(with_references: bool) -> datasets.Features:
    features = {"translation": datasets.Translation(languages=[SOURCE_LANG, TARGET_LANG])}
    if with_references:
        list_feature = getattr(datasets, "List", None) or datasets.Sequence  # datasets < 4 has no List
        features["references"] = list_feature(datasets.Value("string"))
    return datasets.Features(features)


def build_synthetic_task(config: SyntheticTaskConfig | None = None) -> datasets.DatasetDict:
    """Generate the task: a `DatasetDict` with "train", "validation" and "test" splits.

    Every row has `translation = {"src": source, "tgt": one sampled valid target}`. Validation and test rows (and
    train rows with `config.train_references`) also have `references`: up to `config.num_references` distinct
    valid targets, `references[0] == translation["tgt"]`. Split sources are disjoint; each training source appears
    `config.train_targets_per_source` times (rows shuffled).
    """
    config = config or SyntheticTaskConfig()
    source_rng = random.Random(f"em-nat-synthetic/{config.seed}/sources")
    target_rng = random.Random(f"em-nat-synthetic/{config.seed}/targets")
    reference_rng = random.Random(f"em-nat-synthetic/{config.seed}/references")
    probs = config.choice_probabilities()

    num_train_sources = -(-config.num_train // config.train_targets_per_source)
    needed = config.num_valid + config.num_test + num_train_sources
    pool: dict[str, _Frame] = {}
    attempts = 0
    while len(pool) < needed:
        attempts += 1
        if attempts > 50 * needed + 1000:
            raise ValueError(f"Could not draw {needed} distinct sources with this config; lower the split sizes.")
        frame = _sample_frame(source_rng, config)
        pool.setdefault(_render_source(frame), frame)
    sources = list(pool)
    split_sources = {
        "validation": sources[: config.num_valid],
        "test": sources[config.num_valid : config.num_valid + config.num_test],
    }
    train = [s for s in sources[config.num_valid + config.num_test :] for _ in range(config.train_targets_per_source)]
    train = train[: config.num_train]
    source_rng.shuffle(train)
    split_sources = {"train": train, **split_sources}
    trees = {source: _target_tree(frame) for source, frame in pool.items()}

    splits = {}
    for split, rows in split_sources.items():
        targets = []
        for source in rows:
            out: list[str] = []
            _sample(trees[source], target_rng, probs, out)
            targets.append(_detokenize(out))
        columns: dict = {"translation": [{SOURCE_LANG: s, TARGET_LANG: t} for s, t in zip(rows, targets)]}
        with_references = split != "train" or config.train_references
        if with_references:
            columns["references"] = [
                _references(trees[s], t, config.num_references, reference_rng) for s, t in zip(rows, targets)
            ]
        splits[split] = datasets.Dataset.from_dict(columns, features=_features(with_references))
    return datasets.DatasetDict(splits)
