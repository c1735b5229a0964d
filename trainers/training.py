"""One accelerate training loop for both EM phases: the AR phase (any `AutoModelForSeq2SeqLM`) and the NAT phase.

Per phase: Adam (0.9, 0.98, eps 1e-9) with inverse-sqrt warm-up (PAPER.md, "The NAR model"), label smoothing,
gradient accumulation, clipping, mixed precision, batches by token budget with length bucketing, validation loss,
steps or epochs, best or last checkpoint or the average of the last k, and resume from the phase's last checkpoint
(`accelerator.save_state`).

Checkpoints are crash-safe: a kill at any instant leaves one complete, self-consistent checkpoint on disk (see
`PhaseTrainer._save_checkpoint` and `PhaseTrainer._load_checkpoint`).
"""

import json
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger

from em_nat.checkpoints import average_checkpoints, save_state_dict
from em_nat.files import fsync_dir, write_json_atomic
from em_nat.logging_setup import get_phase_logger, progress_bar
from em_nat.models import keep_pad_embedding_zero
from em_nat.run_dir import modernize
from em_nat.trainers.candidates import cut_batches, pad_rows
from em_nat.trainers.glancing import glancing_ratio_at

logger = get_logger(__name__)
phase_logger = get_phase_logger()  # one console line per event of a phase (em_nat/logging_setup.py)

STATE_FILE = "phase_state.json"
# A phase's committed checkpoint folder; a new one is written whole as checkpoint.new, swapped in by renames (the
# replaced one passing through checkpoint.old), and folders being deleted are renamed to *.trash first.
CHECKPOINT = "checkpoint"
STAGED, PREVIOUS, TRASH = ".new", ".old", ".trash"


def _fsync_tree(path: str):
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(root)


def _discard(path: str):
    """Delete folder `path`: first renamed to `path.trash`, so that a half-deleted folder never keeps a name that is
    read as a checkpoint."""
    if not os.path.lexists(path):
        return
    trash = path + TRASH
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def swap_in(staged: str, final: str):
    """Replace folder `final` by the complete folder `staged` with two renames (final -> final.old, staged -> final),
    then delete final.old. Until the second rename `final` (or, between the renames, final.old) is the previous
    complete copy; from it on, the new one; the only good copy is never written over."""
    previous = final + PREVIOUS
    _discard(previous)
    if os.path.lexists(final):
        os.replace(final, previous)
    os.replace(staged, final)
    fsync_dir(os.path.dirname(final) or ".")
    _discard(previous)


