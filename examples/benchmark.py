"""Latency, throughput and quality of NAT decoding against its paired AR, the AR converted to CTranslate2 being the
CPU baseline that counts (DESIGN.md, "Measuring"); Hugging Face `generate()` rows stay for reference.

Methods (`em_nat.evaluation.METHODS`): CT2 int8 and float32, greedy and beam 5, of the AR converted with
`em_nat.export` (float32 decodes exactly like `generate()`); HF AR greedy and beam 5; NAT argmax, NAT + ODD, NAT +
length beam 9 + ODD + AR rescoring; the NAT exported to ONNX Runtime (int8 and float32, ODD; int8 with length beam 9
+ ODD + CT2 int8 rescoring). At batch 1 and batch 64 by default. Every runtime (torch, CT2 int8, CT2 float32, ONNX
Runtime int8, ONNX Runtime float32) and thread setting is timed in a
process of its own, because one runtime's idle worker threads slow another's. The script sweeps intra-op threads
(1 and 2: torch `set_num_threads`, CT2 `intra_threads`) and, at batch > 1, CT2 `inter_threads` (batches submitted
together), prints the sweep, and reports each method at its best setting, the setting in brackets. Warm-up first,
then repeats with the methods of one process interleaved; medians reported; speed-ups are throughput ratios at the
same batch size measured in this run, against CT2 int8 greedy and CT2 int8 beam 5.

    # trained models and a test set (sacreBLEU with signature when references are given; BLEU-vs-latency PNG)
    python examples/benchmark.py --ar runs/em/round-2/ar --nat runs/em/round-2/nat \
        --source test.en --reference test.de
    # random weights at the size of the speed targets (d_model 256, 3+3 layers, vocab 8000, 18 source tokens, 20
    # output tokens + EOS, every method forced to that length): speed only
    python examples/benchmark.py --random-weights
    # train tiny models on the embedded synthetic task first, then benchmark them
    python examples/benchmark.py --demo

Writes `--output_json`, `--output_md` and, with BLEU, `--output_png`; prints the Markdown tables. Needs
`pip install "em-nat[benchmark]"` (ctranslate2, onnx, onnxruntime, onnxscript, matplotlib) for the CT2 and ONNX
Runtime rows and the plot; rows whose runtime is not installed are left out with a message naming the extra.
"""

import argparse
import json
import os
import subprocess
import sys

from em_nat.benchmark import BenchmarkOptions, demo_inputs, markdown, plot, run_benchmark
from em_nat.cli import bounded, bounded_list
from em_nat.evaluation import METHODS
from em_nat.train_cli import DEFAULT_OUTPUT_DIR

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ar", help="Folder of the AR (AutoModelForSeq2SeqLM) with its tokenizer.")
    parser.add_argument("--nat", help="Folder of the NAT with its tokenizer.")
    parser.add_argument("--source", help="Source sentences, one per line.")
    parser.add_argument(
        "--reference",
        nargs="+",
        help="Reference file(s), one sentence per line; several files = several references "
        "per sentence (an empty line means no reference there). Optional: BLEU.",
    )
    parser.add_argument("--random-weights", action="store_true", help="Random models at the target sizes.")
    parser.add_argument("--demo", action="store_true", help="Train tiny models on the embedded task first.")
    parser.add_argument(
        "--batch-sizes", type=bounded_list(int, 1), default="1,64", help="Comma-separated batch sizes."
    )
    parser.add_argument(
        "--max-sentences", type=bounded(int, 1), default=256, help="Sentences timed per batch size > 1."
    )
    parser.add_argument("--batch1-sentences", type=bounded(int, 1), default=40, help="Sentences timed at batch 1.")
    parser.add_argument(
        "--repeats", type=bounded(int, 1), default=3, help="Timed passes over the sentences (median kept)."
    )
    parser.add_argument("--warmup", type=bounded(int, 0), default=2, help="Untimed batches before timing.")
    parser.add_argument(
        "--rounds",
        type=bounded(int, 1),
        default=1,
        help="Run the whole sweep this many times, one runtime after another each time, and report each method and "
        "setting at its median round (a shared machine's slow spells then hit one round, not one runtime).",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma-separated subset of methods.")
    parser.add_argument("--rescore-alpha", type=bounded(float, 0.0), default=0.6, help="GNMT alpha of AR rescoring.")
    parser.add_argument(
        "--rescore-top-k",
        type=bounded(int, 1),
        default=None,
        help="Rescore only the NAT's k best length candidates (default: all 9).",
    )
    parser.add_argument(
        "--threads",
        type=bounded_list(int, 0),
        default="1,2",
        help="Comma-separated intra-op thread counts swept for every runtime (0 = torch's default, CT2's 0 = auto).",
    )
    parser.add_argument(
        "--inter-threads",
        type=bounded_list(int, 1),
        default="1,2",
        help="CT2 inter_threads swept at batch > 1 (combinations above the core count are skipped).",
    )
    parser.add_argument("--device", default=None, help="'cpu' or 'cuda' (default: cuda when available).")
    parser.add_argument("--work-dir", default=None, help="Keep converted models and worker files here.")
    # sizes of --random-weights
    parser.add_argument("--vocab-size", type=bounded(int, 10), default=8000)
    parser.add_argument("--d-model", type=bounded(int, 1), default=256)
    parser.add_argument("--layers", type=bounded(int, 1), default=3, help="Encoder and decoder layers each.")
    parser.add_argument("--heads", type=bounded(int, 1), default=4)
    parser.add_argument("--source-len", type=bounded(int, 2), default=18, help="Source tokens, EOS included.")
    parser.add_argument("--output-len", type=bounded(int, 1), default=20, help="Output tokens before EOS.")
    parser.add_argument("--output_json", default="benchmark.json")
    parser.add_argument("--output_md", default="benchmark.md")
    parser.add_argument("--output_png", default="benchmark.png", help="BLEU against latency (only with BLEU).")
    return parser.parse_args(argv)


def train_demo(args) -> None:
    """--demo: run (or resume) the embedded default training (examples/train_em.py, a few minutes) and benchmark
    its last round on the synthetic test split."""
    subprocess.run([sys.executable, os.path.join(HERE, "train_em.py")], check=True)
    with open(os.path.join(HERE, "presets", "synthetic.json")) as handle:
        preset = json.load(handle)
    run_dir = preset.get("output_dir", DEFAULT_OUTPUT_DIR)
    rounds, num_train = preset["num_rounds"], preset["synthetic_num_train"]
    args["ar"], args["nat"], args["source"], args["reference"] = demo_inputs(run_dir, rounds, num_train)


def main(argv=None):
    args = vars(parse_args(argv))
    outputs = {key: args.pop(key) for key in ("output_json", "output_md", "output_png")}
    if args.pop("demo"):
        train_demo(args)
    result = run_benchmark(BenchmarkOptions(**args))
    with open(outputs["output_json"], "w") as handle:
        json.dump(result, handle, indent=1)
    table = markdown(result)
    with open(outputs["output_md"], "w") as handle:
        handle.write(table + "\n")
    print(table)
    if plot(result, outputs["output_png"]):
        print(f"\nPlot: {outputs['output_png']}")


if __name__ == "__main__":
    main()
