"""Every Markdown table and label a person reads: round labels, a run's results table, its test table (also the
model card's test section), the benchmark's tables and its BLEU-vs-latency plot."""

import json
import os

PHASE_NAMES = {
    "ar": "AR training",
    "nat": "NAT training",
    "candidates": "AR candidates",
    "selection": "selection",
    "evaluate": "evaluation",
}


def round_label(round_index: int) -> str:
    """What a round's NAT was trained on: raw data (round 0), the AR 1-best (round 1, KD), EM (later rounds)."""
    if round_index == 0:
        return "NAT, raw data"
    return "NAT, round 1 (KD)" if round_index == 1 else f"NAT, round {round_index} (EM)"


def minutes_by_phase(metrics: dict) -> str:
    """'AR training 0.0, NAT training 52.3, ...; total 80.1' from the rounds' `time/<phase>_seconds` ('' if none)."""
    seconds = {}
    for m in metrics.values():
        for key, value in m.items():
            if key.startswith("time/") and key.endswith("_seconds"):
                phase = key[len("time/") : -len("_seconds")]
                seconds[phase] = seconds.get(phase, 0.0) + value
    if not seconds:
        return ""
    parts = [f"{PHASE_NAMES.get(p, p)} {v / 60:.1f}" for p, v in seconds.items()]
    return ", ".join(parts) + f"; total {sum(seconds.values()) / 60:.1f}"


