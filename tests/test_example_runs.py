"""examples/train_em.py as a user runs it: one process, two CPU processes, and a run killed and resumed."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_pairs
from datasets import load_from_disk

from em_nat.trainers.training import CHECKPOINT, STATE_FILE

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_LINES = 200  # stderr lines and progress-bar redraws of the tiny run below, all together
SCRIPT = str(ROOT / "examples" / "train_em.py")
TINY = (
    "--source_lang en --target_lang de --vocab_size 120 --d_model 32 --encoder_layers 1 --decoder_layers 1 "
    "--attention_heads 2 --ffn_dim 64 --max_position_embeddings 48 --dropout 0 --num_rounds 2 --num_candidates 3 "
    "--candidate_beam_size 3 --warmup_steps 5 --max_tokens 256 --eval_steps 10 --save_steps 5 "
    "--max_source_length 48 --max_target_length 24 --eval_num_beams 2 --speed_sentences 3"
).split()


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    pairs = make_pairs()
    (folder / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs))
    (folder / "valid.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs[:10]))
    return folder


def _command(data_files, output_dir, *extra, processes=1, steps=20):
    # --standalone: a free rendezvous port on localhost, so another distributed job on the machine cannot collide
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    head = launcher if processes > 1 else [sys.executable]
    return head + [
        SCRIPT,
        "--train",
        str(data_files / "train.tsv"),
        "--validation",
        str(data_files / "valid.tsv"),
        "--output_dir",
        str(output_dir),
        "--ar_max_steps",
        str(steps),
        "--nat_max_steps",
        str(steps),
        *TINY,
        *extra,
    ]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _run(command, cwd):
    proc = subprocess.run(command, capture_output=True, text=True, env=_env(), cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def single_run(data_files, tmp_path_factory):
    """One process accumulating 2 batches per update: the same updates as 2 processes with 1 batch each."""
    out = tmp_path_factory.mktemp("single") / "run"
    proc = _run(_command(data_files, out, "--gradient_accumulation_steps", "2"), cwd=out.parent)
    return out, proc


def test_example_script_prints_the_results_table(single_run):
    out, proc = single_run
    assert "| AR_0 (beam 2) |" in proc.stdout
    for label in ("NAT, raw data", "NAT, round 1 (KD)", "NAT, round 2 (EM)"):
        assert f"| {label} |" in proc.stdout
    assert "sacreBLEU signature: nrefs:1" in proc.stdout
    assert (out / "results.md").read_text().strip() in proc.stdout
    metrics = json.loads((out / "round-2" / "metrics.json").read_text())
    assert metrics["em/round"] == 2 and metrics["em/settings"]["gradient_accumulation_steps"] == 2
    for phase in ("nat", "candidates", "selection", "evaluate"):  # round 2 runs them all (tiny: some round to 0.0)
        assert metrics[f"time/{phase}_seconds"] >= 0, phase
    assert metrics["time/nat_seconds"] > 0
    seconds = [v for t in range(3) for k, v in _metrics(out, t).items() if k.startswith("time/")]
    total = re.search(r"Minutes by phase \(wall clock\): .*; total ([0-9.]+)\n", proc.stdout)
    assert total and float(total.group(1)) == pytest.approx(sum(seconds) / 60, abs=0.051)


def _metrics(out, round_index):
    return json.loads((out / f"round-{round_index}" / "metrics.json").read_text())


def test_console_shows_progress_phases_and_results_and_the_log_file_the_rest(single_run):
    """Captured to a pipe, the run shows throttled progress bars, one line per phase and the results table; the
    checkpoint lines of accelerate and its "Removed shared tensor" warnings are in train.log only."""
    out, proc = single_run
    console = proc.stdout + proc.stderr
    for noise in ("Model weights saved", "Optimizer state saved", "Random states saved", "Removed shared tensor"):
        assert noise not in console, noise
    log = (out / "train.log").read_text()
    assert "Model weights saved" in log and "Removed shared tensor" in log
    phases = [line for line in proc.stderr.splitlines() if line.startswith("round ")]
    # rounds 0-2: AR and NAT trained and evaluated in round 0; candidates, NAT, selection, AR, evaluation after
    assert len(phases) == 3 + 2 * 5, phases
    assert all(line in log for line in phases)
    assert any(line.startswith("round 1: NAT trained 20 updates in ") for line in phases)
    assert any(line.startswith("round 2: evaluated in ") and "NAT ODD" in line for line in phases)
    redraws = [line for line in re.split(r"[\r\n]", proc.stderr) if line.strip()]
    assert len(redraws) < CONSOLE_LINES, f"{len(redraws)} console lines:\n" + "\n".join(redraws)


def test_two_cpu_processes_cover_every_source_once_and_match_one_process(data_files, single_run, tmp_path):
    single, _ = single_run
    out = tmp_path / "run"
    _run(_command(data_files, out, processes=2), cwd=tmp_path)
    sources = [line.split("\t")[0] for line in (data_files / "train.tsv").read_text().splitlines()]
    for t in (1, 2):
        two = load_from_disk(str(out / f"round-{t}" / "data"))
        one = load_from_disk(str(single / f"round-{t}" / "data"))
        assert two["source"] == one["source"] and len(two) == len(sources)  # every source exactly once, in order
        assert two["candidates"] == one["candidates"]
        assert two["selection"] == one["selection"]
        m2 = json.loads((out / f"round-{t}" / "metrics.json").read_text())
        m1 = json.loads((single / f"round-{t}" / "metrics.json").read_text())
        assert m2["em/cm"] == pytest.approx(m1["em/cm"], rel=1e-3)
        assert m2["eval/bleu_nat_odd"]["score"] == pytest.approx(m1["eval/bleu_nat_odd"]["score"], abs=0.5)


def _wait_for(path_glob, root, proc, timeout=300):
    start = time.time()
    while time.time() - start < timeout:
        if list(root.glob(path_glob)):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def test_killed_run_resumes_without_losing_completed_phases(data_files, single_run, tmp_path):
    out = tmp_path / "run"
    command = _command(data_files, out, "--gradient_accumulation_steps", "2", steps=60)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=tmp_path)
    # wait until round 0's AR is complete and round 0's NAT has a mid-phase checkpoint, then kill hard. The marker is
    # the state file inside checkpoint/, which exists only once a complete checkpoint (written whole in
    # checkpoint.new/) has been renamed into place, never while one is being written.
    reached = _wait_for(f"round-0/work/nat/{CHECKPOINT}/{STATE_FILE}", out, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reached, "the run ended before the kill point"
    state = json.loads((out / "em_state.json").read_text())
    assert "round-0/ar" in state["completed"] and "round-0/nat" not in state["completed"]
    ar_weights = out / "round-0" / "ar" / "model.safetensors"
    stamp = ar_weights.stat().st_mtime_ns
    resumed = _run(command, cwd=tmp_path)
    assert ar_weights.stat().st_mtime_ns == stamp  # the completed phase was not redone
    assert "nat: resuming at update" in resumed.stderr
    final = json.loads((out / "em_state.json").read_text())["completed"]
    assert final.index("round-0/ar") == 0 and "round-2/saved" in final and len(final) == len(set(final))


def test_benchmark_script_prints_ratios_measured_in_one_run(tmp_path):
    """Tiny random models; every runtime and thread setting in its own process; each method reported at its best
    setting; ratios against CT2 int8 greedy / beam 5 from the same run (CT2 rows only where ctranslate2 is)."""
    import importlib.util

    command = [sys.executable, str(ROOT / "examples" / "benchmark.py"), "--random-weights"]
    command += "--vocab-size 200 --d-model 32 --layers 1 --heads 2 --source-len 8 --output-len 6".split()
    command += "--batch-sizes 1,2 --batch1-sentences 2 --max-sentences 4 --repeats 1 --warmup 1 --rounds 2".split()
    command += ["--output_json", str(tmp_path / "b.json"), "--output_md", str(tmp_path / "b.md")]
    proc = _run(command, cwd=tmp_path)
    result = json.loads((tmp_path / "b.json").read_text())
    has_ct2 = importlib.util.find_spec("ctranslate2") is not None
    has_onnx = importlib.util.find_spec("onnxruntime") is not None
    methods = ["ar_greedy", "ar_beam5", "nat_argmax", "nat_odd", "nat_lb9_odd_rescore"]
    methods += ["ct2_int8_greedy", "ct2_int8_beam5", "ct2_float32_greedy", "ct2_float32_beam5"] if has_ct2 else []
    methods += ["onnx_int8_odd", "onnx_float32_odd"] if has_onnx else []
    methods += ["onnx_int8_lb9_odd_ct2"] if has_onnx and has_ct2 else []
    assert {(row["method"], row["batch_size"]) for row in result["rows"]} == {(m, b) for m in methods for b in (1, 2)}
    assert "d_model 32, 1+1 layers" in result["setting"] and "7 tokens (6 + EOS)" in result["setting"]
    for row in result["rows"]:
        same_batch = {r["method"]: r for r in result["rows"] if r["batch_size"] == row["batch_size"]}
        swept = [r for r in result["sweep"] if (r["method"], r["batch_size"]) == (row["method"], row["batch_size"])]
        assert {r["setting"] for r in swept} >= {"1", "2"}  # threads 1 and 2, each in its own process
        assert row["sentences_per_s"] == max(r["sentences_per_s"] for r in swept)
        for r in swept:  # two rounds of the whole sweep: the lower of the two figures is reported
            assert len(r["sentences_per_s_rounds"]) == 2 and r["sentences_per_s"] == min(r["sentences_per_s_rounds"])
        assert row["tokens_per_sentence"] == pytest.approx(7.0) or "lb9" in row["method"]
        base = "ct2_int8_beam5" if has_ct2 else "ar_beam5"
        assert row[f"speedup_vs_{base}"] == pytest.approx(row["sentences_per_s"] / same_batch[base]["sentences_per_s"])
    if has_ct2:
        assert "1x2" in {r["setting"] for r in result["sweep"] if r["batch_size"] == 2}  # CT2 inter_threads
        best = next(r for r in result["rows"] if (r["method"], r["batch_size"]) == ("ct2_int8_greedy", 1))
        assert f"| CT2 int8 greedy | {best['sentences_per_s']:.1f} ({best['setting']}) | 1.00x |" in proc.stdout
    assert "| NAT + ODD | " in proc.stdout and "Machine:" in proc.stdout and "Thread sweep" in proc.stdout
    assert "the whole sweep ran 2 times over" in proc.stdout and proc.stdout.count("-- round 2 of 2: ") == len(
        {(r["runtime"], r["setting"]) for r in result["sweep"]}
    )
    if has_onnx:
        assert "| NAT + ODD, ONNX Runtime int8 | " in proc.stdout
        onnx_settings = {
            r["setting"] for r in result["sweep"] if r["method"] == "onnx_int8_odd" and r["batch_size"] == 2
        }
        assert onnx_settings == {"1", "2", "1x2"}  # two batches in flight (OnnxNAT.generate_many), batch > 1 only
        parallel = next(r for r in result["sweep"] if (r["method"], r["setting"]) == ("onnx_int8_odd", "1x2"))
        serial = next(
            r for r in result["sweep"] if (r["method"], r["setting"], r["batch_size"]) == ("onnx_int8_odd", "1", 2)
        )
        assert parallel["latency_ms"] is None and parallel["sentences"] == serial["sentences"]


def test_example_script_with_a_pretrained_ar_and_tokenizer(data_files, tokenizer, tmp_path):
    """--ar_model points at a locally saved AR with its tokenizer; with --train_initial_ar false it is AR_0 as is."""
    import torch
    from conftest import TINY_SIZES
    from transformers import MarianMTModel

    import em_nat

    torch.manual_seed(5)
    ar = em_nat.build_ar_model(tokenizer, em_nat.NATConfig(vocab_size=len(tokenizer), **TINY_SIZES))
    ar.save_pretrained(tmp_path / "pretrained-ar")
    tokenizer.save_pretrained(tmp_path / "pretrained-ar")
    out = tmp_path / "run"
    command = _command(
        data_files,
        out,
        "--ar_model",
        str(tmp_path / "pretrained-ar"),
        "--train_initial_ar",
        "false",
        "--num_rounds",
        "1",
        steps=6,
    )
    _run(command, cwd=tmp_path)
    ar0 = MarianMTModel.from_pretrained(out / "round-0" / "ar")
    for name, tensor in ar.state_dict().items():
        assert torch.equal(tensor, ar0.state_dict()[name]), name
    assert (out / "round-1" / "nat" / "tokenizer.json").is_file()
    assert json.loads((out / "round-0" / "metrics.json").read_text())["em/round"] == 0
