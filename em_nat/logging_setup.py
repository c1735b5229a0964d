"""What a training run writes to the console and what goes to its log file.

- Progress bars (`progress_bar`): live on a terminal or in a notebook; when stderr is a file or a pipe (CI, nohup,
  `| tee`), redrawn at most once every `NON_TERMINAL_INTERVAL` seconds, plus their final state.
- The console (stderr) gets one line per phase of the run (the `PHASE_LOGGER` logger, e.g. "round 1: NAT trained
  700 updates in 3m12s, valid loss 2.310"), em-nat's own warnings and errors, and errors of any library.
- Everything else at INFO and above (accelerate's checkpoint lines "Model weights saved in ...", library warnings
  such as "Removed shared tensor {...} while saving", per-update losses) goes to the run's log file,
  `<output_dir>/train.log` (`LOG_FILE`), together with the console lines.

The package only logs, it never configures logging (STYLE.md); a script wraps its work in `run_logging(...)`, which
installs the above and restores the previous logging set-up on exit.
"""

import contextlib
import logging
import os
import sys
import warnings

from tqdm.auto import tqdm

PHASE_LOGGER = "em_nat.phases"
LOG_FILE = "train.log"
NON_TERMINAL_INTERVAL = 60.0  # seconds between redraws of a progress bar that does not write to a terminal
LIBRARIES = ("transformers", "datasets", "huggingface_hub")  # they attach their own stderr handler
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class MainProcessLogger(logging.LoggerAdapter):
    """Logs on the main process only, the message as given (accelerate's adapter prefixes "[RANK 0]", which a
    console line does not need)."""

    def log(self, level, msg, *args, **kwargs):
        from accelerate.state import PartialState

        if PartialState().is_main_process:
            self.logger.log(level, msg, *args, **kwargs)


def get_phase_logger() -> MainProcessLogger:
    """The logger of the console's phase lines (`PHASE_LOGGER`), main process only."""
    return MainProcessLogger(logging.getLogger(PHASE_LOGGER), {})


def writes_to_terminal(stream=None) -> bool:
    """Whether progress bars are seen live: `stream` (default stderr) is a terminal, or tqdm draws notebook widgets."""
    from tqdm.autonotebook import tqdm as notebook_tqdm
    from tqdm.std import tqdm as std_tqdm

    if notebook_tqdm is not std_tqdm:
        return True
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable=None, **kwargs):
    """A `tqdm.auto` progress bar that stays small in a log file: when stderr is not a terminal it is redrawn at most
    once every `NON_TERMINAL_INTERVAL` seconds (tqdm's default is ten times a second). Keyword arguments are
    tqdm's (`total`, `initial`, `desc`, `disable`...); move it with `update()`, not `refresh()`, which always draws."""
    if not writes_to_terminal(kwargs.get("file")):
        kwargs.setdefault("mininterval", NON_TERMINAL_INTERVAL)
        kwargs.setdefault("maxinterval", NON_TERMINAL_INTERVAL)
    return tqdm(iterable, **kwargs)


def format_duration(seconds: float) -> str:
    """`42s`, `3m12s`, `2h05m`; under 10 s with one decimal (`1.4s`)."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _our_source_folders() -> tuple[str, ...]:
    """Folders of em-nat's code (the package and, installed editable, its modeling/ and trainers/) and of the running
    script: a Python warning raised from a file under them is em-nat's own."""
    import em_nat
    from em_nat import modeling, trainers

    folders = {os.path.dirname(os.path.abspath(module.__file__)) for module in (em_nat, modeling, trainers)}
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if script:
        folders.add(os.path.dirname(os.path.abspath(script)))
    return tuple(folder + os.sep for folder in folders)