@dataclass
class PhaseConfig:
    """Training settings of one phase (built by `EMTrainingArguments.phase_config`)."""

    learning_rate: float = 5e-4
    warmup_steps: int = 4000
    max_steps: int = -1
    num_epochs: float = 1.0
    max_tokens: int = 4096
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    label_smoothing: float = 0.1
    weight_decay: float = 0.0
    eval_steps: int = 500
    save_steps: int = 500
    keep: str = "best"  # "best" (lowest validation loss) or "last"
    average_last: int = 1  # > 1: the phase's result is the mean of the weights at its last k save points
    glancing_ratio: tuple[float, float] = (0.0, 0.0)  # NAT only: GLAT ratio at the first and the last update
    seed: int = 0


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def token_budget_batches(examples, max_tokens: int, seed: int, epoch: int, shuffle: bool = True):
    """Indices grouped into batches whose padded size (batch * longest) stays within `max_tokens`.

    Examples are sorted by length inside shuffled buckets of 100 batches' worth, so padding is small; the batch
    order is a function of (seed, epoch) only, which makes resume exact.
    """
    rng = random.Random(seed * 1000003 + epoch)
    order = list(range(len(examples)))
    if shuffle:
        rng.shuffle(order)
    sizes = [max(len(e.input_ids), len(e.labels)) for e in examples]
    bucket = max(1, 100 * max(1, max_tokens // 32))
    batches = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lambda i: sizes[i])
        batches += cut_batches(chunk, sizes, max_tokens=max_tokens)
    if shuffle:
        rng.shuffle(batches)
    return batches


def collate(examples, indices, pad_token_id: int, device=None):
    """Pad a batch: input_ids / attention_mask (batch, src_len), labels (batch, tgt_len) padded with -100."""
    input_ids = pad_rows([examples[i].input_ids for i in indices], pad_token_id)
    labels = pad_rows([examples[i].labels for i in indices], -100)
    batch = {"input_ids": input_ids, "attention_mask": input_ids.ne(pad_token_id).long(), "labels": labels}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def compute_loss(model, batch, label_smoothing: float):
    """Training loss: the NAT's own loss (tokens + weighted length); for an AR, label-smoothed token cross entropy."""
    outputs = model(**batch)
    if getattr(outputs, "length_logits", None) is not None:
        return outputs.loss, {"length_loss": outputs.length_loss.detach()}
    logits = outputs.logits
    loss = F.cross_entropy(
        logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100, label_smoothing=label_smoothing
    )
    return loss, {}


def inverse_sqrt_schedule(optimizer, warmup_steps: int):
    """Linear warm-up to the peak learning rate, then decay with the inverse square root of the step."""
    warmup = max(1, warmup_steps)

    def factor(step: int) -> float:
        step = step + 1
        return min(step / warmup, math.sqrt(warmup / step))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate_loss(model, examples, config: PhaseConfig, accelerator: Accelerator, pad_token_id: int) -> float:
    """Mean validation loss over token-budget batches (no smoothing), averaged over processes."""
    if not examples:
        return float("nan")
    model = accelerator.unwrap_model(model)  # no DDP collectives: processes may hold different numbers of batches
    model.eval()
    batches = token_budget_batches(examples, config.max_tokens, config.seed, 0, shuffle=False)
    mine = batches[accelerator.process_index :: accelerator.num_processes]
    total = torch.zeros(2, device=accelerator.device)
    for indices in mine:
        batch = collate(examples, indices, pad_token_id, accelerator.device)
        with accelerator.autocast():
            loss, _ = compute_loss(model, batch, 0.0)
        total += torch.stack([loss.detach().float() * len(indices), torch.tensor(float(len(indices)))])
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return (total[0] / total[1].clamp(min=1)).item()


class PhaseTrainer:
    """Trains one model on (source, target) id pairs with accelerate; resumable from `output_dir`.

    Args:
        model: the model to train (AR or NAT); returned trained by `train()`.
        train_examples / eval_examples: lists of [`Example`].
        config: [`PhaseConfig`].
        accelerator: the shared `Accelerator`.
        output_dir: where this phase keeps its checkpoints (`checkpoint/`, `best/`) and state.
        pad_token_id: padding id of the tokenizer.
        name: "ar" or "nat", for logs and metric names (`ar/loss`, `nat/loss`).
    """

    def __init__(self, model, train_examples, eval_examples, config, accelerator, output_dir, pad_token_id, name):
        if not train_examples:
            raise ValueError(f"{name} phase: no training examples.")
        self.model, self.config, self.accelerator = model, config, accelerator
        self.train_examples, self.eval_examples = train_examples, eval_examples
        self.output_dir, self.pad_token_id, self.name = output_dir, pad_token_id, name
        self.batches_per_epoch = len(token_budget_batches(train_examples, config.max_tokens, config.seed, 0))
        self.batches_per_epoch = max(1, self.batches_per_epoch // accelerator.num_processes)
        updates_per_epoch = max(1, self.batches_per_epoch // config.gradient_accumulation_steps)
        self.total_steps = (
            config.max_steps if config.max_steps > 0 else max(1, math.ceil(config.num_epochs * updates_per_epoch))
        )

    def _prepare(self):
        # an AR whose decoder starts from a zero <pad> row keeps it zero, so CTranslate2's stock converter is exact
        keep_pad_embedding_zero(self.model)
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim < 2]
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2]
        groups = [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.config.learning_rate, betas=(0.9, 0.98), eps=1e-9)
        self.model, self.optimizer = self.accelerator.prepare(self.model, optimizer)
        # Stepped once per update by this loop (accelerate's wrapper would step it once per process); its state
        # travels in the phase state file.
        self.scheduler = inverse_sqrt_schedule(self.optimizer, self.config.warmup_steps)

    def _save_checkpoint(self, state):
        """Write the resume checkpoint (accelerate state + `phase_state.json`) atomically.

        Layout in `output_dir`: `checkpoint/` is the committed checkpoint; a new one is written whole into
        `checkpoint.new/` (accelerate state, then, after every process is done, `phase_state.json` listing the size
        of every file: the folder's completion mark), then swapped in by renames: `checkpoint/` -> `checkpoint.old/`,
        `checkpoint.new/` -> `checkpoint/`, and `checkpoint.old/` is deleted. A kill at any point leaves one
        complete checkpoint that `_load_checkpoint` finds: during the write, `checkpoint/` (the unfinished
        `checkpoint.new/` is deleted); between the renames, `checkpoint.new/` (complete, so rolled forward).
        """
        final = os.path.join(self.output_dir, CHECKPOINT)
        staged = final + STAGED
        if self.accelerator.is_main_process:
            _discard(staged)  # what a failed earlier write left
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(staged)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            files = {
                os.path.relpath(os.path.join(root, name), staged): os.path.getsize(os.path.join(root, name))
                for root, _, names in os.walk(staged)
                for name in names
            }
            _fsync_tree(staged)
            write_json_atomic(
                os.path.join(staged, STATE_FILE), {**state, "scheduler": self.scheduler.state_dict(), "files": files}
            )
            swap_in(staged, final)
        self.accelerator.wait_for_everyone()

    def _read_checkpoint(self, path):
        """The state in checkpoint folder `path` if it is complete (its `phase_state.json` parses and every file it
        lists is there with its size), else None."""
        try:
            with open(os.path.join(path, STATE_FILE)) as handle:
                state = modernize(json.load(handle))  # a checkpoint from before the rename: 'nar/loss' keys
            if not {"step", "micro_step", "epoch", "position", "scheduler"} <= set(state):
                return None
            files = state.get("files", {})  # none listed: a checkpoint of an earlier version, taken as it is
            sizes = list(files.items())
        except (OSError, ValueError, UnicodeDecodeError, TypeError, AttributeError):
            return None
        for name, size in sizes:
            file = os.path.join(path, name)
            if not os.path.isfile(file) or os.path.getsize(file) != size:
                return None
        return state

    def _load_checkpoint(self):
        """The state to resume from: the first complete checkpoint among `checkpoint/`, `checkpoint.new/` (a kill
        between the two renames of `_save_checkpoint`) and `checkpoint.old/`; that folder becomes `checkpoint/` and
        the others are deleted. With none: a fresh start when no `checkpoint/` exists (a kill before the first
        checkpoint was complete), else a `ValueError` naming the unreadable `checkpoint/` and the recovery (delete
        it to restart this phase), since that folder was not written by `_save_checkpoint` (an older version of
        this code, a damaged disk) and restarting silently would throw away the training it holds.
        """
        final = os.path.join(self.output_dir, CHECKPOINT)
        fresh = {"step": 0, "micro_step": 0, "epoch": 0, "position": 0, "best_loss": None, "history": []}
        chosen, state = None, None
        for path in (final, final + STAGED, final + PREVIOUS):
            state = self._read_checkpoint(path)
            if state is not None:
                chosen = path
                break
        if chosen is None and os.path.lexists(final):
            raise ValueError(
                f"{self.name}: cannot resume from {final}: {os.path.join(final, STATE_FILE)} is missing or unreadable, "
                f"or files it lists are missing, and no other complete checkpoint is in {self.output_dir}. Delete "
                f"{final} to restart the {self.name} phase from its first update (completed EM phases are kept)."
            )
        self.accelerator.wait_for_everyone()  # every process has chosen before the folders are renamed
        if self.accelerator.is_main_process:
            self._tidy_up(chosen)
        self.accelerator.wait_for_everyone()
        if chosen is None:
            return fresh
        try:
            self.accelerator.load_state(final)
        except Exception as error:
            raise ValueError(
                f"{self.name}: cannot load the checkpoint in {final} ({type(error).__name__}: {error}). Delete {final} "
                f"to restart the {self.name} phase from its first update (completed EM phases are kept)."
            ) from error
        state.pop("files", None)
        self.scheduler.load_state_dict(state.pop("scheduler"))
        phase_logger.info(f"{self.name}: resuming at update {state['step']} of {self.total_steps} from {final}")
        return state

    def _tidy_up(self, chosen):
        """Make `chosen` (None: no complete checkpoint) the phase's `checkpoint/` and delete what a killed write left:
        the other checkpoint folders, trash, and unfinished copies of `best/` (whose last complete copy is kept)."""
        final = os.path.join(self.output_dir, CHECKPOINT)
        if chosen is not None and chosen != final:
            logger.warning(f"{self.name}: {final} is incomplete or absent; resuming from the complete {chosen}")
            _discard(final)
            os.replace(chosen, final)
            fsync_dir(self.output_dir)
        for leftover in (final + STAGED, final + PREVIOUS):
            _discard(leftover)
        best = os.path.join(self.output_dir, "best")
        if not os.path.lexists(best) and os.path.isdir(best + PREVIOUS):
            os.replace(best + PREVIOUS, best)  # a kill between the two renames of `swap_in`
        for leftover in (best + STAGED, best + PREVIOUS):
            _discard(leftover)
        for name in (CHECKPOINT, "best"):
            for suffix in ("", STAGED, PREVIOUS):
                shutil.rmtree(os.path.join(self.output_dir, name + suffix + TRASH), ignore_errors=True)

    def _keep_best(self, state, eval_loss):
        if self.config.keep != "best" or math.isnan(eval_loss):
            return
        if state["best_loss"] is None or eval_loss < state["best_loss"]:
            state["best_loss"] = eval_loss
            unwrapped = self.accelerator.unwrap_model(self.model)
            if self.accelerator.is_main_process:
                best = os.path.join(self.output_dir, "best")
                _discard(best + STAGED)
                unwrapped.save_pretrained(best + STAGED)
                swap_in(best + STAGED, best)
            self.accelerator.wait_for_everyone()

    def _batches(self, epoch):
        """This process's batches of an epoch. The epoch is cut to a multiple of processes x accumulation, so that
        N processes and one process accumulating N batches make the same updates."""
        batches = token_budget_batches(self.train_examples, self.config.max_tokens, self.config.seed, epoch)
        group = self.accelerator.num_processes * self.config.gradient_accumulation_steps
        usable = max(len(batches) // group * group, self.accelerator.num_processes)
        return batches[:usable][self.accelerator.process_index :: self.accelerator.num_processes]

    def train(self):
        """Run the phase to `total_steps` updates; returns (model unwrapped, metrics dict)."""
        os.makedirs(self.output_dir, exist_ok=True)
        self._prepare()
        state = self._load_checkpoint()
        self.model.train()
        progress = progress_bar(  # throttled when stderr is not a terminal
            total=self.total_steps,
            initial=state["step"],
            desc=f"train {self.name}",
            disable=not self.accelerator.is_local_main_process,
        )
        running = []
        while state["step"] < self.total_steps:
            batches = self._batches(state["epoch"])
            if not batches:
                raise ValueError(f"{self.name}: fewer batches than processes; use more data or fewer processes.")
            for indices in batches[state["position"] :]:
                state["position"] += 1
                stepped = self._micro_step(indices, state, running)
                progress.update(state["step"] - progress.n)  # update(), unlike refresh(), keeps the throttle
                if stepped and state["step"] >= self.total_steps:
                    break
            else:
                state["epoch"], state["position"] = state["epoch"] + 1, 0
        progress.close()
        return self._finish(state, running)

    @property
    def glancing(self) -> bool:
        return any(ratio > 0 for ratio in self.config.glancing_ratio)

    def _glancing_ratio(self, step: int) -> float:
        """GLAT's ratio at update `step`, annealed linearly over the phase (trainers/glancing.py)."""
        return glancing_ratio_at(step, self.total_steps, *self.config.glancing_ratio)

    def _micro_step(self, indices, state, running) -> bool:
        """Forward/backward one batch; step the optimizer every `gradient_accumulation_steps`. True if it stepped."""
        batch = collate(self.train_examples, indices, self.pad_token_id, self.accelerator.device)
        if self.glancing:
            batch["glancing_ratio"] = self._glancing_ratio(state["step"])
        with self.accelerator.autocast():
            loss, _ = compute_loss(self.model, batch, self.config.label_smoothing)
        self.accelerator.backward(loss / self.config.gradient_accumulation_steps)
        running.append(loss.detach().float().item())
        state["micro_step"] += 1
        if state["micro_step"] % self.config.gradient_accumulation_steps:
            return False
        if self.config.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        state["step"] += 1
        self._after_update(state, running)
        return True

    def _after_update(self, state, running):
        step = state["step"]
        if step % self.config.eval_steps == 0 or step == self.total_steps:
            eval_loss = evaluate_loss(self.model, self.eval_examples, self.config, self.accelerator, self.pad_token_id)
            train_loss = sum(running) / max(1, len(running))
            running.clear()
            entry = {"step": step, f"{self.name}/loss": train_loss, f"{self.name}/eval_loss": eval_loss}
            if self.glancing:
                entry[f"{self.name}/glancing_ratio"] = self._glancing_ratio(step - 1)
            state["history"].append(entry)
            self.accelerator.log({f"{self.name}/loss": train_loss, f"{self.name}/eval_loss": eval_loss}, step=step)
            logger.info(f"{self.name} update {step}: loss {train_loss:.4f} eval_loss {eval_loss:.4f}")
            self._keep_best(state, eval_loss)
        if self._is_snapshot_step(step):
            self._save_snapshot(step)
        if step % self.config.save_steps == 0 and step < self.total_steps:
            self._save_checkpoint(state)

    # ----- averaging of the last k checkpoints ---------------------------------------------------------------------

    def _snapshot_steps(self) -> list[int]:
        """The updates whose weights are averaged: the last `average_last` multiples of `save_steps`, the final update
        standing in for the last one when `total_steps` is not a multiple."""
        k, every, total = self.config.average_last, self.config.save_steps, self.total_steps
        steps = [total] + [s for s in range(total // every * every, 0, -every) if s != total]
        return sorted(steps[:k])

    def _is_snapshot_step(self, step: int) -> bool:
        return self.config.average_last > 1 and step in self._snapshot_steps()

    def _snapshot_path(self, step: int) -> str:
        return os.path.join(self.output_dir, "snapshots", f"step-{step:07d}.pt")

    def _save_snapshot(self, step: int):
        if self.accelerator.is_main_process:
            save_state_dict(self.accelerator.unwrap_model(self.model), self._snapshot_path(step))
        self.accelerator.wait_for_everyone()

    def _average_snapshots(self, model) -> list[int]:
        steps = self._snapshot_steps()
        missing = [s for s in steps if not os.path.isfile(self._snapshot_path(s))]
        if missing:
            raise FileNotFoundError(
                f"{self.name}: the weights of updates {missing} to average are missing from "
                f"{os.path.join(self.output_dir, 'snapshots')}; delete {self.output_dir} to retrain this phase."
            )
        model.load_state_dict(average_checkpoints([self._snapshot_path(s) for s in steps]))
        return steps

    def _finish(self, state, running):
        model = self.accelerator.unwrap_model(self.model)
        best = os.path.join(self.output_dir, "best")
        averaged = {}
        if self.config.average_last > 1:
            steps = self._average_snapshots(model)
            eval_loss = evaluate_loss(model, self.eval_examples, self.config, self.accelerator, self.pad_token_id)
            averaged = {f"{self.name}/averaged_steps": steps, f"{self.name}/eval_loss_averaged": eval_loss}
            logger.info(f"{self.name}: averaged the weights of updates {steps}; eval_loss {eval_loss:.4f}")
        elif self.config.keep == "best" and os.path.isdir(best):
            model.load_state_dict(type(model).from_pretrained(best).state_dict())
        last = state["history"][-1] if state["history"] else {}
        metrics = {
            f"{self.name}/loss": last.get(f"{self.name}/loss"),
            f"{self.name}/eval_loss": state["best_loss"]
            if self.config.keep == "best"
            else last.get(f"{self.name}/eval_loss"),
            f"{self.name}/steps": state["step"],
            f"{self.name}/history": state["history"],
            f"{self.name}/config": asdict(self.config),
            **averaged,
        }
        self.accelerator.free_memory()
        return model, metrics

    def clean_up(self):
        """Remove the phase's resume checkpoints once its result is saved elsewhere."""
        if self.accelerator.is_main_process:
            leftovers = ("", STAGED, PREVIOUS, TRASH, STAGED + TRASH, PREVIOUS + TRASH)  # and what killed writes left
            for sub in (CHECKPOINT, "best"):
                for suffix in leftovers:
                    shutil.rmtree(os.path.join(self.output_dir, sub + suffix), ignore_errors=True)
            shutil.rmtree(os.path.join(self.output_dir, "snapshots"), ignore_errors=True)
        self.accelerator.wait_for_everyone()
