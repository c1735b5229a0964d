"""Translation metrics with their protocol attached: sacreBLEU with signature, corpus multi-modality (CM) and the
repeated-token rate (PAPER.md, "Corpus-level multi-modality").

BLEU is computed with sacrebleu directly (`evaluate.load("sacrebleu")` needs the Hub). The same functions are offered
as `evaluate` modules shipped inside the package (`em_nat/evaluate_metrics/<name>/<name>.py`, loaded by local path,
so offline): `load_metric("sacrebleu_signature")`, `load_metric("repeated_tokens")`,
`load_metric("corpus_multimodality")`. The modules call the functions below; this file is the one implementation.
"""

from collections.abc import Iterable, Sequence
from pathlib import Path

from sacrebleu.metrics import BLEU

# name -> what it measures; each is em_nat/evaluate_metrics/<name>/<name>.py
METRIC_MODULES = {
    "sacrebleu_signature": "corpus sacreBLEU, one or several references per line, with its signature",
    "repeated_tokens": "share of adjacent equal output tokens (repeated_token_rate)",
    "corpus_multimodality": "CM: mean -log p_NAT(y | x) of scored pairs (a measurement)",
}
METRIC_MODULES_DIR = Path(__file__).resolve().parent / "evaluate_metrics"


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], lowercase: bool = False
) -> dict:
    """sacreBLEU of detokenized hypotheses against one reference per line, or several (a list per line).
    `lowercase=True` scores case-insensitively (signature `case:lc`), for comparison with lowercased published BLEU.

    Returns:
        `{"score": float, "signature": str}`.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references.")
    multi = bool(references) and not isinstance(references[0], str)
    per_line = [list(refs) for refs in references] if multi else [[ref] for ref in references]
    width = max((len(refs) for refs in per_line), default=1)
    streams = [[refs[k] if k < len(refs) else None for refs in per_line] for k in range(width)]
    bleu = BLEU(lowercase=lowercase)
    score = bleu.corpus_score(list(hypotheses), streams)
    return {"score": round(score.score, 2), "signature": str(bleu.get_signature())}


def repeated_token_rate(sequences: Sequence[Sequence[int]], ignore_ids: Iterable[int] = ()) -> float:
    """Share of adjacent output-token pairs whose two tokens are equal: the symptom of multi-modality ("the the
    house"), and what ODD removes. The one definition used everywhere in em-nat.

    Counted on token ids, per sequence, after dropping the structural ids in `ignore_ids` (pass the tokenizer's pad,
    EOS and decoder-start ids; see `structural_ids`). A sequence of n kept tokens has n - 1 adjacent pairs; the rate
    is the sum of equal pairs over the sum of pairs (0.0 when there are no pairs).

    Args:
        sequences: per output, its token ids (any padding or EOS included, they are dropped).
        ignore_ids: ids that are not content.
    """
    ignored = set(ignore_ids)
    repeats = total = 0
    for sequence in sequences:
        tokens = [token for token in sequence if token not in ignored]
        total += max(0, len(tokens) - 1)
        repeats += sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)
    return repeats / total if total else 0.0


def structural_ids(tokenizer) -> set[int]:
    """The ids `repeated_token_rate` drops: padding, EOS and BOS (the decoder's start token is one of them in every
    model em-nat builds). Unknown-word ids stay: two `<unk>` in a row are a repeat a reader sees."""
    ids = {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id}
    return {i for i in ids if i is not None}


def corpus_multimodality(log_likelihoods: Sequence[float]) -> float:
    """CM_X(Y): mean over pairs of -log p_NAT(y | x), length term included, from a NAT trained on (X, Y)."""
    if not log_likelihoods:
        raise ValueError("CM needs at least one scored pair.")
    return -sum(log_likelihoods) / len(log_likelihoods)


def metric_module_path(name: str) -> str:
    """The folder of the `evaluate` module `name` inside the installed package (what `evaluate.load` accepts)."""
    if name not in METRIC_MODULES:
        known = ", ".join(f"{key!r} ({text})" for key, text in METRIC_MODULES.items())
        raise ValueError(f"No em-nat metric module {name!r}; the package ships {known}.")
    folder = METRIC_MODULES_DIR / name
    if not (folder / f"{name}.py").is_file():
        raise FileNotFoundError(
            f"{folder / (name + '.py')} is missing from the installed package; reinstall em-nat "
            "(pip install --force-reinstall em-nat, or pip install -e . in a checkout)."
        )
    return str(folder)


def load_metric(name: str, **kwargs):
    """`evaluate.load` of a metric module shipped with em-nat, by local path: works offline and in `evaluate`
    workflows (`combine`, `EvaluationSuite`...).

    Args:
        name: `"sacrebleu_signature"`, `"repeated_tokens"` or `"corpus_multimodality"` (`METRIC_MODULES`).
        kwargs: passed to `evaluate.load` (`experiment_id`, `keep_in_memory`, `cache_dir`...).
    Returns:
        The `evaluate.EvaluationModule`; `.description`, `.citation` and `.inputs_description` document it.
    """
    import evaluate  # only here: importing the package stays free of evaluate's start-up cost

    return evaluate.load(metric_module_path(name), **kwargs)
