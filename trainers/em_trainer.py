"""`EMTrainer`: the hard-EM loop of Sun & Yang (ICML 2020), PAPER.md "The EM loop", on accelerate.

    AR_0 := AR trained on (X, Y)                   (or the trained AR passed in)
    for t = 1..T:
        C_t   := top-N AR_{t-1} beam hypotheses      generate_candidates
        Y_t   := 1-best of C_t                       (t = 1: sequence-level KD)
        NAT_t := NAT trained on (X, Y_t)             train_nat
        S_t   := argmax_c log p_NAT_t(c | x)         select_targets
        AR_t  := AR trained on (X, S_t)              train_ar
        evaluate, save_round (and push)

Each completed phase is recorded in `output_dir/em_state.json`; re-running the same command resumes after the
last completed phase, and inside a phase from its last checkpoint. Pushes are recorded the same way
(`round-<t>/pushed`): a push that fails leaves the round pending, and a later `train()` or `push()` retries only the
pending rounds. Each phase logs one line to `em_nat.logging_setup.PHASE_LOGGER` (what a script shows on the console)
and records its wall-clock seconds in the round's metrics (`time/<phase>_seconds`: ar, nat, candidates, selection,
evaluate; the time of the process run that completed the phase).
"""

import copy
import hashlib
import json
import math
import time

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import gather_object, set_seed
from datasets import Dataset, load_from_disk

from em_nat.data import tokenize_pairs
from em_nat.evaluation import validation_metrics
from em_nat.hub import HubPushError, push_round
from em_nat.logging_setup import LOG_FILE, format_duration, get_phase_logger
from em_nat.modeling import check_tokenizer_compatible
from em_nat.run_dir import RunDir
from em_nat.trainers.arguments import EMTrainingArguments
from em_nat.trainers.candidates import generate_candidates, score_candidates, select_targets
from em_nat.trainers.training import Example, PhaseTrainer

logger = get_logger(__name__)
phase_logger = get_phase_logger()  # one line per phase, for the console (em_nat/logging_setup.py)