def results_table(metrics: dict, speedups: dict, num_beams: int) -> str:
    """A run's validation results: AR_0, then every round's NAT (BLEU ODD / argmax, CM of its training targets and of
    valid, repeated tokens, speed-up of NAT + ODD against the round's AR beam at batch 1).

    Args:
        metrics: `{round: metrics}` (`RunDir.all_metrics`).
        speedups: `{round: speed-up}` (`em_nat.evaluation.batch1_speedups`).
    """
    lines = [
        "| model | BLEU (AR beam / NAT ODD) | BLEU argmax | CM of training targets | CM valid | repeats (argmax) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    signature = None
    for t in sorted(metrics):
        m = metrics[t]
        if "eval/bleu_ar_beam" in m and t == 0:
            lines.append(
                f"| AR_0 (beam {num_beams}) | {m['eval/bleu_ar_beam']['score']:.2f} | - | - | - | - | 1.00x |"
            )
            signature = m["eval/bleu_ar_beam"]["signature"]
        if "eval/bleu_nat_odd" not in m:
            continue
        lines.append(
            f"| {round_label(t)} | {m['eval/bleu_nat_odd']['score']:.2f} | {m['eval/bleu_nat_argmax']['score']:.2f} | "
            f"{m['em/cm']:.3f} | {m['eval/cm_valid']:.3f} | {100 * m['eval/repeat_rate_nat_argmax']:.1f}% | "
            f"{speedups[t]:.1f}x |"
        )
    if signature:
        lines += ["", f"sacreBLEU signature: {signature}"]
    minutes = minutes_by_phase(metrics)
    if minutes:
        lines += ["", "Minutes by phase (wall clock): " + minutes]
    return "\n".join(lines)


def lines_of_test_table(result: dict, rows: list[dict] | None = None, lowercase: bool = True) -> list[str]:
    """The lines of a test-set table (`em_nat.evaluation.evaluate_run`'s result); `rows` selects some of its rows
    (a model card shows the AR rows and its own round's)."""
    b = result["batch_size"]
    rows = result["rows"] if rows is None else rows
    lower = "BLEU lowercased | " if lowercase else ""
    lines = [
        f"| model | decoding | BLEU | {lower}CM of training targets | repeated tokens | speed-up vs HF AR beam 5, "
        f"batch 1 | batch {b} |",
        "|---|---|---|" + ("---|" if lowercase else "") + "---|---|---|---|",
    ]
    for r in rows:
        cm = "-" if r["cm_train_targets"] is None else f"{r['cm_train_targets']:.2f}"
        lower = f"{r['bleu_lowercase']['score']:.2f} | " if lowercase else ""
        lines.append(
            f"| {r['model']} | {r['decoding']} | {r['bleu']['score']:.2f} | {lower}{cm} | "
            f"{100 * r['repeat_rate']:.1f}% | {r['speedup_vs_ar_beam5_batch1']:.2f}x | "
            f"{r[f'speedup_vs_ar_beam5_batch{b}']:.2f}x |"
        )
    return lines


def markdown_of_test_results(result: dict) -> str:
    """A run's test table with its setting: sentences, machine, rescoring, sacreBLEU signatures."""
    first = result["rows"][0]
    return "\n".join(
        lines_of_test_table(result)
        + [
            "",
            f"Test sentences: {result['test_sentences']} (batch 1 timing: the first {result['batch1_sentences']}). "
            f"Machine: {result['machine']}. Rescoring: round-0 AR, GNMT alpha {result['rescore_alpha']}.",
            f"sacreBLEU signature: {first['bleu']['signature']} (lowercased: {first['bleu_lowercase']['signature']})",
        ]
    )


def model_card_test_section(result: dict, round_index: int) -> str:
    """The model card's test section: the AR rows and this round's NAT rows."""
    rows = [r for r in result["rows"] if r["round"] is None or r["round"] == round_index]
    if not rows:
        return ""
    lines = [
        "",
        f"## Results on the test data ({result['test_sentences']} sentences, scored once after the last round)",
        "",
        *lines_of_test_table(result, rows, lowercase=False),
        "",
        f"sacreBLEU signature `{rows[0]['bleu']['signature']}`. Timed on: {result['machine']}. Rescoring by "
        f"the round-0 AR, GNMT alpha {result['rescore_alpha']}.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# the benchmark


def _ratio(row: dict, base: str) -> str:
    value = row.get(f"speedup_vs_{base}")
    return "-" if value is None else f"{value:.2f}x"


def benchmark_markdown(result: dict, labels: dict, order: list[str], baselines: dict) -> str:
    """The benchmark's tables: per batch size, each method at its best setting, then the thread sweep.

    Args:
        labels: method name -> label; order: the methods' order; baselines: method name -> label of the methods
            every row is compared with.
    """
    rows = result["rows"]
    lines = [
        f"Setting: {result['setting']}. Machine: {result['machine']}.",
        "",
        f"Length-beam rows: {result['rescoring']}." if result.get("rescoring") else "",
        "",
        "Each method at its best thread setting on this machine, in brackets: "
        + result["thread_settings"]
        + ". Every runtime and setting ran in its own process"
        + (
            f"; the whole sweep ran {result['rounds']} times over, and each figure is its median round (every "
            "round's figure: `sentences_per_s_rounds` in the JSON)"
            if result.get("rounds", 1) > 1
            else ""
        )
        + ". Speed-ups are throughput ratios at the same batch size in this run; `= HF`: share of outputs identical "
        "to HF `generate()` of the same AR.",
    ]
    bases = [b for b in baselines if any(r["method"] == b for r in rows)]
    for batch_size in sorted({r["batch_size"] for r in rows}):
        counts = sorted({r["sentences"] for r in rows if r["batch_size"] == batch_size})
        lines += [
            "",
            f"Batch {batch_size}, on the first {'/'.join(map(str, counts))} sentences (BLEU and repeats over those):",
            "",
            "| method | sent/s (setting) | "
            + "".join(f"vs {baselines[b]} | " for b in bases)
            + "ms/batch | tok/sent | = HF | BLEU | repeats |",
            "|---|---|" + "---|" * len(bases) + "---|---|---|---|---|",
        ]
        for r in [r for r in rows if r["batch_size"] == batch_size]:
            latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
            same = f"{100 * r['same_as_hf']:.0f}%" if "same_as_hf" in r else "-"
            bleu = f"{r['bleu']['score']:.2f}" if "bleu" in r else "-"
            repeat = f"{100 * r['repeat_rate']:.1f}%" if "repeat_rate" in r else "-"
            lines.append(
                f"| {labels[r['method']]} | {r['sentences_per_s']:.1f} ({r['setting']}) | "
                + "".join(f"{_ratio(r, b)} | " for b in bases)
                + f"{latency} | {r['tokens_per_sentence']:.1f} | {same} | {bleu} | {repeat} |"
            )
    lines += sweep_markdown(result["sweep"], labels, order)
    signatures = {r["bleu"]["signature"] for r in rows if "bleu" in r}
    if signatures:
        lines += ["", "sacreBLEU signature: " + "; ".join(sorted(signatures))]
    return "\n".join(lines)


def sweep_markdown(measurements: list[dict], labels: dict, order: list[str]) -> list[str]:
    """Sentences per second of every method at every setting measured (the sweep the best settings come from)."""
    settings = []
    for row in measurements:
        if row["setting"] not in settings:
            settings.append(row["setting"])
    table = {(r["method"], r["batch_size"], r["setting"]): r["sentences_per_s"] for r in measurements}
    rank = {m: i for i, m in enumerate(order)}
    keys = sorted({(r["method"], r["batch_size"]) for r in measurements}, key=lambda k: (k[1], rank[k[0]]))
    lines = [
        "",
        "Thread sweep, sentences per second (best in bold):",
        "",
        "| method | batch | " + " | ".join(f"({s})" for s in settings) + " |",
        "|---|---|" + "---|" * len(settings),
    ]
    for method, batch_size in keys:
        values = {s: table.get((method, batch_size, s)) for s in settings}
        top = max(v for v in values.values() if v is not None)
        cells = ["-" if v is None else (f"**{v:.1f}**" if v == top else f"{v:.1f}") for v in values.values()]
        lines.append(f"| {labels[method]} | {batch_size} | " + " | ".join(cells) + " |")
    return lines


def method_colors(methods: list[str]) -> dict:
    """One colour per method, all different for up to 20 methods: matplotlib's tab20 hues, the 10 dark shades first,
    then the 10 light ones (tab10 alone would give the 11th method the 1st one's colour)."""
    from matplotlib import colormaps

    if len(methods) > 20:
        raise ValueError(f"{len(methods)} methods: at most 20 can have colours of their own in one plot.")
    palette = colormaps["tab20"]
    return {m: palette((2 * k) % 20 + (2 * k) // 20) for k, m in enumerate(methods)}


def benchmark_plot(result: dict, path: str, labels: dict, order: list[str]) -> bool:
    """BLEU against milliseconds per sentence, one point per method and batch size, written to `path` (PNG).
    False without BLEU or without matplotlib."""
    rows = [r for r in result["rows"] if "bleu" in r]
    if not rows:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed (pip install "em-nat[benchmark]"): no plot.', flush=True)
        return False
    from matplotlib.lines import Line2D

    figure, axes = plt.subplots(figsize=(8, 5.5))
    markers = ["o", "s", "^", "D", "v"]
    batch_sizes = sorted({r["batch_size"] for r in rows})
    methods = [m for m in order if any(r["method"] == m for r in rows)]
    colors = method_colors(methods)
    for r in rows:
        marker = markers[batch_sizes.index(r["batch_size"]) % len(markers)]
        axes.scatter(1e3 / r["sentences_per_s"], r["bleu"]["score"], marker=marker, color=colors[r["method"]], s=40)
    handles = [Line2D([], [], ls="", marker="o", color=colors[m], label=labels[m]) for m in methods]
    handles += [
        Line2D([], [], ls="", marker=markers[k % len(markers)], color="black", mfc="none", label=f"batch {b}")
        for k, b in enumerate(batch_sizes)
    ]
    axes.legend(handles=handles, fontsize=7, loc="best")
    axes.set_xscale("log")
    axes.set_xlabel("ms per sentence (log scale; batch > 1: wall time / sentences)")
    axes.set_ylabel("BLEU")
    axes.set_title("BLEU against decoding time, each method at its best thread setting", fontsize=10)
    axes.grid(alpha=0.3)
    figure.text(0.01, 0.01, result["machine"], fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
    return True


def runs_comparison(runs: dict) -> str:
    """Several runs side by side (seeds, recipes, directions), from what each run wrote: on valid, every round's NAT
    (ODD, argmax) and CM of its training targets from `round-<t>/metrics.json`; on test, every row of
    `test_results.json` (absent: 'not scored'); then each run's target lines (ratios to its AR beam 5; EM > KD > raw).

    Args:
        runs: `{label: run folder}`, in column order.
    """
    from em_nat.run_dir import RunDir

    labels = list(runs)
    valid, test, targets = {}, {}, {}
    for label, folder in runs.items():
        run = RunDir(folder)
        run.require_finished_rounds()
        for t, metrics in run.all_metrics().items():
            for key, field in (("ODD", "eval/bleu_nat_odd"), ("argmax", "eval/bleu_nat_argmax")):
                if field in metrics:
                    valid.setdefault((t, key), {})[label] = f"{metrics[field]['score']:.2f}"
            if "em/cm" in metrics and run.has_model(t, "nat"):
                valid.setdefault((t, "CM of training targets"), {})[label] = f"{metrics['em/cm']:.2f}"
            if "eval/bleu_ar_beam" in metrics and t == 0:
                valid.setdefault((-1, "beam"), {})[label] = f"{metrics['eval/bleu_ar_beam']['score']:.2f}"
        path = run.file("test_results.json")
        if os.path.isfile(path):
            with open(path) as handle:
                result = json.load(handle)
            for row in result["rows"]:
                if row["name"] in ("ar_greedy", "ar_beam5") or row["name"].startswith("r"):
                    test.setdefault((row["model"], row["decoding"]), {})[label] = f"{row['bleu']['score']:.2f}"
            targets[label] = _test_targets(result["rows"])
    header = ["| model | measure | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    lines = ["Valid (every round's metrics.json):", "", *header]
    order = {"beam": 0, "ODD": 1, "argmax": 2, "CM of training targets": 3}
    for (t, key), cells in sorted(valid.items(), key=lambda item: (item[0][0], order[item[0][1]])):
        model = "AR_0" if t < 0 else round_label(t)
        measure = "BLEU beam 5" if t < 0 else key if key.startswith("CM") else f"BLEU {key}"
        lines.append(f"| {model} | {measure} | " + " | ".join(cells.get(label, "-") for label in labels) + " |")
    lines += ["", "Test (test_results.json, scored once after the last round):", ""]
    if test:
        lines += [header[0].replace("| measure |", "| decoding |"), header[1]]
        for (model, decoding), cells in test.items():
            missing = {label: "-" if label in targets else "not scored" for label in labels}  # "-": no such model
            lines.append(
                f"| {model} | {decoding} | " + " | ".join(cells.get(label, missing[label]) for label in labels) + " |"
            )
        lines.append("")
        for label in labels:
            if label in targets:
                lines.append(f"- {label}: {targets[label]}")
    else:
        lines.append("(no run has test results yet)")
    return "\n".join(lines)


def _test_targets(rows: list[dict]) -> str:
    """A run's test figures against issue 12's targets: the last NAT's BLEU over AR beam 5 (ODD; LB 9 + ODD + AR
    rescoring) and whether EM > KD > raw with ODD (strictly; EM > KD alone without a raw-data NAT; 'not measured'
    without a KD or an EM round)."""
    bleu = {row["name"]: row["bleu"]["score"] for row in rows}
    rounds = sorted({int(name[1 : name.index("/")]) for name in bleu if name.startswith("r") and "/" in name})
    last = rounds[-1]
    ratio_odd = bleu[f"r{last}/nat_odd"] / bleu["ar_beam5"]
    ratio_rescored = bleu[f"r{last}/nat_lb9_odd_rescore"] / bleu["ar_beam5"]
    if last < 2 or 1 not in rounds:
        order = "EM > KD > raw (ODD): not measured"
    elif 0 in rounds:
        odd = [bleu[f"r{t}/nat_odd"] for t in (0, 1, last)]
        order = f"EM > KD > raw (ODD): {'yes' if odd[2] > odd[1] > odd[0] else 'no'}"
    else:  # no raw-data NAT (train_raw_nat false)
        order = f"EM > KD (ODD): {'yes' if bleu[f'r{last}/nat_odd'] > bleu['r1/nat_odd'] else 'no'}; no raw-data NAT"
    return (
        f"last NAT / AR beam 5 = {ratio_odd:.3f} with ODD, {ratio_rescored:.3f} with LB 9 + ODD + AR rescoring; "
        + order
    )
