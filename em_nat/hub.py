"""Model cards and Hub pushes of EM rounds.

Each round's NAT (and the AR when asked) goes to its repo's `main` branch, and a branch `round-<t>` is created at
that commit, so every round stays loadable with `from_pretrained(repo, revision="round-<t>")`. A failing Hub is
retried with back-off and then reported; local checkpoints are never touched by a push.
"""

import logging
import os
import time
from collections.abc import Callable

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers import GenerationConfig

from em_nat.rendering import model_card_test_section
from em_nat.run_dir import RunDir

logger = logging.getLogger(__name__)

CARD_TEMPLATE = """---
{card_data}
---

# {title}

{summary}

## EM round

| | |
|---|---|
| EM round | {round_index} of {num_rounds} |
| training targets | {targets} |
| AR partner | `{ar_partner}` |
| corpus multi-modality (CM) of the training targets | {cm} |
| selections differing from the AR 1-best | {changed} |

## Results on the validation data

{results}
{test_results}
## Decoding settings (generation_config.json)

{decoding}

## Usage

```python
import em_nat  # registers the model; or pass trust_remote_code=True without installing em-nat
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

tokenizer = AutoTokenizer.from_pretrained("{repo_id}", revision="{revision}")
model = AutoModelForSeq2SeqLM.from_pretrained("{repo_id}", revision="{revision}")
inputs = tokenizer(["{example}"], return_tensors="pt")
print(tokenizer.batch_decode(model.generate(**inputs), skip_special_tokens=True))

translator = pipeline("translation", model="{repo_id}", revision="{revision}")
print(translator("{example}"))
```

## Training

Trained with the em-nat package's `EMTrainer` (Sun & Yang, ICML 2020, "An EM Approach to
Non-autoregressive Conditional Sequence Generation"). Settings of this run:

```json
{settings}
```
"""


def _score(metrics: dict, key: str):
    value = metrics.get(key)
    return value if isinstance(value, dict) and "score" in value else None


