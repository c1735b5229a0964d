"""em_nat.diagnosis, examples/diagnose_nat.py and examples/estep_by_n.py: forced lengths, the oracle choice, the
E-step by N, and the scripts' input checks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_models

from em_nat.diagnosis import (
    decode_at_lengths,
    diagnose,
    estep_by_n,
    reference_lengths,
    render,
    render_estep,
    sentence_oracle,
)
from em_nat.modeling.decoding import length_candidates
from em_nat.trainers.candidates import CandidateSettings, generate_candidates, score_candidates

ROOT = Path(__file__).resolve().parents[1]


def test_reference_lengths_count_eos_and_cap(tokenizer, pairs):
    references = [pairs[0][1], pairs[3][1] + " " + pairs[7][1]]
    rows = tokenizer(text_target=references)["input_ids"]
    assert reference_lengths(tokenizer, references, 48) == [len(row) for row in rows]  # EOS already in the rows
    assert rows[0][-1] == tokenizer.eos_token_id
    assert reference_lengths(tokenizer, references, 5) == [min(5, len(row)) for row in rows]


def test_decode_at_lengths_gives_each_source_its_length(tokenizer, pairs, nat):
    ids = tokenizer([p[0] for p in pairs[:5]])["input_ids"]
    lengths = [3, 7, 3, 1, 12]
    outputs = decode_at_lengths(nat, ids, lengths, batch_size=2)
    assert [len(row) for row in outputs] == lengths
    assert all(row[-1] == nat.config.eos_token_id and nat.config.eos_token_id not in row[:-1] for row in outputs)
    alone = decode_at_lengths(nat, ids[1:2], [7])  # batching and grouping change nothing
    assert alone[0] == outputs[1]
    with pytest.raises(ValueError, match="5 sources but 4 lengths"):
        decode_at_lengths(nat, ids, lengths[:4])


def test_length_beam_output_is_one_of_the_candidates_diagnose_scores(tokenizer, pairs):
    """The oracle row chooses among exactly the candidates generate(length_beam=...) chooses among."""
    ar, nat = tiny_models(tokenizer)
    nat.eval(), ar.eval()
    sources = [p[0] for p in pairs[:6]]
    enc = tokenizer(sources, return_tensors="pt", padding=True)
    out = nat.generate(**enc, odd=True, length_beam=3, rescorer=ar, return_dict_in_generate=True)
    predicted = nat.generate(**enc, odd=True, return_dict_in_generate=True).lengths
    shortest, longest = nat._length_range(nat._decoding_config())
    window = length_candidates(predicted, 3, shortest, longest).tolist()
    ids = tokenizer(sources)["input_ids"]
    candidates = [decode_at_lengths(nat, ids, [w[j] for w in window]) for j in range(3)]
    pad = nat.config.pad_token_id
    for i, row in enumerate(out.sequences.tolist()):
        assert [t for t in row if t != pad] in [candidates[j][i] for j in range(3)]


def test_sentence_oracle_picks_the_best_candidate():
    references = ["a red ball lies in the garden", "the cat sees the house"]
    candidates = [["a ball", "a red ball lies in the garden", "garden"], ["cat", "the cat", "the cat sees a house"]]
    assert sentence_oracle(candidates, references) == [1, 2]
    assert sentence_oracle([["same", "same"]], ["other"]) == [0]  # the first among equals


def test_diagnose_rows_and_table(tokenizer, pairs):
    ar, nat = tiny_models(tokenizer)
    nat.eval(), ar.eval()
    sources, references = [p[0] for p in pairs[:8]], [p[1] for p in pairs[:8]]
    result = diagnose(nat, ar, tokenizer, sources, references, length_beam=3, batch_size=3)
    names = [row["name"] for row in result["rows"]]
    assert names[0] == "AR beam 5" and "reference length (oracle)" in names[2] and "LB 3" in names[3]
    assert all(0.0 <= row["bleu"] <= 100.0 for row in result["rows"])
    assert result["sentences"] == 8 and 0.0 <= result["lengths"]["in_window"] <= 1.0
    table = render(result)
    assert "| NAT + ODD, predicted length |" in table and "among the 3 candidates" in table
    with pytest.raises(ValueError, match="give as many of each"):
        diagnose(nat, ar, tokenizer, sources, references[:3])


def test_estep_by_n_is_the_trainers_selection(tokenizer, pairs):
    """Each row is the E-step EMTrainer runs: N=1 never leaves the 1-best, a larger N can only raise the selected
    targets' NAT log-likelihood over its own 1-best's, and the selected log-likelihood is the best candidate's."""
    from accelerate import Accelerator

    ar, nat = tiny_models(tokenizer)
    ar.eval(), nat.eval()
    sources, references = [p[0] for p in pairs[:6]], [p[1] for p in pairs[:6]]
    result = estep_by_n(ar, nat, tokenizer, sources, references, (1, 3), backend="transformers", max_sentences=4)
    one, three = result["rows"]
    assert one["num_candidates"] == 1 and one["differs_from_1best"] == 0.0
    assert one["nat_loglik_selected"] == one["nat_loglik_1best"] and one["bleu_selected"] == one["bleu_1best"]
    assert three["nat_loglik_selected"] >= three["nat_loglik_1best"]
    assert three["cm_selected"] == pytest.approx(-three["nat_loglik_selected"])
    ids = tokenizer(sources)["input_ids"]
    settings = CandidateSettings(num_candidates=3, beam_size=3, max_new_tokens=96, max_len_a=1.2, max_len_b=10)
    accelerator = Accelerator(cpu=True)
    candidates, _ = generate_candidates(ar, tokenizer, ids, settings, accelerator)
    scores = score_candidates(nat, ids, candidates, accelerator, tokenizer.pad_token_id)
    expected = sum(max(row) for row in scores) / len(scores)
    assert three["nat_loglik_selected"] == pytest.approx(expected, abs=1e-4)
    assert three["differs_from_1best"] == sum(max(row) > row[0] for row in scores) / len(scores)
    table = render_estep(result, train_size=29000)
    assert table.count("\n| ") == 2 and "minutes for 29,000 sources" in table  # the two rows
    with pytest.raises(ValueError, match="give as many of each"):
        estep_by_n(ar, nat, tokenizer, sources, references[:2], (1,), backend="transformers")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--nat", "{missing}", "--ar", "{models}", "--source", "{src}", "--reference", "{src}"], "not a saved model"),
        (["--nat", "{models}", "--ar", "{models}", "--source", "{missing}", "--reference", "{src}"], "no such file"),
        (["--nat", "{models}", "--ar", "{models}", "--source", "{src}", "--reference", "{blank}"], "Blank test line"),
    ],
)
def test_script_refuses_bad_input_before_loading(tmp_path, argv, message):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "config.json").write_text("{}")
    (tmp_path / "src").write_text("a\nb\n")
    (tmp_path / "blank").write_text("a\n\n")
    paths = {name: tmp_path / name for name in ("models", "src", "blank", "missing")}
    argv = [a.format(**paths) for a in argv]
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "diagnose_nat.py"), *argv], capture_output=True, text=True
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def _saved_models_and_pairs(folder, tokenizer, pairs) -> list[str]:
    """A tiny AR and NAT saved with their tokenizer and 5 line-aligned pairs under `folder`; returns the arguments
    that name them."""
    ar, nat = tiny_models(tokenizer)
    for name, model in (("ar", ar), ("nat", nat)):
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
    (folder / "src").write_text("".join(p[0] + "\n" for p in pairs[:5]))
    (folder / "ref").write_text("".join(p[1] + "\n" for p in pairs[:5]))
    return [
        "--ar",
        str(folder / "ar"),
        "--nat",
        str(folder / "nat"),
        "--source",
        str(folder / "src"),
        "--reference",
    ] + [str(folder / "ref")]


