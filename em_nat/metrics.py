"""Translation metrics with their protocol attached: sacreBLEU with signature, corpus multi-modality (CM) and the
repeated-token rate (PAPER.md, "Corpus-level multi-modality").

BLEU is computed with sacrebleu directly (`evaluate.load("sacrebleu")` needs the Hub).
"""

from collections.abc import Sequence

from sacrebleu.metrics import BLEU


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


def repeated_token_rate(token_lists: Sequence[Sequence[str | int]]) -> float:
    """Share of output tokens equal to their left neighbour: the symptom of multi-modality ("the the house")."""
    repeats = total = 0
    for tokens in token_lists:
        total += max(0, len(tokens) - 1)
        repeats += sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)
    return repeats / total if total else 0.0


def corpus_multimodality(log_likelihoods: Sequence[float]) -> float:
    """CM_X(Y): mean over pairs of -log p_NAR(y | x), length term included, from a NAR trained on (X, Y)."""
    if not log_likelihoods:
        raise ValueError("CM needs at least one scored pair.")
    return -sum(log_likelihoods) / len(log_likelihoods)
