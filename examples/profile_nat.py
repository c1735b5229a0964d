"""Where the time of NAT decoding goes at batch 1, next to the AR it is compared with (random weights, the sizes of
`benchmark.py --random-weights`). Prints a table of median milliseconds per call.

    python examples/profile_nat.py

Rows: the NAT's encoder, decoder and output projection alone; a plain matmul of the encoder's feed-forward shape
(the machine's dense throughput); NAT generate (argmax, ODD); the length-beam-9 NAT part alone; AR rescoring of 9
candidates alone; the full length beam 9 + ODD + rescoring; AR greedy and beam 5.
"""

import statistics
import time

import torch
from benchmark import random_models
from em_nat.modeling.decoding import ar_rescore


def median_ms(fn, repeats=50, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


@torch.inference_mode()
def main():
    ar, nat, _, ids, _, ar_kwargs = random_models(sentences=1)
    x = torch.tensor(ids[:1])
    mask = torch.ones_like(x)
    model = nat.model
    states, _ = model.encode(x, mask)
    lengths = torch.tensor([21])
    embeds = model.decoder_inputs(lengths, 21, x, mask)
    decoded = model.decode(embeds, None, states, None)
    candidates = torch.randint(4, nat.config.vocab_size, (1, 9, 25))
    candidates[..., -1] = nat.config.eos_token_id
    hidden = torch.randn(19, nat.config.d_model)
    ffn = torch.nn.Linear(nat.config.d_model, nat.config.encoder_ffn_dim)
    matmul_ms = median_ms(lambda: ffn(hidden), repeats=200)
    flops = 2 * 19 * nat.config.d_model * nat.config.encoder_ffn_dim
    rows = [
        ("dense matmul 19x256x1024", matmul_ms, f"{flops / matmul_ms / 1e6:.0f} GFLOP/s"),
        ("NAT encoder (19 tokens)", median_ms(lambda: model.encode(x, mask)), ""),
        ("NAT decoder (21 positions)", median_ms(lambda: model.decode(embeds, None, states, None)), ""),
        ("NAT output projection (20 x 8000)", median_ms(lambda: nat.lm_head(decoded[:, :-1])), ""),
        ("NAT generate, argmax", median_ms(lambda: nat.generate(x, mask, odd=False)), ""),
        ("NAT generate, ODD", median_ms(lambda: nat.generate(x, mask, odd=True)), ""),
        ("NAT length beam 9 + ODD, no rescoring", median_ms(lambda: nat.generate(x, mask, length_beam=9)), ""),
        ("AR rescoring of 9 candidates alone", median_ms(lambda: ar_rescore(ar, x, mask, candidates, 0, 2, 0)), ""),
        (
            "NAT length beam 9 + ODD + AR rescoring",
            median_ms(lambda: nat.generate(x, mask, length_beam=9, rescorer=ar)),
            "",
        ),
        (
            "AR greedy (20 tokens)",
            median_ms(lambda: ar.generate(x, attention_mask=mask, num_beams=1, **ar_kwargs), repeats=15),
            "",
        ),
        (
            "AR beam 5 (20 tokens)",
            median_ms(lambda: ar.generate(x, attention_mask=mask, num_beams=5, **ar_kwargs), repeats=15),
            "",
        ),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| step | ms (median) | note |\n|---|---|---|")
    for name, ms, note in rows:
        print(f"| {name} | {ms:.2f} | {note} |")


if __name__ == "__main__":
    main()
