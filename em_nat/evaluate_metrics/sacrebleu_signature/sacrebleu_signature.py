"""`evaluate` module: corpus sacreBLEU with one or several references per line, returned with its signature.

Shipped inside em-nat and loaded by local path (`em_nat.load_metric("sacrebleu_signature")`), so it works offline,
unlike `evaluate.load("sacrebleu")`, which fetches its script from the Hub. The score is computed by
`em_nat.metrics.corpus_bleu`, the function every em-nat table uses.
"""

import datasets
import evaluate

from em_nat.metrics import corpus_bleu

_DESCRIPTION = """\
Corpus-level BLEU computed by sacreBLEU (Post, 2018) on detokenized text, with sacreBLEU's default settings
(13a tokenization, exponential smoothing), as em-nat reports it in its results tables and model cards.

Each prediction may have one reference or several; lines may have different numbers of references (a missing
reference is left out of that line, as sacreBLEU does with None). The result carries the sacreBLEU signature
(for example `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`), which says how the score was
computed; report it with the score, since BLEU figures computed with other settings are not comparable.
`lowercase=True` scores case-insensitively (`case:lc` in the signature).

Intended use: test-set BLEU of translation outputs, in particular the non-autoregressive (NAT) and autoregressive
models em-nat trains. Limitations: BLEU is a surface n-gram match; it rewards the reference's wording and is not
a judgement of adequacy. Scores are rounded to two decimals.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): detokenized translations, one per source.
    references (`list` of `str`, or `list` of `list` of `str`): per prediction, its reference or its references.
    lowercase (`bool`, defaults to `False`): score case-insensitively.
Returns:
    score (`float`): corpus BLEU, 0 to 100, rounded to two decimals.
    signature (`str`): the sacreBLEU signature of the settings used.
Examples:
    >>> import em_nat
    >>> bleu = em_nat.load_metric("sacrebleu_signature")
    >>> result = bleu.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])
    >>> result["score"], result["signature"].split("|")[0]
    (100.0, 'nrefs:1')
"""

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    publisher = "Association for Computational Linguistics",
    url = "https://www.aclweb.org/anthology/W18-6319",
    pages = "186--191",
}
@inproceedings{papineni-etal-2002-bleu,
    title = "{B}leu: a Method for Automatic Evaluation of Machine Translation",
    author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing",
    booktitle = "Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics",
    year = "2002",
    pages = "311--318",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SacrebleuSignature(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://github.com/mjpost/sacrebleu",
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://www.aclweb.org/anthology/W18-6319"],
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references, lowercase=False):
        return corpus_bleu(predictions, references, lowercase=lowercase)
