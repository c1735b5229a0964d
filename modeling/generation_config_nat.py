"""Decoding settings of the NAT (PAPER.md, "Decoding"): length beam, ODD, AR rescoring, and the output length caps.

[`NATGenerationConfig`] is a `GenerationConfig` whose extra attributes are the NAT's knobs, checked in one place
(`validate()`). It is saved as a plain `generation_config.json`, so stock `GenerationConfig.from_pretrained(folder)`
reads it too, keeping the knobs as untyped attributes; `from_generation_config` turns such a config back into a
typed one.

This file imports only transformers: `save_pretrained` copies it next to the weights for `trust_remote_code` users.
"""

import inspect
from numbers import Integral, Real

from transformers import GenerationConfig


class NATGenerationConfig(GenerationConfig):
    r"""
    Decoding settings of [`NATForConditionalGeneration.generate`], saved as `generation_config.json`. Any of them can
    be overridden per call: `model.generate(**inputs, length_beam=9)`.

    Args:
        > Output length (EOS included; the NAT has no prompt, so `max_length` and `max_new_tokens` mean the same)

        length_beam (`int`, *optional*, defaults to 1):
            Number m of target lengths decoded around the predicted length (m = 9: L-4 .. L+4); one candidate is
            kept per source, by AR rescoring when `generate()` gets a `rescorer`, else by the NAT's own score.
        max_length / max_new_tokens (`int`, *optional*):
            Cap on the output length, never above the model's `max_position_embeddings`. The model's own
            `generation_config.max_length` is not a cap: `Seq2SeqTrainer` writes transformers' global default (20)
            into it. Give `max_length` to `generate()` or in an explicit `generation_config`.
        min_length (`int`, *optional*):
            Shortest output (at least 1: EOS alone).

        > Tokens

        odd (`bool`, *optional*, defaults to `True`):
            ODD, optimal de-duplicated decoding: a Viterbi pass over the `odd_top_k` best tokens of each position
            that leaves no two equal neighbours. `False`: argmax at every position.
        odd_top_k (`int`, *optional*, defaults to 3):
            Tokens per position that ODD chooses among, at least 2.

        > AR rescoring

        rescore_alpha (`float`, *optional*, defaults to 0.6):
            Exponent of the GNMT length penalty ((5 + L) / 6) ** alpha that divides the rescorer's log-probabilities
            (paper: 0.6 on En-De), at least 0.
        rescore_top_k (`int`, *optional*):
            Length candidates passed to the rescorer: the `rescore_top_k` best of the `length_beam` by the NAT's own
            score (length and token log-probabilities); None: all of them. Pruning saves rescoring time, which grows
            with the number of candidates.

    The knobs of autoregressive search (`num_beams`, `do_sample`, `temperature`...) are kept, as in any generation
    config, but have no NAT meaning: `generate()` ignores them, with a warning when they are set.
    """

    def __init__(
        self,
        length_beam: int = 1,
        odd: bool = True,
        odd_top_k: int = 3,
        rescore_alpha: float = 0.6,
        rescore_top_k: int | None = None,
        **kwargs,
    ):
        # set before GenerationConfig.__init__, which ends by calling validate()
        self.length_beam = length_beam
        self.odd = odd
        self.odd_top_k = odd_top_k
        self.rescore_alpha = rescore_alpha
        self.rescore_top_k = rescore_top_k
        super().__init__(**kwargs)

    @classmethod
    def from_generation_config(cls, config: GenerationConfig) -> "NATGenerationConfig":
        """`config` itself if it is a `NATGenerationConfig`, else one with its values: a stock `GenerationConfig`
        (read by `GenerationConfig.from_pretrained`, built by hand, set by `Seq2SeqTrainer`) holds the NAT knobs as
        untyped attributes, or not at all, and then they take their defaults."""
        if isinstance(config, cls):
            return config
        return cls.from_dict(config.to_dict())

    @classmethod
    def from_model_config(cls, model_config) -> "NATGenerationConfig":
        """The stock conversion (the model config's special token ids) with the NAT knobs at their defaults.

        Marked as not derived from the model config: the knobs are settings of their own, saved in
        `generation_config.json` (the stock conversion also fails on attributes `GenerationConfig` lacks).
        """
        config = cls.from_generation_config(GenerationConfig.from_model_config(model_config))
        config._from_model_config = False
        return config

    def validate(self, strict: bool = False, user_set_attributes: set[str] | None = None):
        """Raise a `ValueError` naming the knob, its value and the valid range for a setting NAT decoding cannot use;
        then `GenerationConfig.validate` for the stock attributes."""
        for name, minimum, optional in (
            ("length_beam", 1, False),
            ("odd_top_k", 2, False),
            ("min_length", 0, True),
            ("max_length", 1, True),
            ("max_new_tokens", 1, True),
            ("rescore_top_k", 1, True),
        ):
            value = getattr(self, name)
            if not (optional and value is None or _is_int_at_least(value, minimum)):
                allowed = f"an integer >= {minimum}" + (" or None" if optional else "")
                raise ValueError(f"NATGenerationConfig.{name} must be {allowed}, got {value!r}.")
        if not isinstance(self.odd, bool):
            raise ValueError(f"NATGenerationConfig.odd must be True or False, got {self.odd!r}.")
        alpha = self.rescore_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, Real) or not alpha >= 0:
            raise ValueError(
                f"NATGenerationConfig.rescore_alpha must be a number >= 0 (the GNMT length-penalty exponent), got "
                f"{alpha!r}."
            )
        for cap in ("max_length", "max_new_tokens"):
            if self.min_length is not None and getattr(self, cap) is not None and self.min_length > getattr(self, cap):
                raise ValueError(
                    f"NATGenerationConfig.min_length ({self.min_length}) must be <= {cap} ({getattr(self, cap)})."
                )
        super().validate(strict=strict, user_set_attributes=user_set_attributes)


def _is_int_at_least(value, minimum: int) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= minimum


# The NAT knobs and their defaults, as the card of a saved model lists them (em_nat.hub).
NAT_GENERATION_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(NATGenerationConfig.__init__).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}

__all__ = ["NAT_GENERATION_DEFAULTS", "NATGenerationConfig"]