class EMTrainer:
    """Alternate AR and NAT training over EM rounds.

    Args:
        ar_model: any `AutoModelForSeq2SeqLM` on `tokenizer` (randomly initialised, or trained with
            `args.train_initial_ar=False`).
        nat_model: a [`NATForConditionalGeneration`] on the same tokenizer.
        tokenizer: the shared tokenizer.
        train_dataset / eval_dataset: `datasets.Dataset` with a "translation" column holding
            `args.source_lang` and `args.target_lang`; eval may carry a "references" column (multi-reference BLEU).
        args: [`EMTrainingArguments`].
        accelerator: an `Accelerator`; built from `args` when not given.
    """

    def __init__(self, ar_model, nat_model, tokenizer, train_dataset, eval_dataset=None, args=None, accelerator=None):
        if args is None:
            raise ValueError("EMTrainer needs args=EMTrainingArguments(output_dir=...).")
        self.args = args
        self.tokenizer = tokenizer
        self.ar_model, self.nat_model = ar_model, nat_model
        check_models_share_tokenizer(ar_model, nat_model, tokenizer)
        self.train_sources, self.train_targets = tokenize_pairs(train_dataset, tokenizer, args, "train_dataset")
        self.eval_sources, self.eval_targets, self.eval_references = [], [], []
        if eval_dataset is not None:
            self.eval_sources, self.eval_targets = tokenize_pairs(eval_dataset, tokenizer, args, "eval_dataset")
            self.eval_references = _references(eval_dataset, args)
        check_lengths_fit_models(
            ar_model, nat_model, self.train_sources + self.eval_sources, self.train_targets + self.eval_targets
        )
        self.accelerator = accelerator or make_accelerator(args)
        self.run = RunDir(args.output_dir)
        self._check_output_dir()
        if args.overwrite_output_dir and self.accelerator.is_main_process:
            # start truly fresh, but keep the caller's tokenizer and the log file its script is writing
            self.run.remove_outputs(keep=("tokenizer", LOG_FILE))
        self.accelerator.wait_for_everyone()
        set_seed(args.seed)
        self.initial_ar, self.initial_nat = copy.deepcopy(ar_model).cpu(), copy.deepcopy(nat_model).cpu()
        self.state = self._load_state()
        self.pending_pushes = {}

    # ----- set-up checks ------------------------------------------------------------------------------------------

    def _check_output_dir(self):
        """Refuse to resume a run folder that holds another run: its fingerprint (settings, data content, tokenizer,
        model configs) must equal this one's. The message names the first entry that differs."""
        if not self.run.has_state() or self.args.overwrite_output_dir:
            return
        saved = self.run.read_state()["fingerprint"]
        current = json.loads(json.dumps(self._fingerprint()))
        unknown = [key for key in current if key not in saved]
        if unknown:  # a run folder from before these entries were recorded: what it recorded is compared
            logger.warning(f"{self.args.output_dir} records no {unknown} (an older run folder); not compared.")
        for key in [k for k in current if k in saved] + [k for k in saved if k not in current]:
            if saved.get(key) != current.get(key):
                raise ValueError(
                    f"{self.args.output_dir} holds a different EM run: {key} differs (saved "
                    f"{_short(saved.get(key))}, now {_short(current.get(key))}). Use a new output_dir to start "
                    "another run, or --overwrite_output_dir to start this one over there."
                )

    def _fingerprint(self):
        """Everything that changes a run's results: the settings, the tokenized data, the tokenizer, both model
        configs."""
        return {
            **self.args.run_fingerprint(),
            "num_train": len(self.train_sources),
            "ar_model": type(self.ar_model).__name__,
            "train_data": _digest([self.train_sources, self.train_targets]),
            "eval_data": _digest([self.eval_sources, self.eval_targets]),
            "tokenizer": _digest(sorted(self.tokenizer.get_vocab().items())),
            "ar_config": _config_fingerprint(self.ar_model),
            "nat_config": _config_fingerprint(self.nat_model),
            **({} if self.args.train_initial_ar else {"initial_ar": initial_ar_identity(self.ar_model)}),
        }

    def _load_state(self):
        """The run's record of completed phases. It is only ever replaced whole (`_complete`), so a kill leaves the
        old or the new record; a file that still does not parse (damaged disk, edited by hand) raises a
        `ValueError` naming it and the recovery (delete it, or --overwrite_output_dir, to start the run over)."""
        if self.run.has_state() and not self.args.overwrite_output_dir:
            return self.run.read_state()
        return {"fingerprint": json.loads(json.dumps(self._fingerprint())), "completed": [], "metrics": {}}

    def _done(self, phase: str) -> bool:
        return phase in self.state["completed"]

    def _complete(self, phase: str, metrics: dict | None = None):
        self._record(phase, metrics)
        self.accelerator.wait_for_everyone()

    def _record(self, phase: str, metrics: dict | None = None):
        """Add `phase` to this process's record; the main process writes the record to disk (no collective)."""
        self.state["completed"].append(phase)
        if metrics:
            self.state["metrics"].setdefault(phase.split("/")[0], {}).update(metrics)
        if self.accelerator.is_main_process:
            self.run.write_state(self.state)  # tmp + rename

    # ----- the loop -----------------------------------------------------------------------------------------------

    def train(self, push: bool = True) -> dict:
        """Run round 0 (AR_0 and the raw-data NAT) and `num_rounds` EM rounds; returns the metrics of every round.

        Args:
            push: with `args.push_to_hub`, push each round once it is saved, try the failed pushes once more at the
                end and raise `HubPushError` if any is still pending (every round is saved locally by then).
                False leaves all pushes to `push()`, for a caller with local work to finish first
                (examples/train_em.py writes its results, test scores and model card, then pushes).
        """
        args = self.args
        if self.state["completed"]:
            done = self.state["completed"]
            phase_logger.info(f"resuming {args.output_dir}: {len(done)} phases already complete (last: {done[-1]})")
        if args.report_to != "none":
            self.accelerator.init_trackers("em_nat", config=args.to_dict())
        ar = self.train_ar(0, self.train_targets)
        nat = self.train_nat(0, self.train_targets) if args.train_raw_nat else None
        self.evaluate(0, ar, nat, self.train_targets)
        self.save_round(0, push=push)
        selection = None
        for t in range(1, args.num_rounds + 1):
            candidates = self.generate_candidates(t, ar)
            one_best = [c[0] for c in candidates["candidate_ids"]]
            nat_targets = one_best if (args.nat_targets == "one_best" or selection is None) else selection
            nat = self.train_nat(t, nat_targets)
            if self._selection_needed(t):
                selection = self.select_targets(t, nat, candidates, nat_targets)
            ar = self.train_ar(t, selection)
            self.evaluate(t, ar, nat, nat_targets)
            self.save_round(t, push=push)
        if args.report_to != "none":
            self.accelerator.end_training()
        if push and args.push_to_hub:
            for t in sorted(self.pending_pushes):  # one more try for pushes that failed during the run
                self.push_round(t)
            self._raise_if_pending()
        return self.state["metrics"]

    def _selection_needed(self, round_index: int) -> bool:
        """S_t feeds AR_t and the next round; the last round's S_t feeds nothing when its AR is not trained."""
        if round_index < self.args.num_rounds or self.args.train_final_ar:
            return True
        phase_logger.info(f"round {round_index}: selection skipped (train_final_ar false: no AR or NAT would use it)")
        return False

    def _phase_model(self, name, round_index):
        """The model a phase starts from: initial weights (restart, or round 0) or the previous round's."""
        initial = self.initial_ar if name == "ar" else self.initial_nat
        if self.args.restarts(name) or round_index == 0:
            return copy.deepcopy(initial)
        return type(initial).from_pretrained(self.run.model(round_index - 1, name))

    def _train_phase(self, name, round_index, targets):
        phase = f"round-{round_index}/{name}"
        folder = self.run.model(round_index, name)
        model_class = type(self.initial_ar if name == "ar" else self.initial_nat)
        if self._done(phase):
            logger.info(f"{phase}: complete, loaded from {folder}")
            return model_class.from_pretrained(folder)
        started = time.perf_counter()
        final_ar = name == "ar" and round_index == self.args.num_rounds and not self.args.train_final_ar
        if name == "ar" and round_index == 0 and not self.args.train_initial_ar:
            model = copy.deepcopy(self.initial_ar)
            metrics = {"ar/trained": False, "em/initial_ar": initial_ar_identity(model)}
            phase_logger.info("round 0: AR given, not trained (train_initial_ar false)")
        elif final_ar:
            model, metrics = model_class.from_pretrained(self.run.model(round_index - 1, "ar")), {"ar/trained": False}
            phase_logger.info(f"round {round_index}: AR of round {round_index - 1} kept (train_final_ar false)")
        else:
            trainer = PhaseTrainer(
                self._phase_model(name, round_index),
                [Example(s, t) for s, t in zip(self.train_sources, targets)],
                [Example(s, t) for s, t in zip(self.eval_sources, self.eval_targets)],
                self.args.phase_config(name, continued=round_index > 0 and not self.args.restarts(name)),
                self.accelerator,
                self.run.work(round_index, name),
                self.tokenizer.pad_token_id,
                name,
            )
            model, metrics = trainer.train()
            loss = metrics.get(f"{name}/eval_loss")
            valid = f", valid loss {loss:.3f}" if isinstance(loss, float) and not math.isnan(loss) else ""
            phase_logger.info(
                f"round {round_index}: {'AR' if name == 'ar' else 'NAT'} trained {metrics[f'{name}/steps']} updates "
                f"in {format_duration(time.perf_counter() - started)}{valid}"
            )
        self._save_model(model, folder)
        metrics[f"time/{name}_seconds"] = round(time.perf_counter() - started, 1)
        self._complete(phase, metrics)
        if metrics.get("ar/trained", True):
            trainer.clean_up()  # the phase's resume checkpoints are no longer needed
        return model

    def train_ar(self, round_index: int, targets: list[list[int]]):
        """AR phase: AR_0 on the real targets, AR_t on the NAT's selection S_t."""
        return self._train_phase("ar", round_index, targets)

    def train_nat(self, round_index: int, targets: list[list[int]]):
        """NAT phase: on the raw targets (round 0), the AR 1-best Y_t, or the previous selection."""
        return self._train_phase("nat", round_index, targets)

    def _save_model(self, model, folder):
        # the direction it translates, read back by `--ar_model` checks (em_nat.train_cli) and by readers
        model.config.source_lang, model.config.target_lang = self.args.source_lang, self.args.target_lang
        if self.accelerator.is_main_process:
            model.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
        self.accelerator.wait_for_everyone()

    def generate_candidates(self, round_index: int, ar) -> dict:
        """C_t: the AR's top-N beam hypotheses for every training source (saved as a `datasets` folder)."""
        phase = f"round-{round_index}/candidates"
        folder = self.run.candidates(round_index)
        started = time.perf_counter()
        if not self._done(phase):
            ids, scores = generate_candidates(
                ar.to(self.accelerator.device),
                self.tokenizer,
                self.train_sources,
                self.args.candidate_settings(),
                self.accelerator,
            )
            if self.accelerator.is_main_process:
                Dataset.from_dict({"candidate_ids": ids, "ar_scores": scores}).save_to_disk(folder)
            self.accelerator.wait_for_everyone()
            self._complete(phase, {"time/candidates_seconds": round(time.perf_counter() - started, 1)})
            phase_logger.info(
                f"round {round_index}: {self.args.num_candidates} AR candidates for each of {len(ids)} sources in "
                f"{format_duration(time.perf_counter() - started)}"
            )
        return load_from_disk(folder).to_dict()

    def select_targets(self, round_index: int, nat, candidates: dict, nat_targets) -> list[list[int]]:
        """S_t: per source, the candidate with the highest NAT log-likelihood; saves the round's data."""
        phase = f"round-{round_index}/selection"
        folder = self.run.selection_data(round_index)
        if not self._done(phase):
            started = time.perf_counter()
            ids = candidates["candidate_ids"]
            scores = score_candidates(
                nat.to(self.accelerator.device),
                self.train_sources,
                ids,
                self.accelerator,
                self.tokenizer.pad_token_id,
                self.args.generation_max_sentences,
            )
            chosen = select_targets(scores)
            decode = lambda rows: self.tokenizer.batch_decode(rows, skip_special_tokens=True)  # noqa: E731
            table = {
                "source": decode(self.train_sources),
                "reference": decode(self.train_targets),
                "candidates": [decode(c) for c in ids],
                "candidate_ids": ids,
                "ar_scores": candidates["ar_scores"],
                "nat_scores": scores,
                "one_best": decode([c[0] for c in ids]),
                "nat_target": decode(nat_targets),
                "nat_target_ids": nat_targets,
                "selection": chosen,
                "selected": decode([c[k] for c, k in zip(ids, chosen)]),
                "selected_ids": [c[k] for c, k in zip(ids, chosen)],
            }
            if self.accelerator.is_main_process:
                Dataset.from_dict(table).save_to_disk(folder)
            self.accelerator.wait_for_everyone()
            changed = sum(1 for k in chosen if k != 0) / len(chosen)
            seconds = round(time.perf_counter() - started, 1)
            self._complete(phase, {"em/selection_differs_from_1best": changed, "time/selection_seconds": seconds})
            phase_logger.info(
                f"round {round_index}: NAT selected its targets among the candidates in "
                f"{format_duration(time.perf_counter() - started)}; {100 * changed:.1f}% differ from the AR 1-best"
            )
        return list(load_from_disk(folder)["selected_ids"])  # a list: a datasets Column breaks batch_decode

    # ----- evaluation and saving ----------------------------------------------------------------------------------

    def evaluate(self, round_index: int, ar, nat, nat_train_targets) -> dict:
        """BLEU (sacreBLEU, signature kept) of the AR (beam) and the NAT (argmax, ODD) on valid; CM of the NAT's
        training targets and of the valid references; repeated-token rate of the NAT outputs."""
        phase = f"round-{round_index}/eval"
        if self._done(phase):
            return self.state["metrics"][f"round-{round_index}"]
        started = time.perf_counter()
        sources, references = self._eval_slice()
        metrics = {"em/round": round_index, "em/settings": self.args.run_fingerprint()}
        metrics.update(
            validation_metrics(
                ar,
                nat,
                self.tokenizer,
                self.accelerator,
                self.args,
                sources,
                references,
                self._eval_slice_targets(),
                self.train_sources,
                nat_train_targets,
            )
        )
        flat = {k: (v["score"] if isinstance(v, dict) and "score" in v else v) for k, v in metrics.items()}
        self.accelerator.log({k: v for k, v in flat.items() if isinstance(v, (int, float))}, step=round_index)
        metrics["time/evaluate_seconds"] = round(time.perf_counter() - started, 1)
        self._complete(phase, metrics)
        phase_logger.info(
            f"round {round_index}: evaluated in {format_duration(time.perf_counter() - started)}: "
            + _evaluation_summary(flat, self.args.eval_num_beams)
        )
        return self.state["metrics"][f"round-{round_index}"]

    def _eval_slice(self):
        limit = self.args.eval_max_samples
        n = len(self.eval_sources) if limit < 0 else min(limit, len(self.eval_sources))
        return self.eval_sources[:n], self.eval_references[:n]

    def _eval_slice_targets(self):
        return self.eval_targets[: len(self._eval_slice()[0])]

    def save_round(self, round_index: int, push: bool = True):
        """Write the round's metrics JSON (models and data are saved by their phases), then push when asked
        (`args.push_to_hub` and `push`)."""
        phase = f"round-{round_index}/saved"
        if not self._done(phase):
            metrics = self.state["metrics"].get(f"round-{round_index}", {})
            if self.accelerator.is_main_process:
                self.run.write_metrics(round_index, metrics)
            self.accelerator.wait_for_everyone()
            self._complete(phase)
            logger.info(f"round {round_index}: saved under {self.run.round(round_index)}")
        if self.args.push_to_hub and push:
            self.push_round(round_index)

    # ----- Hub pushes: after the local work, never instead of it ---------------------------------------------------

    def push_round(self, round_index: int) -> bool:
        """Push the round to the Hub, during `train()`: called on every process, the main one pushes. A push that
        still fails after its retries is logged and left pending, training goes on, and `train()` reports every
        pending round at the end; local files stay."""
        if self._done(f"round-{round_index}/pushed"):
            return True
        error = self._push(round_index) if self.accelerator.is_main_process else None
        failed = gather_object([error]) if self.accelerator.num_processes > 1 else [error]
        if any(failed):
            self.pending_pushes[round_index] = next(e for e in failed if e)
            return False
        self.pending_pushes.pop(round_index, None)
        self._complete(f"round-{round_index}/pushed")
        return True

    def push(self, test_result: dict | None = None, example: str | None = None) -> None:
        """Push every saved round that the Hub does not have yet (`round-<t>/pushed` not recorded), oldest first, each
        with its retries; then raise `HubPushError` naming the rounds still pending. A re-run therefore pushes only
        what an earlier run could not.

        Only the main process pushes, with no collective operation: call it once the run's local work is done, on
        every process or on the main one only (the others return at once).

        Args:
            test_result: the run's test-set evaluation (`em_nat.evaluation.evaluate_run`), shown in the NAT
                model cards.
            example: the source sentence of the model cards' usage snippet.
        """
        if self.accelerator.is_main_process:
            saved = sorted(
                int(p.split("/")[0][len("round-") :]) for p in self.state["completed"] if p.endswith("/saved")
            )
            for t in saved:
                if self._done(f"round-{t}/pushed"):
                    continue
                error = self._push(t, test_result, example)
                if error:
                    self.pending_pushes[t] = error
                else:
                    self.pending_pushes.pop(t, None)
                    self._record(f"round-{t}/pushed")
        self._raise_if_pending()

    def _push(self, round_index: int, test_result=None, example=None) -> str | None:
        """Push one round (main process); returns the error message of a push that failed after its retries."""
        try:
            pushed = push_round(
                self.run,
                round_index,
                self.args,
                self.state["metrics"].get(f"round-{round_index}", {}),
                test_result=test_result,
                example=example,
            )
        except HubPushError as failure:
            logger.error(str(failure))
            return str(failure)
        repos = [self.args.hub_model_id] + ([self.args.hub_ar_model_id] if "ar" in pushed else [])
        phase_logger.info(f"round {round_index}: pushed to {', '.join(repos)} (branch round-{round_index})")
        return None

    def _raise_if_pending(self):
        if self.pending_pushes:
            rounds = sorted(self.pending_pushes)
            raise HubPushError(
                f"Every local output is written under {self.args.output_dir}, but rounds {rounds} could not be "
                f"pushed. Run the same command again to push only these rounds (nothing is trained again). Last "
                f"error: {self.pending_pushes[rounds[-1]]}"
            )