def build_model_card(
    round_index: int,
    args,
    metrics: dict,
    repo_id: str,
    kind: str = "nat",
    test_result: dict | None = None,
    example: str = "a source sentence",
    folder: str | None = None,
) -> ModelCard:
    """The model card of one round's NAT (`kind="nat"`) or AR (`kind="ar"`).

    Args:
        round_index: the EM round (0 = trained on the raw data).
        args: the run's `EMTrainingArguments`.
        metrics: the round's metrics (BLEU entries are `{"score", "signature"}` dicts).
        repo_id: the Hub repo the card is pushed to.
        test_result: the run's test-set evaluation (`em_nat.evaluation.evaluate_run`); a NAT card then lists this round's
            rows and the AR's, and its model-index holds the test BLEU of each NAT decoding.
        example: the source sentence of the usage snippet.
        folder: the saved model the card describes; its `generation_config.json` gives the decoding section.
            Defaults to the run folder's (`RunDir(args.output_dir).model(round_index, kind)`).
    """
    import json

    if folder is None:
        folder = RunDir(args.output_dir).model(round_index, kind)

    src, tgt = args.source_lang, args.target_lang
    bleu_key = "eval/bleu_nat_odd" if kind == "nat" else "eval/bleu_ar_beam"
    dataset = args.hub_dataset_name or "custom"
    bleu_result = lambda split, name, bleu: EvalResult(  # noqa: E731  (one sacreBLEU entry of the model-index)
        task_type="translation",
        task_name=f"Translation {src}-{tgt}",
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_split=split,
        metric_type="bleu",
        metric_value=bleu["score"],
        metric_name=f"sacreBLEU ({name})",
        metric_args={"signature": bleu["signature"]},
    )
    eval_results = []
    bleu = _score(metrics, bleu_key)
    if bleu is not None:
        eval_results.append(bleu_result("validation", "ODD" if kind == "nat" else f"beam {args.eval_num_beams}", bleu))
    test_rows = (
        [r for r in test_result["rows"] if r["round"] is None or r["round"] == round_index]
        if kind == "nat" and test_result
        else []
    )
    eval_results += [bleu_result("test", r["decoding"], r["bleu"]) for r in test_rows if r["round"] == round_index]
    card_data = ModelCardData(
        language=[src, tgt],
        license=args.hub_license,
        library_name="transformers",
        pipeline_tag="translation",
        tags=[
            "em-nat",
            "translation",
            "non-autoregressive" if kind == "nat" else "autoregressive",
            f"em-round-{round_index}",
        ],
        datasets=[dataset] if args.hub_dataset_name else None,
        model_name=repo_id,
        eval_results=eval_results or None,
    )
    rows = ["| model | decoding | sacreBLEU | signature |", "|---|---|---|---|"]
    for key, label in (
        ("eval/bleu_ar_beam", f"AR, beam {args.eval_num_beams}"),
        ("eval/bleu_nat_argmax", "NAT, argmax"),
        ("eval/bleu_nat_odd", "NAT, ODD"),
    ):
        score = _score(metrics, key)
        if score is not None:
            rows.append(
                f"| {label.split(',')[0]} | {label.split(', ')[1]} | {score['score']:.2f} | `{score['signature']}` |"
            )
    targets = _training_targets(round_index, args.nat_targets)
    if kind == "nat":
        targets += _glancing_note(getattr(args, "nat_glancing_ratio", "0"))
    cm = metrics.get("em/cm")
    changed = metrics.get("em/selection_differs_from_1best")
    title = f"em-nat {'NAT' if kind == 'nat' else 'AR partner'} {src}->{tgt}, EM round {round_index}"
    summary = (
        "A non-autoregressive transformer: it predicts the target length, then every token in one parallel pass."
        if kind == "nat"
        else "The autoregressive partner of the em-nat NAT at this EM round."
    )
    text = CARD_TEMPLATE.format(
        card_data=card_data.to_yaml(),
        title=title,
        summary=summary,
        round_index=round_index,
        num_rounds=args.num_rounds,
        targets=targets,
        ar_partner=args.hub_ar_model_id or "not pushed",
        cm=f"{cm:.3f}" if isinstance(cm, (int, float)) else "n/a",
        changed=_selection_note(changed, round_index),
        results="\n".join(rows) if len(rows) > 2 else "No validation data was given.",
        decoding=_decoding_section(folder, kind, args.eval_num_beams),
        repo_id=repo_id,
        revision=f"round-{round_index}",
        test_results=model_card_test_section(test_result, round_index) if test_rows else "",
        example=example.replace("\\", "\\\\").replace('"', '\\"'),
        settings=json.dumps(args.to_dict(), indent=1, default=str),
    )
    return ModelCard(text)


# The NAT's decoding knobs (`NAT_GENERATION_DEFAULTS` of modeling_nat.py), in the order the card lists them.
NAT_DECODING_KNOBS = {
    "length_beam": "length candidates decoded around the predicted length (1: the predicted length only)",
    "odd": "ODD, optimal de-duplicated decoding (False: argmax at every position)",
    "odd_top_k": "tokens per position that ODD chooses among",
    "rescore_alpha": "GNMT length-penalty alpha of AR rescoring (used with `rescorer=<AR>` and `length_beam > 1`)",
    "rescore_top_k": "length candidates passed to the rescorer, the best by the NAT's own score (None: all)",
}
AR_DECODING_KNOBS = {
    "num_beams": "beams of `generate()` (1: greedy search)",
    "max_length": "cap on the generated length",
    "length_penalty": "beam-search length penalty",
}


