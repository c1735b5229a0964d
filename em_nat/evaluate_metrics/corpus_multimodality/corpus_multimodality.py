"""`evaluate` module: corpus-level multi-modality (CM) of a parallel corpus under a non-autoregressive model,
the quantity the EM approach lowers (Sun & Yang, ICML 2020, "Corpus-level multi-modality").

Shipped inside em-nat and loaded by local path (`em_nat.load_metric("corpus_multimodality")`), so it works offline.
CM is computed by `em_nat.metrics.corpus_multimodality`, the function the EM trainer logs as `em/cm`.
"""

import datasets
import evaluate

from em_nat.metrics import corpus_multimodality

_DESCRIPTION = """\
CM_X(Y) = mean over the pairs (x, y) of a corpus of -log p_NAT(y | x), where p_NAT is a non-autoregressive (NAT)
model trained on that corpus and the log-likelihood includes the length term: log p(|y| | x) + sum over positions
of log p(y_k | x, |y|). A lower CM means targets that a model predicting all positions independently can fit: the
EM loop of Sun & Yang (2020) picks, among an autoregressive model's candidate translations, those that lower it.

This is a measurement of a corpus under a model, not a text metric: it takes the NAT's scores, not strings. Score
the pairs with em-nat's NAT (`NATForConditionalGeneration.score_targets`, one total log-probability per pair, not
length-normalised, no label smoothing) and pass those values.

Limitations: CM depends on the model as much as on the corpus. Compare it only between corpora scored by models of
the same architecture and tokenizer, each trained on the corpus it scores, as the paper does; it grows with target
length, so compare corpora of similar lengths. It is not a quality metric of translations.
"""

_KWARGS_DESCRIPTION = """
Args:
    log_likelihoods (`list` of `float`): per pair, log p_NAT(y | x) with the length term (natural log, <= 0).
Returns:
    corpus_multimodality (`float`): the mean of -log p_NAT(y | x), in nats.
Examples:
    >>> import em_nat
    >>> cm = em_nat.load_metric("corpus_multimodality")
    >>> cm.compute(log_likelihoods=[-2.0, -4.0, -9.0])
    {'corpus_multimodality': 5.0}

    With a NAT and its tokenizer (targets padded with PAD; EOS-terminated by the tokenizer):
    >>> batch = tokenizer(sources, text_target=targets, padding=True, return_tensors="pt")
    >>> scores = nat.score_targets(batch["input_ids"], batch["attention_mask"], batch["labels"])
    >>> cm.compute(log_likelihoods=scores.tolist())
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
class CorpusMultimodality(evaluate.Measurement):
    def _info(self):
        return evaluate.MeasurementInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://arxiv.org/abs/2006.16378",
            reference_urls=["https://arxiv.org/abs/2006.16378"],
            features=datasets.Features({"log_likelihoods": datasets.Value("float64")}),
        )

    def _compute(self, log_likelihoods):
        return {"corpus_multimodality": corpus_multimodality(log_likelihoods)}
