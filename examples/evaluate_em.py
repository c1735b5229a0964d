"""Score an EM run on a test set once, after its last round: the results table of the README.

Rows: the round-0 AR (greedy, beam 5) and every round's NAT (raw data, round 1 = KD, later rounds = EM), each with
argmax, ODD, and length beam 9 + ODD + rescoring by the round-0 AR. Columns: sacreBLEU (signature printed), CM of
the round's NAT training targets (from the run's metrics), repeated-token rate of the outputs, and speed-up against
AR beam 5 at batch 1 and batch 128, timed side by side in this run (`em_nat.evaluation`). The AR stops where
it did in training (the run's `max_target_length` and `generation_max_len_a/b` cap).

    python examples/evaluate_em.py --run_dir runs/multi30k-cpu \
        --source ../shared/data/multi30k_en_de/test.en --reference ../shared/data/multi30k_en_de/test.de

`examples/train_em.py --preset multi30k-cpu` runs this itself at the end. Writes `test_results.{md,json}` into
the run folder and prints the table.
"""

import argparse

import torch

from em_nat.cli import bounded
from em_nat.evaluation import evaluate_run, read_test_set, write_test_results
from em_nat.run_dir import RunDir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True, help="Output folder of examples/train_em.py.")
    parser.add_argument("--source", required=True, help="Test sources, one per line.")
    parser.add_argument("--reference", required=True, help="Test references, one per line.")
    parser.add_argument("--batch1_sentences", type=bounded(int, 0), default=100, help="Sentences timed at batch 1.")
    parser.add_argument("--batch_size", type=bounded(int, 1), default=128, help="The large batch size.")
    parser.add_argument(
        "--rescore_alpha", type=bounded(float, 0.0), default=0.6, help="GNMT alpha (paper: 0.6 En-De)."
    )
    parser.add_argument("--threads", type=bounded(int, 0), default=0, help="torch threads (0 = torch default).")
    parser.add_argument(
        "--drop_empty",
        action="store_true",
        help="Score only the pairs whose source and reference both have text (default: a blank line is an error).",
    )
    args = parser.parse_args(argv)
    try:  # before any model is loaded
        sources, references = read_test_set(args.source, args.reference, args.drop_empty)
        RunDir(args.run_dir).require_finished_rounds()
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if args.threads:
        torch.set_num_threads(args.threads)
    result = evaluate_run(
        args.run_dir, sources, references, args.batch1_sentences, args.batch_size, args.rescore_alpha
    )
    print(write_test_results(result, args.run_dir))


if __name__ == "__main__":
    main()
