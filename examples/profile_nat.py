"""Where the time of NAT decoding goes at batch 1, next to the AR it is compared with (random weights, the sizes of
`benchmark.py --random-weights`, i.e. its default `--vocab-size`, `--d-model`, `--layers`, `--heads`,
`--source-len` and `--output-len`). Prints the setting, then a table of median milliseconds per call.

    python examples/profile_nat.py

Rows: the NAT's encoder, decoder and output projection alone; a plain matmul of the encoder's feed-forward shape
(the machine's dense throughput); NAT generate (argmax, ODD); the length-beam NAT part alone; AR rescoring of the
length-beam candidates alone; the full length beam + ODD + rescoring; AR greedy and beam search. Every special id
comes from the models' configs and every size in a label from the tensors and settings actually used.
"""

import statistics
import time

import torch

from em_nat.benchmark import BenchmarkOptions, random_models
from em_nat.evaluation import BEAM_SIZE, LENGTH_BEAM
from em_nat.modeling.decoding import ar_rescore, length_candidates


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
    sizes = BenchmarkOptions()  # benchmark.py's defaults: the sizes of `--random-weights`
    ar, nat, _, ids, _, ar_kwargs = random_models(
        vocab_size=sizes.vocab_size,
        d_model=sizes.d_model,
        layers=sizes.layers,
        heads=sizes.heads,
        source_len=sizes.source_len,
        output_len=sizes.output_len,
        sentences=1,
    )
    config = nat.config
    pad, eos, start = config.pad_token_id, config.eos_token_id, ar.config.decoder_start_token_id
    x = torch.tensor(ids[:1])  # (1, source tokens, EOS included)
    source_tokens = x.shape[1]
    mask = torch.ones_like(x)
    model = nat.model
    states, _ = model.encode(x, mask)  # (1, length slot + source tokens, d_model)
    encoder_positions = states.shape[1]
    # the length the NAT's generate decodes: its length head's prediction (EOS included)
    target_len = int(model.predict_length_logits(states).argmax(-1))
    lengths = torch.tensor([target_len])
    embeds = model.decoder_inputs(lengths, target_len, x, mask)
    decoded = model.decode(embeds, None, states, None)
    content = decoded[:, :-1]  # the positions generate projects (the last one is EOS)
    # AR rescoring input as length beam builds it: LENGTH_BEAM lengths around the prediction, EOS-terminated, padded
    # to the longest; content tokens are regular ids (never PAD, EOS, BOS or the decoder start)
    candidate_len = int(length_candidates(lengths, LENGTH_BEAM).max())
    special = {pad, eos, config.bos_token_id, start} - {None}
    regular = torch.tensor([i for i in range(config.vocab_size) if i not in special])
    candidates = regular[torch.randint(len(regular), (1, LENGTH_BEAM, candidate_len))]
    candidates[..., -1] = eos
    hidden = torch.randn(encoder_positions, config.d_model)
    ffn = torch.nn.Linear(config.d_model, config.encoder_ffn_dim)
    matmul_ms = median_ms(lambda: ffn(hidden), repeats=200)
    flops = 2 * encoder_positions * config.d_model * config.encoder_ffn_dim
    ar_tokens = ar_kwargs["max_new_tokens"]  # forced: every AR output has this many tokens, EOS included
    ar_label = f"{ar_tokens - 1} tokens + EOS"
    rows = [
        (
            f"dense matmul {encoder_positions}x{config.d_model}x{config.encoder_ffn_dim}",
            matmul_ms,
            f"{flops / matmul_ms / 1e6:.0f} GFLOP/s",
        ),
        (
            f"NAT encoder ({encoder_positions} positions: {source_tokens} source tokens + length slot)",
            median_ms(lambda: model.encode(x, mask)),
            "",
        ),
        (
            f"NAT decoder ({embeds.shape[1]} positions)",
            median_ms(lambda: model.decode(embeds, None, states, None)),
            "",
        ),
        (
            f"NAT output projection ({content.shape[1]} x {config.vocab_size})",
            median_ms(lambda: nat.lm_head(content)),
            "",
        ),
        ("NAT generate, argmax", median_ms(lambda: nat.generate(x, mask, odd=False)), ""),
        ("NAT generate, ODD", median_ms(lambda: nat.generate(x, mask, odd=True)), ""),
        (
            f"NAT length beam {LENGTH_BEAM} + ODD, no rescoring",
            median_ms(lambda: nat.generate(x, mask, length_beam=LENGTH_BEAM)),
            "",
        ),
        (
            f"AR rescoring of {LENGTH_BEAM} candidates alone ({candidate_len} positions each)",
            median_ms(lambda: ar_rescore(ar, x, mask, candidates, pad, eos, start)),
            "",
        ),
        (
            f"NAT length beam {LENGTH_BEAM} + ODD + AR rescoring",
            median_ms(lambda: nat.generate(x, mask, length_beam=LENGTH_BEAM, rescorer=ar)),
            "",
        ),
        (
            f"AR greedy ({ar_label})",
            median_ms(lambda: ar.generate(x, attention_mask=mask, num_beams=1, **ar_kwargs), repeats=15),
            "",
        ),
        (
            f"AR beam {BEAM_SIZE} ({ar_label})",
            median_ms(lambda: ar.generate(x, attention_mask=mask, num_beams=BEAM_SIZE, **ar_kwargs), repeats=15),
            "",
        ),
    ]
    print(
        f"random weights, d_model {config.d_model}, {config.encoder_layers}+{config.decoder_layers} layers, "
        f"{config.encoder_attention_heads} heads, FFN {config.encoder_ffn_dim}, vocab {config.vocab_size}, "
        f"{source_tokens} source tokens, NAT length {target_len} and AR output {ar_tokens} tokens (EOS included), "
        f"batch 1; ids: pad {pad}, eos {eos}, AR decoder start {start}"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| step | ms (median) | note |\n|---|---|---|")
    for name, ms, note in rows:
        print(f"| {name} | {ms:.2f} | {note} |")


if __name__ == "__main__":
    main()
