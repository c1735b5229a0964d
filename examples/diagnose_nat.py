"""Where the NAT's BLEU gap to its AR comes from (`em_nat.diagnosis`): on held-out pairs, the NAT + ODD at its
predicted length and at the reference's length (oracle), its length beam rescored by the AR and the same candidates
picked by sentence BLEU (oracle), next to the AR's beam 5. Oracle rows read the references: a diagnosis, never a
result. Use the valid set.

    python examples/diagnose_nat.py --nat runs/multi30k-cpu/round-2/nat --ar runs/multi30k-cpu/round-0/ar \
        --source ../shared/data/multi30k_en_de/valid.en --reference ../shared/data/multi30k_en_de/valid.de \
        --output_md docs/diagnosis-multi30k-cpu-valid.md
"""

import argparse

from em_nat.cli import bounded, load_nat_and_ar, print_and_save, read_pairs_for
from em_nat.evaluation import LENGTH_BEAM


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nat", required=True, help="Folder of the NAT (a run's round-<t>/nat).")
    parser.add_argument("--ar", required=True, help="Folder of the AR on the same tokenizer (the rescorer).")
    parser.add_argument("--source", required=True, help="Held-out sources, one per line.")
    parser.add_argument("--reference", required=True, help="Their references, one per line.")
    parser.add_argument("--sentences", type=bounded(int, 1), default=None, help="Only the first ones (default all).")
    parser.add_argument("--length_beam", type=bounded(int, 2), default=LENGTH_BEAM)
    parser.add_argument("--rescore_alpha", type=bounded(float, 0.0), default=0.6, help="GNMT alpha (paper: 0.6).")
    parser.add_argument("--batch_size", type=bounded(int, 1), default=64)
    parser.add_argument("--max_len_a", type=bounded(float, 0.0), default=1.2, help="The AR's length cap: a x source")
    parser.add_argument("--max_len_b", type=bounded(int, 0), default=10, help="... + b tokens (the run's cap).")
    parser.add_argument("--threads", type=bounded(int, 1), default=2, help="torch threads.")
    parser.add_argument("--output_md", default=None, help="Also write the table here (and JSON beside it).")
    args = parser.parse_args(argv)
    models = {"--nat": args.nat, "--ar": args.ar}
    sources, references = read_pairs_for(parser, models, args.source, args.reference, "held-out sentences")

    from em_nat.diagnosis import diagnose, render

    tokenizer, nat, ar = load_nat_and_ar(args.nat, args.ar, args.threads)
    count = args.sentences or len(sources)
    result = diagnose(
        nat,
        ar,
        tokenizer,
        sources[:count],
        references[:count],
        length_beam=args.length_beam,
        rescore_alpha=args.rescore_alpha,
        batch_size=args.batch_size,
        max_len_a=args.max_len_a,
        max_len_b=args.max_len_b,
    )
    result.update(nat=args.nat, ar=args.ar, source=args.source, reference=args.reference)
    table = f"NAT {args.nat}, AR {args.ar}, {args.source}\n\n" + render(result)
    print_and_save(table, result, args.output_md)


if __name__ == "__main__":
    main()
