"""Glancing training (GLAT, Qian et al., ACL 2021) for the NAT phase: the ratio option and its annealing schedule.

The sampling itself lives in the model (`NATForConditionalGeneration.forward(glancing_ratio=...)`), so that it runs
wherever the NAT is trained; this module turns the command-line value into a ratio per update.
"""


def parse_glancing_ratio(value: str | float | None) -> tuple[float, float]:
    """`"0.5:0.3"` -> (0.5, 0.3): the ratio falls linearly from the first to the second value over a phase's
    updates (GLAT's default); `"0.3"` is constant; `"0"`, `"none"` or None turn glancing off.

    Raises:
        ValueError: a value that is not a number in [0, 1], naming the option and the valid form.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
        return 0.0, 0.0
    parts = str(value).split(":") if isinstance(value, str) else [value]
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or not all(0.0 <= number <= 1.0 for number in numbers):
        raise ValueError(
            f"nat_glancing_ratio must be a ratio in [0, 1] or 'start:end' (e.g. 0.5:0.3, annealed linearly over the "
            f"phase), got {value!r}."
        )
    return numbers[0], numbers[-1]


def glancing_ratio_at(step: int, total_steps: int, start: float, end: float) -> float:
    """The ratio at update `step` (0-based) of `total_steps`: `start` at the first update, `end` at the last."""
    if total_steps <= 1:
        return start
    progress = min(max(step, 0), total_steps - 1) / (total_steps - 1)
    return start + (end - start) * progress
