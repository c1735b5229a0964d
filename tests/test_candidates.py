"""AR candidate generation: the per-batch length cap tied to the source (fairseq's --max-len-a/b)."""

import pytest
from accelerate import Accelerator
from conftest import tiny_models

from em_nat import EMTrainingArguments
from em_nat.trainers.candidates import CandidateSettings, generate_candidates, length_cap, translate


def test_length_cap_follows_the_longest_source_and_never_exceeds_the_limit():
    assert length_cap(10, 128) == 128  # off by default
    assert length_cap(10, 128, max_len_a=1.2, max_len_b=10) == 22
    assert length_cap(100, 128, max_len_a=1.2, max_len_b=10) == 128
    assert length_cap(3, 128, max_len_a=0.1, max_len_b=0) == 1


def _sources(tokenizer, pairs):
    return [tokenizer(s)["input_ids"] for s, _ in pairs[:6]]


def test_candidates_and_translations_stop_at_the_cap(tokenizer, pairs):
    ar, _ = tiny_models(tokenizer)  # random weights: it rarely ends on its own, so outputs run to the limit
    sources, accelerator = _sources(tokenizer, pairs), Accelerator(cpu=True)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    cap = length_cap(max(map(len, sources)), 40, 0.5, 1)
    settings = dict(num_candidates=2, beam_size=2, max_new_tokens=40, max_sentences=8)
    free, _ = generate_candidates(ar, tokenizer, sources, CandidateSettings(**settings), accelerator)
    capped, _ = generate_candidates(
        ar, tokenizer, sources, CandidateSettings(**settings, max_len_a=0.5, max_len_b=1), accelerator
    )
    longest = lambda rows: max(len(c) for cands in rows for c in cands)  # noqa: E731
    assert longest(capped) <= cap + 1 < longest(free)  # + EOS
    out = translate(ar, sources, accelerator, pad, eos, 8, max_len_a=0.5, max_len_b=1, num_beams=2, max_new_tokens=40)
    assert max(map(len, out)) <= cap + 1


def test_one_greedy_candidate_per_source_is_the_greedy_translation(tokenizer, pairs):
    """N = 1 with beam 1 (allowed: the E-step then reduces to KD) has no beam scores from `generate()`; the candidate
    is the greedy output and its score the mean log-probability of its tokens, as beam search scores."""
    ar, _ = tiny_models(tokenizer)
    sources, accelerator = _sources(tokenizer, pairs), Accelerator(cpu=True)
    settings = CandidateSettings(num_candidates=1, beam_size=1, max_new_tokens=12, max_sentences=8)
    candidates, scores = generate_candidates(ar, tokenizer, sources, settings, accelerator)
    greedy = translate(ar, sources, accelerator, tokenizer.pad_token_id, tokenizer.eos_token_id, 8, max_new_tokens=12)
    assert [c[0] for c in candidates] == greedy
    assert all(len(s) == 1 and -float("inf") < s[0] < 0 for s in scores)


def test_greedy_scores_ignore_what_follows_eos():
    """After EOS, greedy pads, and a forced-EOS or banned-PAD processor can give those steps -inf: the score is the
    mean log-probability up to EOS, never NaN."""
    from types import SimpleNamespace

    import torch

    from em_nat.trainers.candidates import _greedy_scores

    eos, pad = 1, 0
    out = SimpleNamespace(sequences=torch.tensor([[5, 7, eos, pad], [6, 8, 9, eos]]), scores=None)
    steps = torch.tensor([[-1.0, -2.0, -3.0, float("-inf")], [-1.0, -1.0, -1.0, -1.0]])
    model = SimpleNamespace(compute_transition_scores=lambda sequences, scores, normalize_logits: steps)
    assert _greedy_scores(model, out, eos).tolist() == [-2.0, -1.0]


def test_negative_length_cap_is_refused(tmp_path):
    with pytest.raises(ValueError, match="generation_max_len_a"):
        EMTrainingArguments(output_dir=str(tmp_path), generation_max_len_a=-1.0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(candidate_backend="onnx"), "candidate_backend must be one of"),
        (
            dict(candidate_backend="ctranslate2", candidate_compute_type="int4"),
            "candidate_compute_type must be one of",
        ),
    ],
)
def test_bad_candidate_backend_settings_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        EMTrainingArguments(output_dir=str(tmp_path), **overrides)


def test_ctranslate2_backend_without_ctranslate2_names_the_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ctranslate2" else real(name, *a)
    )
    with pytest.raises(ValueError, match=r"pip install 'em-nat\[ct2\]'"):
        EMTrainingArguments(output_dir=str(tmp_path), candidate_backend="ctranslate2")
    EMTrainingArguments(output_dir=str(tmp_path))  # the default backend needs no CTranslate2


def test_candidate_settings_refuse_a_beam_narrower_than_n():
    with pytest.raises(ValueError, match="beam_size"):
        CandidateSettings(num_candidates=4, beam_size=2, max_new_tokens=10)


def test_candidate_phase_timing_script_prints_every_backend_and_n(tokenizer, pairs, tmp_path):
    """examples/time_candidates.py on a tiny saved AR: one row per backend and N, rates from the E-step's own code."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    from conftest import tiny_models

    ar, _ = tiny_models(tokenizer)
    ar.save_pretrained(tmp_path / "ar")
    tokenizer.save_pretrained(tmp_path / "ar")
    (tmp_path / "train.src").write_text("".join(s + "\n" for s, _ in pairs[:6]))
    has_ct2 = importlib.util.find_spec("ctranslate2") is not None
    backends = "transformers,ctranslate2-int8" if has_ct2 else "transformers"
    script = Path(__file__).resolve().parents[1] / "examples" / "time_candidates.py"
    command = [sys.executable, str(script), "--ar", str(tmp_path / "ar"), "--source", str(tmp_path / "train.src")]
    command += ["--sentences", "6", "--num_candidates", "1,2", "--backends", backends, "--max_new_tokens", "12"]
    command += ["--output_md", str(tmp_path / "t.md")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [
        line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith(("| transformers", "| ctr"))
    ]
    expected = [(b, n) for n in (1, 2) for b in backends.split(",")]
    assert [(r.split(" | ")[0][2:], int(r.split(" | ")[1].split()[0])) for r in rows] == expected
    assert "first 6 sources" in result.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ar", "/no/such/ar", "--source", "README.md"], "--ar /no/such/ar: not a saved model folder"),
        (["--ar", "tests", "--source", "README.md"], "--ar tests: not a saved model folder"),
        (["--ar", "/x", "--source", "README.md", "--backends", "onnx"], "--backends ['onnx'] unknown"),
        (["--ar", "/x", "--source", "README.md", "--num_candidates", "0"], "must be >= 1, got 0"),
    ],
)
def test_candidate_phase_timing_script_refuses_bad_input_before_loading(argv, message):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "time_candidates.py"), *argv],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
