"""Runs side by side (seeds, recipes such as vanilla vs glancing, directions), from the files each run wrote: valid
BLEU and CM of every round, the test table (scored once by the run), and the test figures against the targets.

    python examples/compare_runs.py "seed 0=runs/multi30k-cpu" "seed 1=runs/multi30k-cpu-seed1"

Each argument is LABEL=RUN_DIR (an `--output_dir` of examples/train_em.py); the labels head the columns.
"""

import argparse
import os

from em_nat.rendering import runs_comparison


def labelled_run(text: str) -> tuple[str, str]:
    label, sep, folder = text.partition("=")
    if not sep or not label or not folder:
        raise argparse.ArgumentTypeError(f"{text!r}: give LABEL=RUN_DIR, e.g. 'seed 0=runs/multi30k-cpu'.")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"{folder}: no such run folder (an --output_dir of examples/train_em.py).")
    return label, folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=labelled_run, help="LABEL=RUN_DIR, one per column.")
    parser.add_argument("--output_md", default=None, help="Also write the tables here.")
    args = parser.parse_args(argv)
    labels = [label for label, _ in args.runs]
    if len(set(labels)) != len(labels):
        parser.error(f"labels must differ, got {labels}.")
    try:
        table = runs_comparison(dict(args.runs))
    except FileNotFoundError as error:
        parser.error(str(error))
    print(table)
    if args.output_md:
        with open(args.output_md, "w") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()
