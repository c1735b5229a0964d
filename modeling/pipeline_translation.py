"""`pipeline("translation")` for the NAT and for stock seq2seq models.

transformers 5 removed the translation task; em_nat registers this class under it on import (see
`em_nat.pipelines`), and a saved NAT folder carries this file and names it in `config.json` (`custom_pipelines`) so
that `pipeline("translation", model=folder, trust_remote_code=True)` works where em_nat is not installed.

This file imports only transformers: it is copied next to the weights.
"""

import warnings

from transformers import Pipeline


def check_tokenizer_compatible(tokenizer, config) -> None:
    """Raise a clear error when a tokenizer cannot feed a model: another vocabulary size or other special ids.

    A NAT (`model_type` "em_nat") is built with one embedding per token of its tokenizer (`vocab_size =
    len(tokenizer)`), so a tokenizer of any other size is another vocabulary, even with the same special ids: its ids
    would decode to other words. Stock models may pad their embeddings past the tokenizer (T5: 32,128 rows for
    32,100 tokens), so for them only a tokenizer larger than `vocab_size` is refused.

    Args:
        tokenizer: a `PreTrainedTokenizerBase`.
        config: the model's config (`model_type`, `vocab_size`, `pad_token_id`, `eos_token_id`).
    """
    problems = []
    vocab_size = getattr(config, "vocab_size", None)
    is_nat = getattr(config, "model_type", None) == "em_nat"
    if vocab_size is not None and (len(tokenizer) != vocab_size if is_nat else len(tokenizer) > vocab_size):
        model = "NAT" if is_nat else "model"
        problems.append(f"the tokenizer has {len(tokenizer)} tokens but the {model}'s vocab_size is {vocab_size}")
    for name in ("pad_token_id", "eos_token_id"):
        model_id, tokenizer_id = getattr(config, name, None), getattr(tokenizer, name, None)
        if model_id is not None and tokenizer_id is not None and model_id != tokenizer_id:
            problems.append(f"{name} is {tokenizer_id} in the tokenizer but {model_id} in the model")
    if problems:
        raise ValueError(
            "Tokenizer and model do not match: " + "; ".join(problems) + ". Use the tokenizer the model was trained "
            "with (saved next to it: AutoTokenizer.from_pretrained(<the model's folder or repo>)), or build the model "
            "from this tokenizer (vocab_size=len(tokenizer) and its special token ids)."
        )


class TranslationPipeline(Pipeline):
    """Translate text with any model whose `generate()` returns token ids (NAT or `AutoModelForSeq2SeqLM`).

    Call with one string or a list; returns `[{"translation_text": ...}]` per input (a list of those for a list).
    Blank inputs (empty or whitespace-only) translate to `""` without running the model, with a warning.
    Keyword arguments go to `generate()` (e.g. `length_beam`, `odd`, `rescorer`, `num_beams`, `max_new_tokens`),
    except `truncation` (default True: inputs longer than the model's positions are cut to fit) and
    `clean_up_tokenization_spaces`.
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _pipeline_calls_generate = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_tokenizer_compatible(self.tokenizer, self.model.config)

    def __call__(self, inputs, **kwargs):
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        blank = [not isinstance(text, str) or not text.strip() for text in texts]
        if any(not isinstance(text, str) for text in texts):
            raise TypeError("TranslationPipeline takes a string or a list of strings.")
        if any(blank):
            warnings.warn("Blank inputs (empty or whitespace-only) are translated to ''.", stacklevel=2)
        todo = [text for text, is_blank in zip(texts, blank) if not is_blank]
        done = iter(super().__call__(todo, **kwargs) if todo else [])
        results = [[self._blank_result(kwargs)] if is_blank else next(done) for is_blank in blank]
        if single:
            return results[0]
        # transformers' convention: a list in, one dict per input out, unless an input has several translations
        # (num_return_sequences > 1), in which case each input gets its list
        return [r[0] for r in results] if all(len(r) == 1 for r in results) else results

    @staticmethod
    def _blank_result(kwargs) -> dict:
        result = {"translation_text": ""} if kwargs.get("return_text", True) else {}
        if kwargs.get("return_tensors", False):
            result["translation_token_ids"] = []
        return result

    def _sanitize_parameters(
        self,
        truncation=None,
        clean_up_tokenization_spaces=None,
        return_tensors=None,
        return_text=None,
        **generate_kwargs,
    ):
        preprocess = {} if truncation is None else {"truncation": truncation}
        postprocess = {}
        if clean_up_tokenization_spaces is not None:
            postprocess["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        if return_tensors is not None:
            postprocess["return_tensors"] = return_tensors
        if return_text is not None:
            postprocess["return_text"] = return_text
        return preprocess, generate_kwargs, postprocess

    def preprocess(self, text, truncation=True):
        max_length = getattr(self.model.config, "max_position_embeddings", None)
        return self.tokenizer(text, return_tensors="pt", truncation=truncation, max_length=max_length)

    def _forward(self, model_inputs, **generate_kwargs):
        model_inputs.pop("token_type_ids", None)
        return {"output_ids": self.model.generate(**model_inputs, **generate_kwargs)}

    def postprocess(self, model_outputs, clean_up_tokenization_spaces=False, return_tensors=False, return_text=True):
        """One dict per returned sequence: `translation_text`, and `translation_token_ids` with `return_tensors=True`
        (the generated ids, EOS-terminated, PAD-padded)."""
        ids = model_outputs["output_ids"]
        texts = self.tokenizer.batch_decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up_tokenization_spaces
        )
        results = []
        for row, text in zip(ids, texts):
            result = {"translation_text": text.strip()} if return_text else {}
            if return_tensors:
                result["translation_token_ids"] = row
            results.append(result)
        return results
