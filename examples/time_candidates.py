"""Time the E-step's candidate phase (the AR's N-best beam over training sources) with each backend: Hugging Face
`generate()` and CTranslate2 (int8, float32), at several N (beam = N), on the same sources, each backend and N in
turn in this process (torch and CT2 threads set to `--threads`). Prints sources per second and the minutes one
candidate phase over `--train_size` sources would take at that rate.

    python examples/time_candidates.py --ar runs/multi30k-teacher-cpu/round-0/ar \
        --source ../shared/data/multi30k_en_de/train.en --sentences 500 --num_candidates 4,20

The run's length cap applies (`--max_len_a 1.2 --max_len_b 10 --max_new_tokens 96`, the multi30k-cpu preset's).
"""

import argparse
import os

from em_nat.benchmark import time_candidate_phase
from em_nat.cli import bounded, bounded_list


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ar", required=True, help="Folder of the AR with its tokenizer.")
    parser.add_argument("--source", required=True, help="Training sources, one per line.")
    parser.add_argument("--sentences", type=bounded(int, 1), default=500, help="Sources timed (the first ones).")
    parser.add_argument("--train_size", type=bounded(int, 1), default=29000, help="Sources of a full phase.")
    parser.add_argument("--num_candidates", type=bounded_list(int, 1), default="4,20", help="N values (beam = N).")
    parser.add_argument(
        "--backends", default="transformers,ctranslate2-int8,ctranslate2-float32", help="Comma-separated backends."
    )
    parser.add_argument("--threads", type=bounded(int, 1), default=2, help="Intra-op threads of every backend.")
    parser.add_argument("--max_sentences", type=bounded(int, 1), default=256, help="Sources per batch.")
    parser.add_argument("--max_new_tokens", type=bounded(int, 1), default=96)
    parser.add_argument("--max_len_a", type=bounded(float, 0.0), default=1.2)
    parser.add_argument("--max_len_b", type=bounded(int, 0), default=10)
    parser.add_argument("--output_md", default=None, help="Also write the table here.")
    args = parser.parse_args(argv)
    known = ("transformers", "ctranslate2-int8", "ctranslate2-float32")
    unknown = [b for b in args.backends.split(",") if b and b not in known]
    if unknown:
        parser.error(f"--backends {unknown} unknown; choose from {','.join(known)}.")
    if not os.path.isfile(os.path.join(args.ar, "config.json")):
        parser.error(
            f"--ar {args.ar}: not a saved model folder (no config.json); give the AR's save_pretrained folder."
        )
    if not os.path.isfile(args.source):
        parser.error(f"--source {args.source}: no such file; give the training sources, one per line.")
    table = time_candidate_phase(**{k: v for k, v in vars(args).items() if k != "output_md"})
    print(table)
    if args.output_md:
        with open(args.output_md, "w") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()