def test_script_writes_table_and_json(tmp_path, tokenizer, pairs):
    command = [
        sys.executable,
        str(ROOT / "examples" / "diagnose_nat.py"),
        *_saved_models_and_pairs(tmp_path, tokenizer, pairs),
    ]
    command += ["--sentences", "4", "--length_beam", "3", "--threads", "1", "--output_md", str(tmp_path / "d.md")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [
        line for line in (tmp_path / "d.md").read_text().splitlines() if line.startswith("| AR") or "| NAT" in line
    ]
    assert len(rows) == 5
    saved = json.loads((tmp_path / "d.json").read_text())
    assert saved["sentences"] == 4 and saved["nat"] == str(tmp_path / "nat")


def test_estep_script_writes_table_and_refuses_bad_input(tmp_path, tokenizer, pairs):
    command = [
        sys.executable,
        str(ROOT / "examples" / "estep_by_n.py"),
        *_saved_models_and_pairs(tmp_path, tokenizer, pairs),
    ]
    command += ["--sentences", "4", "--num_candidates", "1,2", "--backend", "transformers", "--threads", "1"]
    command += ["--output_md", str(tmp_path / "e.md")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((tmp_path / "e.json").read_text())
    assert [row["num_candidates"] for row in saved["rows"]] == [1, 2] and saved["sentences"] == 4
    assert "| 2 |" in (tmp_path / "e.md").read_text()
    nat = command.index("--nat") + 1
    bad = subprocess.run(
        [*command[:nat], str(tmp_path / "missing"), *command[nat + 1 :]], capture_output=True, text=True, cwd=ROOT
    )
    assert bad.returncode == 2 and "not a saved model" in bad.stderr and "Traceback" not in bad.stderr
    typo = subprocess.run(
        [*command, "--backend", "ctranslate2", "--compute_type", "int9"], capture_output=True, text=True
    )
    assert typo.returncode == 2 and "candidate_compute_type must be one of" in typo.stderr and "int9" in typo.stderr
