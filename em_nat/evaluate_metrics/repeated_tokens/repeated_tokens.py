"""`evaluate` module: the repeated-token rate of translation outputs, the symptom of multi-modality in
non-autoregressive translation ("the the house").

Shipped inside em-nat and loaded by local path (`em_nat.load_metric("repeated_tokens")`), so it works offline. The
rate is computed by `em_nat.metrics.repeated_token_rate`, the one definition every em-nat table uses.
"""

import datasets
import evaluate

from em_nat.metrics import repeated_token_rate

_DESCRIPTION = """\
The share of adjacent output-token pairs whose two tokens are equal, counted on token ids. Non-autoregressive
translation models predict every target position at once; when the training targets are multi-modal (several
valid translations of one source), neighbouring positions often copy each other and the output repeats words.
This rate measures that symptom; em-nat's optimal de-duplicated decoding (ODD) brings it to zero on the model's
own tokens.

Definition: per sequence, the ids listed in `ignore_ids` are dropped first (padding, EOS, the decoder start; pass
`em_nat.metrics.structural_ids(tokenizer)`, plus -100 for predictions padded by `Seq2SeqTrainer`). A sequence of n
kept tokens has n - 1 adjacent pairs; the rate is the number of equal pairs over the number of pairs, summed over
all sequences (0.0 when there are no pairs).

Limitations: it is counted on subword ids, so a repeated word made of several subwords counts once per equal
neighbouring id, and legitimate repetitions ("very very") count too. Compare models on one tokenizer only.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): per output, its token ids (padding and EOS included are fine when
        listed in `ignore_ids`).
    ignore_ids (`list` of `int`, *optional*): ids that are not content and are dropped before counting.
Returns:
    repeated_token_rate (`float`): between 0 and 1.
Examples:
    >>> import em_nat
    >>> repeats = em_nat.load_metric("repeated_tokens")
    >>> repeats.compute(predictions=[[5, 5, 6, 7, 1], [8, 9, 1, 0]], ignore_ids=[0, 1])
    {'repeated_token_rate': 0.25}
"""

_CITATION = """\
@inproceedings{sun2020em,
    title = "An {EM} Approach to Non-autoregressive Conditional Sequence Generation",
    author = "Sun, Zhiqing and Yang, Yiming",
    booktitle = "Proceedings of the 37th International Conference on Machine Learning",
    year = "2020",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RepeatedTokens(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://arxiv.org/abs/2006.16378",
            reference_urls=["https://arxiv.org/abs/2006.16378"],
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64"))}),
        )

    def _compute(self, predictions, ignore_ids=()):
        return {"repeated_token_rate": repeated_token_rate(predictions, ignore_ids)}