class ConsoleFilter(logging.Filter):
    """Lets through the phase lines, em-nat's warnings and errors (loggers `em_nat.*` and the script's `__main__`,
    Python warnings raised from em-nat's files) and every error; counts the library warnings it keeps off the
    console (they are in the log file)."""

    def __init__(self):
        super().__init__()
        self.folders = _our_source_folders()
        self.library_warnings = 0

    def ours(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":  # logging.captureWarnings: the message starts with the warning's file path
            return record.getMessage().startswith(self.folders)
        return record.name == "__main__" or record.name == "em_nat" or record.name.startswith("em_nat.")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == PHASE_LOGGER:
            return record.levelno >= logging.INFO
        if record.levelno >= logging.ERROR or (record.levelno >= logging.WARNING and self.ours(record)):
            return True
        if record.levelno >= logging.WARNING:
            self.library_warnings += 1
        return False


class ConsoleFormatter(logging.Formatter):
    """Phase lines as they are; anything else prefixed with its level (and its logger when not em-nat's)."""

    def __init__(self, console_filter: ConsoleFilter):
        super().__init__()
        self.console_filter = console_filter

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name == PHASE_LOGGER:
            return text
        source = "" if self.console_filter.ours(record) else f" ({record.name})"
        return f"{record.levelname}{source}: {text}"


@contextlib.contextmanager
def run_logging(output_dir: str | None, main_process: bool = True, stream=None):
    """Route a run's logging as the module docstring says, for the duration of the `with` block.

    Args:
        output_dir: the run folder; the main process appends everything at INFO and above to
            `<output_dir>/LOG_FILE` (created with the folder when missing). None: no log file.
        main_process: False on the other processes of a distributed run: console only, no log file.
        stream: the console (default `sys.stderr`).
    Yields:
        the log file's path (None without one).

    Also, inside the block: the libraries' own stderr handlers (transformers, datasets, huggingface_hub) are
    detached so that their records reach these handlers instead, their progress bars (model loading, dataset saving,
    uploads) are off, and Python warnings are logged (`logging.captureWarnings`). All of it is restored on exit.
    """
    import datasets
    import transformers

    root = logging.getLogger()
    console_filter = ConsoleFilter()
    console = logging.StreamHandler(sys.stderr if stream is None else stream)
    console.setFormatter(ConsoleFormatter(console_filter))
    console.addFilter(console_filter)
    handlers = [console]
    path = None
    if main_process and output_dir:
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, LOG_FILE)
        log_file = logging.FileHandler(path, encoding="utf-8")  # appends: a resumed run continues the same file
        log_file.setFormatter(logging.Formatter(FILE_FORMAT))
        log_file.setLevel(logging.INFO)
        handlers.append(log_file)

    transformers.utils.logging.get_logger()  # transformers sets up its handler lazily: now, so it can be detached
    saved_libraries = {}
    for name in LIBRARIES:
        library = logging.getLogger(name)
        saved_libraries[name] = (list(library.handlers), library.propagate)
        library.handlers, library.propagate = [], True
    bars = (transformers.utils.logging.is_progress_bar_enabled(), not datasets.utils.are_progress_bars_disabled())
    transformers.utils.logging.disable_progress_bar()  # also huggingface_hub's
    datasets.utils.disable_progress_bars()
    saved_root_level = root.level
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        if path:
            logging.getLogger(PHASE_LOGGER).info(f"full log: {path}")
            logging.getLogger(__name__).info(f"command: {' '.join(sys.argv)}")
        yield path
    finally:
        if console_filter.library_warnings and path:
            logging.getLogger(PHASE_LOGGER).info(
                f"{console_filter.library_warnings} warnings of libraries are in {path} (not shown here)"
            )
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved_root_level)
        for name, (library_handlers, propagate) in saved_libraries.items():
            library = logging.getLogger(name)
            library.handlers, library.propagate = library_handlers, propagate
        if bars[0]:
            transformers.utils.logging.enable_progress_bar()
        if bars[1]:
            with warnings.catch_warnings():  # an environment variable that forces them off wins, quietly
                warnings.simplefilter("ignore")
                datasets.utils.enable_progress_bars()
