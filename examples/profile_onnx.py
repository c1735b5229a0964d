"""Where the time of the exported NAT goes at batch 1 and at a large batch (ONNX Runtime, one intra-op thread), next
to the CTranslate2 AR it is measured against, on real sentences. Prints tables of median milliseconds per sentence
and the op types ONNX Runtime spends the large batch's graph time in.

    python -m em_nat.export onnx --int8 runs/multi30k-cpu/round-2/nat nat-onnx
    python -m em_nat.export ct2 --quantization int8 runs/multi30k-teacher-cpu/round-0/ar ar-ct2-int8
    python examples/profile_onnx.py --onnx nat-onnx --ct2 ar-ct2-int8 \
        --source ../shared/data/multi30k_en_de/test.en --sentences 100

Rows: the encoder graph; the decoder graph over the predicted length (1 row) and over the 9 length candidates
(9 rows); the normaliser graph over those 9 rows; `generate()` with ODD, and with the length beam (NAT score only);
the CTranslate2 scoring of 9 and of 3 candidates (`CT2Rescorer.rescore`); `generate()` with the length beam and
CTranslate2 rescoring of all 9 and of the NAT's 3 best; CTranslate2 greedy and beam 5 translation. Then, on the first
`--batch-sentences` at `--batch-size`: the encoder graph, the decoder graph at the predicted lengths, `generate()`
with ODD and CTranslate2 greedy; and the share of each graph's kernel time by op type (ONNX Runtime's profiler).
Every row runs in this one process, one thread each (ONNX Runtime `intra_op_num_threads`, CT2 `intra_threads`,
torch).
"""

import argparse
import os
import statistics
import time

import torch

from em_nat.cli import bounded
from em_nat.evaluation import BEAM_SIZE, LENGTH_BEAM, make_batches
from em_nat.export import CT2Rescorer, OnnxNAT
from em_nat.modeling.decoding import length_candidates
from em_nat.modeling.modeling_nat import right_align


