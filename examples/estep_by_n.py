"""What the number of candidates N buys the E-step (`em_nat.diagnosis.estep_by_n`): on the first `--sentences`
training pairs, for each N, the AR's N-best beam and the NAT's selection among them, exactly as `EMTrainer` runs the
two phases; prints how often the selection leaves the AR's 1-best, how much NAT log-likelihood (CM) it gains, the
BLEU of the targets against the human references, and the time per phase. Use the models of one E-step: in round
t, the previous round's AR generates the candidates and round t's NAT (trained on their 1-best) selects among them.

    python examples/estep_by_n.py --ar runs/multi30k-cpu/round-0/ar --nat runs/multi30k-cpu/round-1/nat \
        --source ../shared/data/multi30k_en_de/train.en --reference ../shared/data/multi30k_en_de/train.de \
        --sentences 2000 --num_candidates 1,4,8,20 --output_md docs/estep-by-n-multi30k-cpu.md

The run's length cap applies (`--max_len_a 1.2 --max_len_b 10 --max_new_tokens 96`, the multi30k-cpu preset's).
"""

import argparse

from em_nat.cli import bounded, bounded_list, load_nat_and_ar, print_and_save, read_pairs_for
from em_nat.trainers.arguments import check_candidate_backend


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ar", required=True, help="Folder of the AR that generates the candidates.")
    parser.add_argument("--nat", required=True, help="Folder of the NAT that selects among them (same tokenizer).")
    parser.add_argument("--source", required=True, help="Training sources, one per line.")
    parser.add_argument("--reference", required=True, help="Their human references, one per line.")
    parser.add_argument("--sentences", type=bounded(int, 1), default=2000, help="Pairs measured (the first ones).")
    parser.add_argument("--num_candidates", type=bounded_list(int, 1), default="1,4,8,20", help="N values (beam=N).")
    parser.add_argument("--backend", choices=("ctranslate2", "transformers"), default="ctranslate2")
    parser.add_argument("--compute_type", default="int8", help="CTranslate2 weight type (the preset's: int8).")
    parser.add_argument("--train_size", type=bounded(int, 1), default=29000, help="Sources of a full phase.")
    parser.add_argument("--max_sentences", type=bounded(int, 1), default=64, help="Sources per batch.")
    parser.add_argument("--max_new_tokens", type=bounded(int, 1), default=96)
    parser.add_argument("--max_len_a", type=bounded(float, 0.0), default=1.2)
    parser.add_argument("--max_len_b", type=bounded(int, 0), default=10)
    parser.add_argument("--threads", type=bounded(int, 1), default=2, help="torch threads.")
    parser.add_argument("--output_md", default=None, help="Also write the table here (and JSON beside it).")
    args = parser.parse_args(argv)
    try:
        check_candidate_backend(args.backend, args.compute_type)  # the trainer's own check: known type, installed
    except ValueError as error:
        parser.error(f"--backend {args.backend} --compute_type {args.compute_type}: {error}")
    models = {"--ar": args.ar, "--nat": args.nat}
    sources, references = read_pairs_for(parser, models, args.source, args.reference, "training pairs' sentences")

    from em_nat.diagnosis import estep_by_n, render_estep

    tokenizer, nat, ar = load_nat_and_ar(args.nat, args.ar, args.threads)
    result = estep_by_n(
        ar,
        nat,
        tokenizer,
        sources[: args.sentences],
        references[: args.sentences],
        num_candidates=args.num_candidates,
        backend=args.backend,
        compute_type=args.compute_type,
        max_sentences=args.max_sentences,
        max_new_tokens=args.max_new_tokens,
        max_len_a=args.max_len_a,
        max_len_b=args.max_len_b,
    )
    result.update(ar=args.ar, nat=args.nat, source=args.source, reference=args.reference)
    table = f"AR {args.ar}, NAT {args.nat}, {args.source}\n\n" + render_estep(result, args.train_size)
    print_and_save(table, result, args.output_md)


if __name__ == "__main__":
    main()