def _decoding_section(folder: str, kind: str, eval_num_beams: int) -> str:
    """The card's decoding section, rendered from the `generation_config.json` saved in `folder`: the defaults that
    `generate()` and the pipeline really use when the model is loaded from the repo."""
    from em_nat.modeling.modeling_nat import NAT_GENERATION_DEFAULTS

    path = os.path.join(folder, "generation_config.json")
    if os.path.isfile(path):
        config = GenerationConfig.from_pretrained(folder)
        source = "saved in this repo's `generation_config.json`"
    else:  # loading rebuilds the defaults: the NAT's knobs (modeling_nat.py) or transformers' for the AR
        config = GenerationConfig()
        source = "built in (this repo has no `generation_config.json`)"
    knobs = NAT_DECODING_KNOBS if kind == "nat" else AR_DECODING_KNOBS
    lines = [
        f"Defaults of `model.generate()` and the translation pipeline, {source}; any of them can be overridden per "
        "call (`model.generate(**inputs, name=value)`).",
        "",
        "| setting | default | meaning |",
        "|---|---|---|",
    ]
    global_defaults = getattr(GenerationConfig, "_get_default_generation_params", dict)()  # what AR generate() uses
    for name, meaning in knobs.items():
        value = getattr(config, name, None)
        if value is not None:
            shown = f"`{value!r}`"
        elif kind == "nat":  # an unset knob: the NAT's generate() uses its built-in default
            shown = f"`{NAT_GENERATION_DEFAULTS[name]!r}`"
        else:  # an unset knob: transformers' generate() uses its global default
            shown = f"`{global_defaults.get(name)!r}` (transformers' default)"
        lines.append(f"| `{name}` | {shown} | {meaning} |")
    lines.append("")
    if kind == "nat":
        lines.append(
            "The validation BLEU above is measured with `length_beam=1` and `odd=False` (argmax) or `odd=True` "
            "(ODD), whatever these defaults are. For AR rescoring pass the AR partner, e.g. "
            "`model.generate(**inputs, length_beam=9, rescorer=ar_model)`."
        )
    else:
        lines.append(f"The validation BLEU above uses beam search with `num_beams={eval_num_beams}`.")
    return "\n".join(lines)


def _glancing_note(value) -> str:
    """How the NAT was trained on its targets: vanilla, or glancing with its ratio schedule."""
    from em_nat.trainers.glancing import parse_glancing_ratio

    start, end = parse_glancing_ratio(value)
    if start == end == 0:
        return ", vanilla NAT training"
    schedule = f"{start:g}" if start == end else f"{start:g} falling linearly to {end:g} over the phase"
    return f", glancing training (GLAT), ratio {schedule}"


def _selection_note(changed, round_index: int) -> str:
    if isinstance(changed, (int, float)):
        return f"{100 * changed:.1f}%"
    if round_index == 0:
        return "none (round 0 trains on the real targets)"
    return "no selection this round (the last round's AR was not trained: train_final_ar false)"


def _training_targets(round_index: int, nat_targets: str) -> str:
    """What the round's NAT was trained on (PAPER.md, "The EM loop")."""
    if round_index == 0:
        return "the real targets"
    if round_index == 1:
        return "AR_0 1-best (sequence-level KD)"
    if nat_targets == "one_best":
        return f"1-best of AR_{round_index - 1}, the AR trained on the NAT's round-{round_index - 1} selection (EM)"
    return f"the NAT's round-{round_index - 1} selection (EM)"


def write_model_card(run_dir, args, test_result: dict | None = None, example: str = "a source sentence") -> str:
    """Write the last round's NAT model card (the card a push uploads), with the run's test results when given, as
    `round-<T>/nat/README.md`; returns its path."""
    run = RunDir(run_dir)
    last = args.num_rounds
    repo_id = args.hub_model_id or f"em-nat-{os.path.basename(os.path.normpath(run.path))}"
    card = build_model_card(
        last, args, run.metrics(last), repo_id, kind="nat", test_result=test_result, example=example
    )
    path = os.path.join(run.model(last, "nat"), "README.md")
    card.save(path)
    return path


PUSH_ATTEMPTS = 4
PUSH_BACKOFF_SECONDS = 2.0  # doubled after each failed attempt


def backoff_delays(max_attempts: int | None = None, backoff: float | None = None) -> list[float]:
    """The waits of a push between its failed attempts: `backoff`, then doubled after each failure (2, 4, 8 s with
    the defaults); one fewer than `max_attempts`, since nothing is awaited after the last attempt."""
    max_attempts = PUSH_ATTEMPTS if max_attempts is None else max_attempts
    backoff = PUSH_BACKOFF_SECONDS if backoff is None else backoff
    return [backoff * 2**i for i in range(max_attempts - 1)]


def wait(seconds: float) -> None:
    """The default back-off wait of `push_folder` and `push_round` (`time.sleep`). Pass `sleep=` to them to use
    another clock, e.g. a fake one in tests: `push_folder(..., sleep=clock.sleep)`."""
    time.sleep(seconds)