def median_ms(fn, inputs, repeats: int) -> float:
    """Median over `repeats` passes of the mean milliseconds of `fn` per input."""
    for item in inputs[:3]:
        fn(item)
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in inputs:
            fn(item)
        passes.append((time.perf_counter() - start) / len(inputs))
    return 1e3 * statistics.median(passes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", required=True, help="Folder written by `python -m em_nat.export onnx --int8`.")
    parser.add_argument("--ct2", required=True, help="The AR converted by `python -m em_nat.export ct2`.")
    parser.add_argument("--source", required=True, help="Source sentences, one per line.")
    parser.add_argument("--sentences", type=bounded(int, 1), default=100, help="The first ones are timed.")
    parser.add_argument("--repeats", type=bounded(int, 1), default=3)
    parser.add_argument("--batch-size", type=bounded(int, 2), default=64, help="The large batch of the second table.")
    parser.add_argument("--batch-sentences", type=bounded(int, 2), default=256, help="Sentences of that table.")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.onnx, "onnx_export.json")):
        parser.error(
            f"--onnx {args.onnx}: not an ONNX export; make one: python -m em_nat.export onnx --int8 NAT_DIR OUT"
        )
    if not os.path.isfile(os.path.join(args.ct2, "model.bin")):
        parser.error(
            f"--ct2 {args.ct2}: not a CTranslate2 model; convert the AR: python -m em_nat.export ct2 AR_DIR OUT"
        )
    if not os.path.isfile(args.source):
        parser.error(f"--source {args.source}: no such file; give source sentences, one per line.")
    torch.set_num_threads(1)
    nat = OnnxNAT.from_pretrained(args.onnx, intra_op_num_threads=1)
    rescorer = CT2Rescorer.from_pretrained(args.ct2, args.onnx, compute_type="int8", intra_threads=1)
    tokenizer = rescorer.tokenizer
    with open(args.source, encoding="utf-8") as handle:
        texts = [line.rstrip("\n") for line in handle][: args.sentences]
    rows = [tokenizer([text], return_tensors="pt") for text in texts]
    steps = _graph_inputs(nat, rows)
    translator = rescorer.translator
    tokens = [tokenizer.convert_ids_to_tokens(row["input_ids"][0].tolist()) for row in rows]
    with torch.inference_mode():
        table = {
            "encoder graph": median_ms(lambda s: nat._encoder.run(None, s["encoder"]), steps, args.repeats),
            "decoder graph, 1 row": median_ms(lambda s: nat._decoder.run(None, s["decoder_1"]), steps, args.repeats),
            f"decoder graph, {LENGTH_BEAM} rows": median_ms(
                lambda s: nat._decoder.run(None, s["decoder_beam"]), steps, args.repeats
            ),
            f"normaliser graph, {LENGTH_BEAM} rows": median_ms(
                lambda s: nat._normaliser.run(None, s["normaliser"]), steps, args.repeats
            ),
            "generate: ODD": median_ms(lambda r: nat.generate(**r), rows, args.repeats),
            f"generate: length beam {LENGTH_BEAM} + ODD, NAT score": median_ms(
                lambda r: nat.generate(**r, length_beam=LENGTH_BEAM), rows, args.repeats
            ),
        }
        for k in (LENGTH_BEAM, 3):
            table[f"CT2 int8 scoring of {k} candidates"] = median_ms(
                lambda s, k=k: rescorer.rescore(s["input_ids"], None, s["candidates"][:, :k]), steps, args.repeats
            )
        for k in (LENGTH_BEAM, 3):
            table[f"generate: length beam {LENGTH_BEAM} + ODD + CT2 int8 rescoring of {k}"] = median_ms(
                lambda r, k=k: nat.generate(**r, length_beam=LENGTH_BEAM, rescorer=rescorer, rescore_top_k=k),
                rows,
                args.repeats,
            )
        for beam in (1, BEAM_SIZE):
            table[f"CT2 int8 {'greedy' if beam == 1 else f'beam {beam}'}"] = median_ms(
                lambda t, beam=beam: translator.translate_batch([t], beam_size=beam), tokens, args.repeats
            )
    print(f"{len(rows)} sentences of {args.source}, batch 1, one thread each; median of {args.repeats} passes\n")
    print("| step | ms per sentence |\n|---|---|")
    for label, value in table.items():
        print(f"| {label} | {value:.2f} |")
    with open(args.source, encoding="utf-8") as handle:
        texts = [line.rstrip("\n") for line in handle][: args.batch_sentences]
    batches = make_batches(tokenizer(texts)["input_ids"], args.batch_size, tokenizer.pad_token_id)
    per_sentence = len(batches) / len(texts)  # ms per batch -> ms per sentence
    feeds = [_batch_feeds(nat, batch) for batch in batches]
    token_batches = [
        [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(texts[i : i + args.batch_size])["input_ids"]]
        for i in range(0, len(texts), args.batch_size)
    ]
    with torch.inference_mode():
        large = {
            "encoder graph": median_ms(lambda f: nat._encoder.run(None, f["encoder"]), feeds, args.repeats),
            "decoder graph": median_ms(lambda f: nat._decoder.run(None, f["decoder"]), feeds, args.repeats),
            "generate: ODD": median_ms(lambda b: nat.generate(**b), batches, args.repeats),
            "CT2 int8 greedy": median_ms(
                lambda t: translator.translate_batch(t, beam_size=1), token_batches, args.repeats
            ),
        }
    print(f"\n{len(texts)} sentences, batch {args.batch_size}, one thread each; median of {args.repeats} passes\n")
    print("| step | ms per sentence |\n|---|---|")
    for label, value in large.items():
        print(f"| {label} | {value * per_sentence:.3f} |")
    print(f"\nONNX Runtime's profiler, batch {args.batch_size}: share of each graph's kernel time by op type\n")
    print("| graph | op type | share |\n|---|---|---|")
    for graph, shares in _op_shares(args.onnx, nat.precision, batches).items():
        for op, share in shares[:6]:
            print(f"| {graph} | {op} | {100 * share:.1f}% |")


