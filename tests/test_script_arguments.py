"""examples/train_em.py refuses bad options at parsing, before any work, naming the option and the fix."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_em.py"


def run_script(*args, cwd=ROOT):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def nat_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nat")
    (folder / "config.json").write_text(json.dumps({"model_type": "em_nat"}))
    return folder


CASES = [
    (["--max_tokens", "0"], "max_tokens must be >= 1, got 0"),
    (["--preset", "multi30k-cpu", "--num_round", "3"], "not used by the HfArgumentParser: ['--num_round', '3']"),
    (["--d_mod", "64"], "not used by the HfArgumentParser: ['--d_mod', '64']"),
    (["--train_initial_ar", "false"], "--train_initial_ar false needs --ar_model PATH"),
    (["--ar_model", "./no/such/folder"], "--ar_model ./no/such/folder: no such folder"),
    (
        ["--preset", "multi30k-cpu", "--ar_model", "runs/multi30k-teacher-cpu/round-9/ar"],
        "no such folder (a local path; Hub names look like 'user/name'). Train it first: accelerate launch "
        "examples/train_em.py --preset multi30k-teacher-cpu",
    ),
    (["--tokenizer", "./missing-tokenizer"], "--tokenizer ./missing-tokenizer: no such folder"),
    (["--max_source_length", "100"], "--max_source_length (100) exceeds --max_position_embeddings (64)"),
    (["--output_dir", "README.md"], "--output_dir README.md is a file"),
    (["--dropout", "1.5"], r"dropout must be in [0, 0.99], got 1.5"),
    (["--nat_glancing_ratio", "2"], "nat_glancing_ratio must be a ratio in [0, 1]"),
    (["--preset", "multi30k"], "is neither a preset name (multi30k-cpu, multi30k-gpu, multi30k-teacher-cpu"),
    (["--ar_model", "{nat}"], "holds a NAT (model_type 'em_nat'); pass an AR folder"),
    (
        ["--preset", "multi30k-cpu", "--source_lang", "de", "--target_lang", "en", "--ar_model", "{ar_en_de}"],
        "translates en->de (source_lang/target_lang in its config.json) but this run translates de->en",
    ),
]


def test_case_table_is_not_empty():
    assert len(CASES) >= 10


# Parses every case in one subprocess (one import of torch and transformers instead of one per case); each case
# calls the script's own parse_args, which is what `python examples/train_em.py ARGS` runs first.
DRIVER = """
import contextlib, io, json, sys
from em_nat.train_cli import parse_args
results = []
for args in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            parse_args(args, sys.argv[1])
            code = 0
        except SystemExit as exit:
            code = exit.code
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def ar_en_de_folder(tmp_path_factory):
    """An AR as an em-nat run saves it: its config records the direction it was trained in."""
    folder = tmp_path_factory.mktemp("ar")
    (folder / "config.json").write_text(json.dumps({"model_type": "marian", "source_lang": "en", "target_lang": "de"}))
    return folder


def test_a_given_ar_of_the_same_or_an_unrecorded_direction_passes():
    from types import SimpleNamespace

    from em_nat.train_cli import _check_direction

    run = SimpleNamespace(source_lang="de", target_lang="en")
    _check_direction("ar", {"source_lang": "de", "target_lang": "en"}, run)
    _check_direction("ar", {"model_type": "marian"}, run)  # a model from elsewhere: nothing to check
    with pytest.raises(ValueError, match="translates en->de"):
        _check_direction("ar", {"source_lang": "en", "target_lang": "de"}, run)


def test_bad_options_are_refused_at_parsing(nat_folder, ar_en_de_folder):
    folders = {"{nat}": str(nat_folder), "{ar_en_de}": str(ar_en_de_folder)}
    cases = [[folders.get(a, a) for a in args] for args, _ in CASES]
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(ROOT / "examples" / "presets"), json.dumps(cases)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(outcomes) == len(CASES)
    for (args, message), (code, stderr) in zip(CASES, outcomes):
        assert code == 2, (args, stderr)
        assert message in stderr, (args, stderr)
        assert "Traceback" not in stderr


def test_a_bad_option_stops_the_real_command_before_any_work(tmp_path):
    result = run_script("--max_tokens", "0", "--output_dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "max_tokens must be >= 1, got 0" in result.stderr
    assert not (tmp_path / "run").exists()


def test_blank_training_line_names_the_command_line_fix_and_drop_empty_drops_it(tmp_path):
    """A blank pair stops the run with a message naming --drop_empty; with --drop_empty the other pairs load."""
    from em_nat.data import DataError
    from em_nat.train_cli import load_data, parse_args

    presets = str(ROOT / "examples" / "presets")

    train = tmp_path / "train.tsv"
    train.write_text("a house\tein Haus\n\t\na cat\teine Katze\n")
    options = [
        "--train",
        str(train),
        "--source_lang",
        "en",
        "--target_lang",
        "de",
        "--output_dir",
        str(tmp_path / "r"),
    ]
    script, em = parse_args(options, presets)
    with pytest.raises(DataError, match="--drop_empty"):
        load_data(script, em)
    script, em = parse_args([*options, "--drop_empty"], presets)
    assert [p["de"] for p in load_data(script, em)["train"]["translation"]] == [
        "ein Haus",
        "eine Katze",
    ]


@pytest.mark.parametrize(
    "script, option, value, message",
    [
        ("evaluate_em", "--batch_size", "0", "argument --batch_size: must be >= 1, got 0"),
        ("evaluate_em", "--threads", "-1", "argument --threads: must be >= 0, got -1"),
        ("evaluate_em", "--rescore_alpha", "x", "argument --rescore_alpha: must be a number, got 'x'"),
        ("benchmark", "--repeats", "0", "argument --repeats: must be >= 1, got 0"),
        ("benchmark", "--batch-sizes", "1,0", "argument --batch-sizes: must be >= 1, got 0"),
        ("benchmark", "--threads", ",", "argument --threads: needs at least one value, got ','"),
        ("benchmark", "--d-model", "1.5", "argument --d-model: must be an integer, got '1.5'"),
    ],
)
def test_numeric_options_of_the_other_scripts_are_checked_at_parsing(script, option, value, message):
    """evaluate_em.py and benchmark.py: a number out of range stops argparse (exit 2) naming option, value, range."""
    required = ["--run_dir", "r", "--source", "s", "--reference", "t"] if script == "evaluate_em" else []
    command = [sys.executable, str(ROOT / "examples" / f"{script}.py"), *required, option, value]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and message in result.stderr


def test_no_example_script_takes_an_unchecked_number():
    """The rule behind the numeric rows of docs/bad-input.md, for every script under examples/ (new ones included):
    numbers enter through `em_nat.cli.bounded`/`bounded_list`, never a bare `type=int` or `type=float`, so 0 or a
    negative count is refused at parsing with the option named."""
    import ast

    bare = []
    for path in sorted((ROOT / "examples").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "type" and isinstance(node.value, ast.Name):
                if node.value.id in ("int", "float"):
                    bare.append(f"{path.name}:{node.value.lineno}")
    assert not bare, f"numeric options without a range: {bare}; use em_nat.cli.bounded"
    assert (ROOT / "examples" / "estep_by_n.py").is_file()  # the glob sees the scripts