def push_folder(
    folder: str,
    repo_id: str,
    round_index: int,
    card: ModelCard,
    token=None,
    private=False,
    max_attempts: int | None = None,
    backoff: float | None = None,
    sleep: Callable[[float], object] | None = None,
) -> str:
    """Upload `folder` with `card` as README.md to `repo_id` (main), then branch `round-<t>` at that commit.

    A failed attempt (an HTTP or transport error anywhere in the push) is retried from the start after the next
    wait of `backoff_delays(max_attempts, backoff)`; files already committed are not committed twice, since the
    client skips files whose content the repo holds.

    Args:
        max_attempts: attempts in all (default `PUSH_ATTEMPTS`, 4).
        backoff: the first wait in seconds, doubled after each failure (default `PUSH_BACKOFF_SECONDS`, 2.0).
        sleep: called with each wait in seconds (default `wait`, i.e. `time.sleep`).
    Returns:
        the commit id. Raises `HubPushError` after `max_attempts` failed attempts (local files are untouched).
    """
    max_attempts = PUSH_ATTEMPTS if max_attempts is None else max_attempts
    delays = backoff_delays(max_attempts, backoff)
    sleep = wait if sleep is None else sleep
    api = HfApi(token=token)
    branch = f"round-{round_index}"
    last_error = None
    for attempt in range(1, max_attempts + 1):
        try:
            api.create_repo(repo_id, exist_ok=True, private=private)
            commit = api.upload_folder(
                folder_path=folder,
                repo_id=repo_id,
                commit_message=f"EM round {round_index}",
                ignore_patterns=["README.md"],
            )
            api.upload_file(
                path_or_fileobj=str(card).encode(),
                path_in_repo="README.md",
                repo_id=repo_id,
                commit_message=f"Model card, EM round {round_index}",
            )
            head = api.list_repo_refs(repo_id).branches
            oid = next(b.target_commit for b in head if b.name == "main")
            api.create_branch(repo_id, branch=branch, revision=oid, exist_ok=True)
            logger.info(f"Pushed {folder} to {repo_id} (main and branch {branch}): {commit.commit_url}")
            return oid
        except Exception as error:  # noqa: BLE001 (HTTP errors, and transport errors whose class depends on the HTTP backend)
            last_error = error
            logger.warning(f"Push of {folder} to {repo_id}, attempt {attempt}/{max_attempts} failed: {error}")
            if attempt < max_attempts:
                sleep(delays[attempt - 1])
    raise HubPushError(
        f"Could not push {folder} to {repo_id} after {max_attempts} attempts ({type(last_error).__name__}: "
        f"{last_error}). The local checkpoint is intact; re-run the same command to retry the push."
    ) from last_error


class HubPushError(RuntimeError):
    """A push failed after its retries; the local files are intact."""


def push_round(
    run_dir,
    round_index: int,
    args,
    metrics: dict,
    sleep: Callable[[float], object] | None = None,
    test_result: dict | None = None,
    example: str | None = None,
) -> dict:
    """Push round `round_index` of the run in `run_dir` (a path or `RunDir`): its NAT, and its AR when
    `args.hub_ar_model_id` is set, with generated model cards.

    Each card is also saved as the folder's README.md, so the local folder and the repo show the same card.

    Args:
        sleep: the back-off wait of `push_folder` (default `wait`, i.e. `time.sleep`).
        test_result / example: passed to `build_model_card` (the NAT card's test results and usage example).
    Returns:
        `{"nat": commit, "ar": commit}` of what was pushed.
    """
    pushed = {}
    targets = [("nat", args.hub_model_id)] + ([("ar", args.hub_ar_model_id)] if args.hub_ar_model_id else [])
    for kind, repo_id in targets:
        folder = RunDir(run_dir).model(round_index, kind)
        if not os.path.isdir(folder):
            if kind == "nat" and round_index == 0:
                continue  # round 0 without a raw-data NAT
            raise ValueError(
                f"{folder} does not exist: push_round takes the run folder (output_dir) and a round whose models "
                "are saved there."
            )
        extra = {"example": example} if example else {}
        card = build_model_card(
            round_index, args, metrics, repo_id, kind, test_result=test_result, folder=folder, **extra
        )
        card.save(os.path.join(folder, "README.md"))
        pushed[kind] = push_folder(
            folder, repo_id, round_index, card, token=args.hub_token, private=args.hub_private_repo, sleep=sleep
        )
    return pushed