def _graph_inputs(nat: OnnxNAT, rows: list[dict]) -> list[dict]:
    """Per sentence, the feeds of each graph as `generate()` builds them (predicted length; 9 candidates around it)
    and the length-beam candidates for the rescorer."""
    shortest, longest = nat._nat._length_range(nat._nat._decoding_config())
    steps = []
    for row in rows:
        input_ids = row["input_ids"]
        mask = torch.ones_like(input_ids)
        encoder_feeds = {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()}
        states, length_logits = nat._encoder.run(None, encoder_feeds)
        predicted = nat._length_log_probs(torch.from_numpy(length_logits), shortest, longest).argmax(-1)
        lengths = length_candidates(predicted, LENGTH_BEAM, shortest, longest)[0]
        step = {"encoder": encoder_feeds, "input_ids": input_ids}
        for name, chosen in (("decoder_1", predicted), ("decoder_beam", lengths)):
            n, width = chosen.numel(), int(chosen.max())
            step[name] = {
                "encoder_states": states.repeat(n, 0),
                "attention_mask": mask.repeat(n, 1).numpy(),
                "input_ids": input_ids.repeat(n, 1).numpy(),
                "target_mask": (torch.arange(width)[None, :] < chosen.view(-1, 1)).long().numpy(),
            }
            step[name] = {k: v for k, v in step[name].items() if k in nat._decoder_inputs}
        content_states = nat._decoder.run(None, step["decoder_beam"])[2]
        step["normaliser"] = {"content_states": content_states}
        step["candidates"] = _all_candidates(nat, row)
        steps.append(step)
    return steps


def _batch_feeds(nat: OnnxNAT, batch: dict) -> dict:
    """The encoder and decoder feeds `generate()` builds for one padded batch at the predicted lengths."""
    input_ids, mask = right_align(batch["input_ids"], batch["attention_mask"])
    encoder = {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()}
    states, length_logits = nat._encoder.run(None, encoder)
    shortest, longest = nat._nat._length_range(nat._nat._decoding_config())
    lengths = nat._length_log_probs(torch.from_numpy(length_logits), shortest, longest).argmax(-1)
    lengths = lengths.masked_fill(~nat._nat._has_content(input_ids, mask), 1)  # as generate(): no content, EOS alone
    decoder = {
        "encoder_states": states,
        "attention_mask": encoder["attention_mask"],
        "input_ids": encoder["input_ids"],
        "target_mask": (torch.arange(int(lengths.max()))[None, :] < lengths[:, None]).long().numpy(),
    }
    return {"encoder": encoder, "decoder": {k: v for k, v in decoder.items() if k in nat._decoder_inputs}}


def _op_shares(onnx_dir: str, precision: str, batches: list[dict]) -> dict:
    """`{graph: [(op type, share of the graph's kernel time)...]}`, largest first, from ONNX Runtime's profiler over
    one `generate()` (ODD) per batch, in a second copy of the sessions with profiling on."""
    import collections
    import json
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="em-nat-ort-profile-") as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "ort")
        profiled = OnnxNAT.from_pretrained(onnx_dir, precision=precision, session_options=options)
        for batch in batches:
            profiled.generate(**batch)
        shares = {}
        for graph, session in (("encoder", profiled._encoder), ("decoder", profiled._decoder)):
            with open(session.end_profiling()) as handle:
                events = json.load(handle)
            spent = collections.Counter()
            for event in events:
                if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                    spent[event["args"]["op_name"]] += event["dur"]
            total = sum(spent.values()) or 1
            shares[graph] = [(op, micros / total) for op, micros in spent.most_common()]
    return shares


def _all_candidates(nat: OnnxNAT, row: dict) -> torch.Tensor:
    """(1, 9, max_len) the length-beam candidates `generate()` would rescore, taken from a rescorer that records
    them."""
    seen = {}

    class Recorder:
        vocab_size = nat.config.vocab_size

        def rescore(self, input_ids, attention_mask, candidates, alpha=0.6):
            seen["candidates"] = candidates
            return torch.zeros(candidates.shape[:2])

    nat.generate(**row, length_beam=LENGTH_BEAM, rescorer=Recorder())
    return seen["candidates"]


if __name__ == "__main__":
    main()
