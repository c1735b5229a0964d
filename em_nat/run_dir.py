"""`RunDir`: the one owner of an EM run's folder, its layout, resume state, finished rounds and their metrics.

    <run>/em_state.json            fingerprint, completed phases, metrics (written whole, tmp + rename)
    <run>/tokenizer/               the tokenizer a run trained (absent when it came with the AR)
    <run>/round-<t>/ar, nat        the round's models (save_pretrained folders, tokenizer included)
    <run>/round-<t>/candidates     the AR's N-best (a datasets folder), rounds >= 1
    <run>/round-<t>/data           sources, candidates, scores and the selection S_t, rounds >= 1 (not the last
                                   one when train_final_ar is false: nothing uses its S_t)
    <run>/round-<t>/work/<phase>   a phase's resume checkpoints, deleted once the phase is complete
    <run>/round-<t>/metrics.json   the round's metrics, written when the round is saved (the round is finished)
    <run>/results.{md,json}, test_results.{md,json}, train.log

Folders written before the rename to one name, NAT, say `nar` (`round-<t>/nar`, metric keys `eval/bleu_nar_odd`,
options `nar_max_steps`): `RunDir` reads them under the new names, so old runs stay loadable and resumable.
"""

import glob
import json
import os
import re
import shutil

from em_nat.files import read_json_state, write_json_atomic
from em_nat.logging_setup import LOG_FILE

STATE_FILE = "em_state.json"
MODEL_KINDS = ("ar", "nat")
LEGACY_FOLDERS = {"nat": "nar"}  # the NAT's folder in run folders written before the rename
RUN_OUTPUTS = (
    STATE_FILE,
    "round-*",
    "tokenizer",
    "results.md",
    "results.json",
    "test_results.md",
    "test_results.json",
    "logs",
    LOG_FILE,
)


def modern_name(name: str) -> str:
    """A metric key, option or phase name with the old 'nar' spelling replaced by 'nat' ('eval/bleu_nar_odd' ->
    'eval/bleu_nat_odd', 'nar_max_steps' -> 'nat_max_steps', 'round-2/nar' -> 'round-2/nat')."""
    return re.sub(r"(?<![a-z])nar(?![a-z])", "nat", name)


def modernize(value):
    """`value` (metrics, a state record, settings) with every 'nar' key, phase name and option value renamed."""
    if isinstance(value, dict):
        return {modern_name(key): modernize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [modernize(item) for item in value]
    if isinstance(value, str) and re.fullmatch(r"(round-\d+/)?nar", value):
        return modern_name(value)
    return value


class RunDir:
    """The folder of one EM run. Every path of the layout above, and every read of its state and metrics, goes
    through this class.

    Args:
        path: the run's `output_dir`.
    """

    def __init__(self, path: str):
        self.path = os.fspath(path)

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    # ----- layout ---------------------------------------------------------------------------------------------------

    def file(self, name: str) -> str:
        """A file at the top of the run folder (`results.md`, `train.log`...)."""
        return os.path.join(self.path, name)

    @property
    def state_file(self) -> str:
        return self.file(STATE_FILE)

    @property
    def tokenizer_dir(self) -> str:
        return self.file("tokenizer")

    def round(self, round_index: int, *parts: str) -> str:
        return os.path.join(self.path, f"round-{round_index}", *parts)

    def model(self, round_index: int, kind: str) -> str:
        """The round's 'ar' or 'nat' folder; for a run written before the rename, its `nar` folder."""
        if kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}.")
        folder = self.round(round_index, kind)
        legacy = LEGACY_FOLDERS.get(kind)
        if legacy and not os.path.isdir(folder) and os.path.isdir(self.round(round_index, legacy)):
            return self.round(round_index, legacy)
        return folder

    def has_model(self, round_index: int, kind: str) -> bool:
        return os.path.isfile(os.path.join(self.model(round_index, kind), "config.json"))

    def candidates(self, round_index: int) -> str:
        return self.round(round_index, "candidates")

    def selection_data(self, round_index: int) -> str:
        return self.round(round_index, "data")

    def work(self, round_index: int, phase: str) -> str:
        """Where a training phase keeps its resume checkpoints; for a NAT phase interrupted before the rename, its
        `work/nar` folder (so the phase resumes from its last checkpoint, not from update 0)."""
        folder = self.round(round_index, "work", phase)
        legacy = LEGACY_FOLDERS.get(phase)
        if legacy and not os.path.isdir(folder) and os.path.isdir(self.round(round_index, "work", legacy)):
            return self.round(round_index, "work", legacy)
        return folder

    # ----- finished rounds and their metrics ------------------------------------------------------------------------

    def finished_rounds(self) -> list[int]:
        """The rounds whose metrics are written (saved rounds), in order."""
        if not os.path.isdir(self.path):
            return []
        rounds = []
        for name in os.listdir(self.path):
            match = re.fullmatch(r"round-(\d+)", name)
            if match and os.path.isfile(os.path.join(self.path, name, "metrics.json")):
                rounds.append(int(match.group(1)))
        return sorted(rounds)

    def require_finished_rounds(self) -> list[int]:
        rounds = self.finished_rounds()
        if not rounds:
            raise FileNotFoundError(
                f"No finished round (round-<t>/metrics.json) under {self.path}; train first with "
                "examples/train_em.py (or EMTrainer.train) and give its output_dir."
            )
        return rounds

    def metrics(self, round_index: int) -> dict:
        """The saved metrics of a finished round, with today's key names."""
        with open(self.round(round_index, "metrics.json")) as handle:
            return modernize(json.load(handle))

    def all_metrics(self) -> dict[int, dict]:
        return {t: self.metrics(t) for t in self.finished_rounds()}

    def write_metrics(self, round_index: int, metrics: dict) -> None:
        os.makedirs(self.round(round_index), exist_ok=True)
        with open(self.round(round_index, "metrics.json"), "w") as handle:
            json.dump(metrics, handle, indent=1)

    def settings(self) -> dict:
        """The training settings the run recorded (`em/settings` of its first finished round), {} if none."""
        rounds = self.finished_rounds()
        return self.metrics(rounds[0]).get("em/settings", {}) if rounds else {}

    # ----- resume state ---------------------------------------------------------------------------------------------

    def has_state(self) -> bool:
        return os.path.isfile(self.state_file)

    def read_state(self) -> dict:
        """The record of completed phases, with today's names. A file that does not parse raises a `ValueError`
        naming it and the recovery."""
        recovery = (
            f"It records which phases of the EM run in {self.path} are complete. Delete it (or pass "
            "--overwrite_output_dir) to start the run over there."
        )
        return modernize(read_json_state(self.state_file, recovery))

    def write_state(self, state: dict) -> None:
        """Replace the record whole (tmp + rename): a kill leaves the old or the new record."""
        os.makedirs(self.path, exist_ok=True)
        write_json_atomic(self.state_file, state, indent=1)

    # ----- starting over --------------------------------------------------------------------------------------------

    def remove_outputs(self, keep: tuple = ()) -> list[str]:
        """Delete what an EM run writes here (state, rounds, tokenizer, result tables, log), nothing else, so that an
        overwritten run starts truly fresh. Returns the removed paths."""
        removed = []
        for pattern in RUN_OUTPUTS:
            if pattern in keep:
                continue
            for path in sorted(glob.glob(os.path.join(self.path, pattern))):
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                removed.append(path)
        return removed
