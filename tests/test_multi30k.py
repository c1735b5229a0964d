"""The real-data pipeline on Multi30k at reduced size (3,000 training pairs, tiny models), end to end, as README
runs it: the teacher (`--preset multi30k-teacher-cpu`), then EM from it (`--preset multi30k-cpu --ar_model ...`)
with smaller sizes, then the test-set table and the model card.

Slow (a few minutes); skipped when ../shared/data/multi30k_en_de is absent. Run: python -m pytest -m slow
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "multi30k_en_de"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "train.en").is_file(), reason=f"Multi30k not found at {DATA}"),
]

SIZES = (
    "--max_train_samples 3000 --max_test_samples 100 --vocab_size 1000 --d_model 64 --encoder_layers 1 "
    "--decoder_layers 1 --attention_heads 2 --ffn_dim 128 --warmup_steps 50 --max_tokens 1024 --eval_steps 1000 "
    "--save_steps 50 --eval_max_samples 100 --speed_sentences 5"
).split()
TEACHER = "--ar_max_steps 300 --ar_learning_rate 3e-3 --ar_average_checkpoints 2".split()
EM = (
    "--num_candidates 2 --candidate_beam_size 2 --nat_max_steps 200 --nat_learning_rate 3e-3 "
    "--ar_continue_max_steps 30 --nat_average_checkpoints 2"
).split()


def _train(preset, out, *options):
    command = [sys.executable, "examples/train_em.py", "--preset", preset, "--output_dir", str(out), *SIZES, *options]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("multi30k") / "teacher"
    _train("multi30k-teacher-cpu", out, *TEACHER)
    return out


@pytest.fixture(scope="module")
def reduced_run(teacher):
    out = teacher.parent / "run"
    proc = _train("multi30k-cpu", out, "--ar_model", str(teacher / "round-0" / "ar"), *EM)
    return out, proc


def test_teacher_is_trained_alone_and_em_starts_from_it_as_is(teacher, reduced_run):
    """The teacher command trains AR_0 only; the EM run records it as its AR_0 and does not train it again."""
    from transformers import AutoModelForSeq2SeqLM

    from em_nat.trainers.em_trainer import initial_ar_identity

    assert not (teacher / "round-0" / "nat").exists() and not (teacher / "round-1").exists()
    out, _ = reduced_run
    round0 = json.loads((out / "round-0" / "metrics.json").read_text())
    assert round0["ar/trained"] is False
    expected = initial_ar_identity(AutoModelForSeq2SeqLM.from_pretrained(teacher / "round-0" / "ar"))
    assert round0["em/initial_ar"]["weights_sha256"] == expected["weights_sha256"]
    teacher_round0 = json.loads((teacher / "round-0" / "metrics.json").read_text())
    assert teacher_round0["ar/eval_loss"] < math.log(1000) - 1 and round0["nat/eval_loss"] < math.log(1000) - 1


def test_every_round_is_trained_and_scored_once_on_test(reduced_run):
    out, proc = reduced_run
    for t in range(3):
        assert (out / f"round-{t}" / "nat" / "model.safetensors").is_file()
        metrics = json.loads((out / f"round-{t}" / "metrics.json").read_text())
        assert metrics["em/cm"] > 0 and metrics["eval/bleu_nat_odd"]["signature"].startswith("nrefs:1")
    result = json.loads((out / "test_results.json").read_text())
    assert result["test_sentences"] == 100
    # AR greedy / beam 5; raw, KD, EM NAT x argmax / ODD / LB 9 + rescoring; with CTranslate2, AR_0 converted (4 rows)
    ct2 = importlib.util.find_spec("ctranslate2") is not None
    ct2_rows = {f"CT2 {kind} {search}" for kind in ("int8", "float32") for search in ("greedy", "beam 5")}
    assert len(result["rows"]) == 2 + 3 * 3 + (4 if ct2 else 0)
    assert {r["decoding"] for r in result["rows"]} == {
        "greedy",
        "beam 5",
        "argmax",
        "ODD",
        "LB 9 + ODD + AR rescoring",
    } | (ct2_rows if ct2 else set())
    assert (out / "test_results.md").read_text().strip() in proc.stdout
    assert "| NAT, round 2 (EM) | LB 9 + ODD + AR rescoring |" in proc.stdout
    # the AR trained on 3,000 real pairs for 300 updates already translates a little
    assert next(r for r in result["rows"] if r["name"] == "ar_beam5")["bleu"]["score"] > 1.0


def test_tokenizer_is_trained_on_train_only_at_the_asked_size(teacher):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher / "tokenizer")
    assert len(tokenizer) <= 1000
    # em-nat's layout (em_nat.tokenization): <s> 0, </s> 1, <unk> 2, <pad> the last id, as Marian and CT2 expect
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.pad_token_id == len(tokenizer) - 1


def test_model_card_of_the_last_round_and_the_pipeline(reduced_run):
    from transformers import pipeline

    import em_nat  # noqa: F401  (registers the NAT and pipeline("translation"))

    out, _ = reduced_run
    card = (out / "round-2" / "nat" / "README.md").read_text()
    for text in (
        "model-index",
        "multi30k",
        "sacreBLEU",
        "em-round-2",
        "pipeline_tag: translation",
        "language:",
        "license: cc-by-nc-4.0",
    ):
        assert text in card
    translator = pipeline("translation", model=str(out / "round-2" / "nat"))
    result = translator("A man is riding a bicycle.")
    assert isinstance(result[0]["translation_text"], str) and result[0]["translation_text"]