def make_accelerator(args: EMTrainingArguments) -> Accelerator:
    """The run's `Accelerator`. Without an accelerator device it is built with `cpu=True`, which is what lets
    accelerate see several CPU processes started by `torch.distributed.run` (it ignores them otherwise)."""
    return Accelerator(
        cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=args.output_dir,
    )


def check_models_share_tokenizer(ar_model, nat_model, tokenizer):
    """The AR and the NAT must read and write the same ids: same vocabulary size and special tokens as the
    tokenizer (one joint vocabulary, PAPER.md)."""
    check_tokenizer_compatible(tokenizer, nat_model.config)
    check_tokenizer_compatible(tokenizer, ar_model.config)
    ar_vocab = ar_model.get_input_embeddings().num_embeddings
    if ar_vocab != nat_model.config.vocab_size:
        raise ValueError(
            f"The AR has {ar_vocab} embeddings but the NAT has vocab_size {nat_model.config.vocab_size}: they must "
            "share one tokenizer. Build both on it (em_nat.build_ar_model / build_nat_model), or load the AR's "
            "tokenizer and build the NAT from that."
        )


def check_lengths_fit_models(ar_model, nat_model, sources, targets):
    """The tokenized sequences (already truncated to `max_source_length` / `max_target_length`) must fit both models'
    position embeddings; a longer one would fail deep inside the model at its first step (an `IndexError` in
    Marian) rather than here."""
    longest = {"max_source_length": max(map(len, sources)), "max_target_length": max(map(len, targets))}
    for who, model in (("AR", ar_model), ("NAT", nat_model)):
        positions = getattr(model.config, "max_position_embeddings", None)
        for option, length in longest.items():
            if positions is not None and length > positions:
                raise ValueError(
                    f"The data has {'sources' if option == 'max_source_length' else 'targets'} of {length} tokens "
                    f"after truncation to {option}, but the {who}'s max_position_embeddings is {positions}: it could "
                    f"not embed them. Set {option} to at most {positions}."
                )


