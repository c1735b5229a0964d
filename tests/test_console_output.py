"""What a run shows on the console and what goes to its log file (em_nat/logging_setup.py); the console of a real
tiny run of examples/train_em.py is checked in test_example_runs.py."""

import io
import logging
import os
import warnings

import pytest
import transformers

from em_nat import logging_setup
from em_nat.logging_setup import LOG_FILE, NON_TERMINAL_INTERVAL, PHASE_LOGGER, format_duration, run_logging


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_are_throttled_when_not_on_a_terminal():
    piped = io.StringIO()
    bar = logging_setup.progress_bar(total=2000, desc="train nat", file=piped)
    for _ in range(2000):
        bar.update(1)
    bar.close()
    assert bar.mininterval == NON_TERMINAL_INTERVAL
    assert piped.getvalue().count("\r") <= 3  # drawn when created and when closed, not on each update
    assert "2000/2000" in piped.getvalue()
    live = logging_setup.progress_bar(total=10, file=Terminal())
    assert live.mininterval == 0.1  # tqdm's own default on a terminal
    live.close()


@pytest.mark.parametrize(
    "seconds, text", [(1.44, "1.4s"), (42.2, "42s"), (192, "3m12s"), (3600, "1h00m"), (7530, "2h05m")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_run_logging_sends_phase_lines_and_our_warnings_to_the_console_and_everything_to_the_log(tmp_path):
    console = io.StringIO()
    root = logging.getLogger()
    handlers_before, level_before = list(root.handlers), root.level
    transformers_handlers = list(logging.getLogger("transformers").handlers)
    with run_logging(str(tmp_path / "run"), stream=console) as path:
        assert path == str(tmp_path / "run" / LOG_FILE)
        logging.getLogger(PHASE_LOGGER).info("round 1: NAT trained 700 updates in 3m12s")
        logging.getLogger("accelerate.checkpointing").info("Model weights saved in /x/model.safetensors")
        logging.getLogger("accelerate.utils.other").warning("Removed shared tensor {'lm_head.weight'} while saving")
        transformers.utils.logging.get_logger("transformers.modeling_utils").warning("a transformers warning")
        logging.getLogger("em_nat.trainers.training").info("nat update 10: loss 3.2")
        logging.getLogger("em_nat.trainers.em_trainer").warning("an em-nat warning")
        logging.getLogger("__main__").warning("a warning of the script")
        logging.getLogger("datasets").error("a library error")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a warning raised by a library", FutureWarning, stacklevel=1)
            ours = os.path.join(os.path.dirname(logging_setup.__file__), "data.py")
            warnings.warn_explicit("a warning raised by em-nat", UserWarning, ours, 1)
    shown = console.getvalue()
    for line in (
        "round 1: NAT trained 700 updates in 3m12s",
        "WARNING: an em-nat warning",
        "WARNING: a warning of the script",
        "ERROR (datasets): a library error",
        "a warning raised by em-nat",
        f"full log: {path}",
        f"3 warnings of libraries are in {path}",
    ):
        assert line in shown, line
    for hidden in (
        "Model weights saved",
        "Removed shared tensor",
        "a transformers warning",
        "nat update 10",
        "a warning raised by a library",
    ):
        assert hidden not in shown, hidden
    log = open(path).read()
    for line in (
        "Model weights saved",
        "Removed shared tensor",
        "a transformers warning",
        "nat update 10",
        "a warning raised by a library",
        "round 1: NAT trained",
        "an em-nat warning",
        "a library error",
    ):
        assert line in log, line
    # everything is as it was
    assert root.handlers == handlers_before and root.level == level_before
    assert logging.getLogger("transformers").handlers == transformers_handlers
    assert transformers.utils.logging.is_progress_bar_enabled()


def test_other_processes_log_to_the_console_only(tmp_path):
    console = io.StringIO()
    with run_logging(str(tmp_path / "run"), main_process=False, stream=console) as path:
        logging.getLogger("accelerate.checkpointing").info("Model weights saved in /x")
        logging.getLogger("em_nat.hub").error("a failed push")
    assert path is None and not (tmp_path / "run" / LOG_FILE).exists()
    assert console.getvalue() == "ERROR: a failed push\n"
