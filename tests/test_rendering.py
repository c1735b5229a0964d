"""em_nat.rendering: the benchmark plot's colours."""

import pytest


def test_every_method_of_a_plot_has_its_own_colour():
    """The benchmark plot tells methods apart by colour alone (batch size is the marker): 12 methods, the benchmark's
    full set, must not share one (tab10 alone gave the 11th and 12th the 1st and 2nd's)."""
    pytest.importorskip("matplotlib")
    from em_nat.rendering import method_colors

    for count in (1, 12, 20):
        colors = method_colors([f"m{k}" for k in range(count)])
        assert len(set(colors.values())) == count
    with pytest.raises(ValueError, match="at most 20"):
        method_colors([f"m{k}" for k in range(21)])