def _digest(value) -> str:
    """A short SHA-256 of a JSON-able value (token ids, a vocabulary)."""
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()[:16]


def initial_ar_identity(model) -> dict:
    """Which AR_0 a run started from: where it was loaded from and a SHA-256 of its weights (all parameters and
    buffers, in name order), so two runs can be told to share a teacher or not."""
    hasher = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        hasher.update(name.encode())
        hasher.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return {"name_or_path": getattr(model, "name_or_path", "") or "", "weights_sha256": hasher.hexdigest()[:16]}


# config entries that name or locate a model rather than shape it
_CONFIG_BOOKKEEPING = {"transformers_version", "architectures", "auto_map", "custom_pipelines", "dtype", "torch_dtype"}


def _config_fingerprint(model) -> dict:
    return {
        key: value
        for key, value in sorted(model.config.to_diff_dict().items())
        if key not in _CONFIG_BOOKKEEPING and not key.startswith("_")
    }


def _short(value, limit: int = 120) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _evaluation_summary(flat: dict, num_beams: int) -> str:
    """One line of a round's validation results: BLEU of the AR and the NAT, CM of the NAT's training targets."""
    parts = []
    if "eval/bleu_ar_beam" in flat:
        parts.append(f"BLEU AR beam {num_beams} {flat['eval/bleu_ar_beam']:.2f}")
    if "eval/bleu_nat_odd" in flat:
        parts.append(f"NAT ODD {flat['eval/bleu_nat_odd']:.2f}, argmax {flat['eval/bleu_nat_argmax']:.2f}")
    if "em/cm" in flat:
        parts.append(f"CM of the NAT targets {flat['em/cm']:.3f}")
    return "; ".join(parts) or "no validation data"


def _references(dataset, args) -> list:
    """Per eval example, its references: the "references" column when present (multi-reference), else the target."""
    if "references" in dataset.column_names:
        return [list(refs) for refs in dataset["references"]]
    return [pair[args.target_lang].strip() for pair in dataset["translation"]]
