"""ONNX export of the NAT (`em_nat.onnx_export`, issue 15 item 3): ONNX Runtime `generate()` gives PyTorch's ids in
float32 (argmax, ODD, length beam; padded and left-padded batches), int8 graphs give well-formed outputs, the CLI
refuses bad folders, and `pipeline("translation")` translates with the exported model as with the PyTorch one."""

import json
import shutil

import pytest
import torch

pytest.importorskip(
    "onnxruntime", reason='ONNX export needs onnx, onnxruntime, onnxscript (pip install "em-nat[onnx]")'
)
pytest.importorskip("onnxscript", reason='ONNX export needs onnxscript (pip install "em-nat[onnx]")')
onnx = pytest.importorskip("onnx", reason='ONNX export needs onnx (pip install "em-nat[onnx]")')

from conftest import TINY_SIZES  # noqa: E402
from transformers import AutoConfig, AutoTokenizer, pipeline  # noqa: E402

import em_nat  # noqa: E402
from em_nat import export  # noqa: E402
from em_nat.export import OnnxNAT, export_onnx  # noqa: E402

SOURCES = [
    "the cat sees the house .",
    "a dog likes the garden . my friend paints a red ball .",
    "",  # EOS alone: no content, translated to EOS alone
    "our neighbour finds a red ball .",
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run several times faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _saved_nat(tokenizer, folder, decoder_input):
    torch.manual_seed(0)
    nat = em_nat.build_nat_model(tokenizer, **TINY_SIZES, decoder_input=decoder_input).eval()
    nat.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return nat


@pytest.fixture(scope="module")
def uniform_copy(tokenizer, tmp_path_factory):
    """A NAT with uniform-copy decoder inputs (the presets'), exported by the CLI with int8 graphs too."""
    root = tmp_path_factory.mktemp("onnx-uniform-copy")
    nat = _saved_nat(tokenizer, root / "nat", "uniform_copy")
    export.main(["onnx", "--int8", str(root / "nat"), str(root / "onnx")])
    return nat, root


@pytest.fixture(scope="module")
def positional(tokenizer, tmp_path_factory):
    """A NAT with the paper's positional decoder inputs, exported in float32 by `export_onnx`."""
    root = tmp_path_factory.mktemp("onnx-positional")
    nat = _saved_nat(tokenizer, root / "nat", "positional")
    report = export_onnx(root / "nat", root / "onnx")
    assert report["precisions"] == ["float32"]
    return nat, root


@pytest.fixture(params=["uniform_copy", "positional"])
def float32_pair(request):
    """(PyTorch NAT, the same NAT exported and loaded in float32)."""
    nat, root = request.getfixturevalue(request.param)
    return nat, OnnxNAT.from_pretrained(root / "onnx", precision="float32", intra_op_num_threads=1)


def _batch(tokenizer, padding_side="right"):
    tokenizer.padding_side = padding_side
    try:
        return dict(tokenizer(SOURCES, return_tensors="pt", padding=True))
    finally:
        tokenizer.padding_side = "right"


KNOBS = [
    {"odd": False},
    {"odd": True},
    {"length_beam": 3},
    {"length_beam": 3, "odd": False},
    {"max_new_tokens": 4, "min_length": 2},
]


@pytest.mark.parametrize("knobs", KNOBS, ids=lambda knobs: ",".join(f"{k}={v}" for k, v in knobs.items()))
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_float32_onnx_generate_gives_pytorchs_ids(float32_pair, tokenizer, knobs, padding_side):
    nat, onnx_nat = float32_pair
    batch = _batch(tokenizer, padding_side)
    assert batch["attention_mask"].sum(-1).unique().numel() > 2  # sources of several lengths, padded
    expected = nat.generate(**batch, **knobs)
    got = onnx_nat.generate(**batch, **knobs)
    assert got.dtype == expected.dtype and torch.equal(got, expected)


def test_odd_and_the_length_beam_change_the_outputs_being_compared(uniform_copy, tokenizer):
    """The tiny NAT repeats tokens under argmax, so the ODD comparison above checks real de-duplication."""
    nat, _ = uniform_copy
    batch = _batch(tokenizer)
    argmax = nat.generate(**batch, odd=False)
    special = torch.tensor(nat._special_ids)
    assert bool((argmax[:, 1:] == argmax[:, :-1]).logical_and(~torch.isin(argmax[:, 1:], special)).any())
    assert not torch.equal(argmax, nat.generate(**batch, odd=True))


def test_float32_scores_and_lengths_match(float32_pair, tokenizer):
    nat, onnx_nat = float32_pair
    batch = _batch(tokenizer)
    expected = nat.generate(**batch, length_beam=3, return_dict_in_generate=True)
    got = onnx_nat.generate(**batch, length_beam=3, return_dict_in_generate=True)
    assert torch.equal(got.sequences, expected.sequences) and torch.equal(got.lengths, expected.lengths)
    torch.testing.assert_close(got.sequences_scores, expected.sequences_scores, rtol=1e-4, atol=1e-4)


class LongestWins:
    """A rescorer (the `rescore()` protocol of `em_nat.export.CT2Rescorer`) that prefers the longest candidate, so
    that rescoring surely changes the NAT's own choice."""

    def __init__(self, tokenizer):
        self.vocab_size = len(tokenizer)
        self.pad_token_id, self.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id

    def rescore(self, input_ids, attention_mask, candidates, alpha=0.6):
        return candidates.ne(self.pad_token_id).sum(-1).float()  # (batch, k)


@pytest.mark.parametrize("prune", [None, 2], ids=["all-candidates", "top-2"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_length_beam_with_rescoring_picks_what_pytorch_picks(float32_pair, tokenizer, prune, padding_side):
    """The fastest NAT form keeps the best decoding: the exported NAT, rescored by a PyTorch AR or by any object with
    `rescore()` (CT2Rescorer's protocol), chooses the candidates the PyTorch NAT chooses with that rescorer."""
    nat, onnx_nat = float32_pair
    torch.manual_seed(1)
    ar = em_nat.build_ar_model(tokenizer, nat.config).eval()
    batch = _batch(tokenizer, padding_side)
    knobs = {"length_beam": 5, "rescore_top_k": prune}
    for rescorer in (ar, LongestWins(tokenizer)):
        expected = nat.generate(**batch, rescorer=rescorer, **knobs)
        assert torch.equal(onnx_nat.generate(**batch, rescorer=rescorer, **knobs), expected)
    assert not torch.equal(expected, nat.generate(**batch, **knobs))  # the longest-wins rescorer changed choices


def test_empty_sources_and_generic_knobs_as_pytorch(uniform_copy, tokenizer):
    nat, root = uniform_copy
    onnx_nat = OnnxNAT.from_pretrained(root / "onnx", precision="float32", intra_op_num_threads=1)
    empty = torch.zeros(2, 0, dtype=torch.long)
    assert torch.equal(onnx_nat.generate(input_ids=empty), nat.generate(input_ids=empty))
    batch = _batch(tokenizer)
    with pytest.warns(UserWarning, match="num_beams"):
        got = onnx_nat.generate(**batch, num_beams=4)
    assert torch.equal(got, nat.generate(**batch))
    with pytest.raises(TypeError, match="lenght_beam"):
        onnx_nat.generate(**batch, lenght_beam=3)
    with pytest.raises(TypeError, match="object with a rescore"):
        onnx_nat.generate(**batch, length_beam=3, rescorer=object())
    with pytest.raises(ValueError, match="export again with top_k=9"):
        onnx_nat.generate(**batch, odd_top_k=9)


def test_int8_graphs_give_eos_terminated_pad_padded_ids(uniform_copy, tokenizer):
    nat, root = uniform_copy
    int8 = OnnxNAT.from_pretrained(root / "onnx", intra_op_num_threads=1)  # "auto": int8 when exported
    assert int8.precision == "int8"
    choosable = nat.config.vocab_size - len(nat._special_ids)
    for graph in ("decoder_int8.onnx", "normaliser_int8.onnx"):
        proto = onnx.load(str(root / "onnx" / graph))
        assert "MatMulInteger" in {node.op_type for node in proto.graph.node}
        # the output projection (d_model x the choosable ids) is an int8 weight, not a float32 one
        shapes = {(tensor.data_type, tuple(tensor.dims)) for tensor in proto.graph.initializer}
        assert (onnx.TensorProto.INT8, (nat.config.d_model, choosable)) in shapes
        assert not any(dims and choosable in dims for kind, dims in shapes if kind == onnx.TensorProto.FLOAT)
    batch = _batch(tokenizer)
    for knobs in ({}, {"length_beam": 3}):
        out = int8.generate(**batch, **knobs, return_dict_in_generate=True)
        ids, lengths = out.sequences, out.lengths
        assert ids.shape == (len(SOURCES), int(lengths.max()))
        positions = torch.arange(ids.shape[1])[None, :]
        eos, pad = nat.config.eos_token_id, nat.config.pad_token_id
        assert torch.equal(ids.eq(eos), positions == (lengths - 1)[:, None])  # one EOS, at L - 1
        assert bool(ids[positions >= lengths[:, None]].eq(pad).all())
        special = torch.tensor(nat._special_ids)
        assert not bool(torch.isin(ids[positions < (lengths - 1)[:, None]], special).any())
        assert int(lengths[2]) == 1  # the empty source


def test_export_folder_loads_with_auto_classes(uniform_copy):
    nat, root = uniform_copy
    folder = root / "onnx"
    manifest = json.loads((folder / "onnx_export.json").read_text())
    assert manifest["exporter"] == "torch.onnx.export(dynamo=True)" and set(manifest["graphs"]) == {"float32", "int8"}
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "em_nat" and config.d_model == nat.config.d_model
    assert AutoTokenizer.from_pretrained(folder)("the cat sees the house .")["input_ids"]
    with pytest.raises(ValueError, match="not an ONNX export of a NAT"):
        OnnxNAT.from_pretrained(root / "nat")
    with pytest.raises(FileExistsError, match="already exists"):
        export_onnx(root / "nat", folder)


@pytest.mark.parametrize("knobs", [{}, {"length_beam": 3, "odd": False}])
def test_pipeline_with_the_onnx_nat_translates_as_with_the_pytorch_nat(uniform_copy, knobs):
    nat, root = uniform_copy
    onnx_nat = OnnxNAT.from_pretrained(root / "onnx", precision="float32", intra_op_num_threads=1)
    texts = [text for text in SOURCES if text]
    reference = pipeline("translation", model=nat, tokenizer=AutoTokenizer.from_pretrained(root / "nat"))
    translator = pipeline("translation", model=onnx_nat, tokenizer=AutoTokenizer.from_pretrained(root / "onnx"))
    assert isinstance(translator, em_nat.TranslationPipeline) and "OnnxNAT" in repr(translator)
    expected = reference(texts, **knobs)
    assert translator(texts, **knobs) == expected
    assert translator(texts, batch_size=2, **knobs) == reference(texts, batch_size=2, **knobs)
    assert translator(texts[0], **knobs) == [expected[0]]


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda tmp: ["onnx", str(tmp / "missing"), str(tmp / "out")], "no config.json); pass the NAT's folder"),
        (lambda tmp: ["onnx", str(tmp / "ar"), str(tmp / "out")], "does not hold an em-nat NAT"),
        (lambda tmp: ["onnx", str(tmp / "nat"), str(tmp / "nat")], "already exists; pass --force"),
    ],
)
def test_onnx_cli_refuses_bad_folders(tmp_path, make_args, message, capsys):
    for name, model_type in (("ar", "marian"), ("nat", "em_nat")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(SystemExit) as exit_info:
        export.main(make_args(tmp_path))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


class _Refusing:
    """Stands in for the normaliser session: fails the test if it is run."""

    def run(self, *args, **kwargs):
        raise AssertionError("the normaliser graph ran where no score was needed")


def test_the_normaliser_graph_runs_only_when_scores_are_needed(float32_pair, tokenizer):
    nat, onnx_nat = float32_pair
    batch = _batch(tokenizer)
    expected = nat.generate(**batch, length_beam=3, return_dict_in_generate=True)
    normaliser, onnx_nat._normaliser = onnx_nat._normaliser, _Refusing()
    try:
        assert torch.equal(onnx_nat.generate(**batch), nat.generate(**batch))  # ODD and argmax need no normaliser
        assert torch.equal(onnx_nat.generate(**batch, odd=False), nat.generate(**batch, odd=False))
        rescorer = LongestWins(tokenizer)  # rescoring every candidate: the NAT's scores choose nothing
        expected_rescored = nat.generate(**batch, length_beam=3, rescorer=rescorer)
        assert torch.equal(onnx_nat.generate(**batch, length_beam=3, rescorer=rescorer), expected_rescored)
        with pytest.raises(AssertionError, match="no score was needed"):
            onnx_nat.generate(**batch, length_beam=3)  # ranked by the NAT's own scores
        with pytest.raises(AssertionError, match="no score was needed"):
            onnx_nat.generate(**batch, length_beam=3, rescorer=rescorer, rescore_top_k=2)  # pruned by them
    finally:
        onnx_nat._normaliser = normaliser
    got = onnx_nat.generate(**batch, length_beam=3, return_dict_in_generate=True)
    torch.testing.assert_close(got.sequences_scores, expected.sequences_scores, rtol=1e-4, atol=1e-4)


def test_an_export_of_an_older_layout_is_refused_with_the_command_that_redoes_it(uniform_copy, tmp_path):
    _, root = uniform_copy
    old = tmp_path / "old-export"
    shutil.copytree(root / "onnx", old)
    manifest = json.loads((old / "onnx_export.json").read_text())
    manifest["format_version"] = 1
    (old / "onnx_export.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ValueError, match=r"an older em-nat wrote it\); export the NAT again: python -m em_nat.export onnx"
    ):
        OnnxNAT.from_pretrained(old)


def test_generate_many_gives_generate_s_outputs_in_order(float32_pair, tokenizer):
    _, onnx_nat = float32_pair
    groups = [[text] for text in SOURCES] + [SOURCES[:2]]
    batches = [dict(tokenizer(group, return_tensors="pt", padding=True)) for group in groups]
    expected = [onnx_nat.generate(**batch, length_beam=3) for batch in batches]
    assert len(batches) >= 3
    for workers in (1, 2, 3):
        got = onnx_nat.generate_many(batches, workers=workers, length_beam=3)
        assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected))
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        onnx_nat.generate_many(batches, workers=0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--onnx", "/no/such", "--ct2", "/x", "--source", "README.md"], "--onnx /no/such: not an ONNX export"),
        (["--onnx", "{onnx}", "--ct2", "tests", "--source", "README.md"], "--ct2 tests: not a CTranslate2 model"),
        (["--onnx", "{onnx}", "--ct2", "{ct2}", "--source", "/no/file"], "--source /no/file: no such file"),
        (["--onnx", "{onnx}", "--ct2", "{ct2}", "--source", "README.md", "--sentences", "0"], "must be >= 1, got 0"),
        (["--onnx", "{onnx}", "--ct2", "{ct2}", "--source", "README.md", "--batch-size", "1"], "must be >= 2, got 1"),
    ],
)
def test_onnx_profile_script_refuses_bad_input_before_loading(uniform_copy, tmp_path, argv, message):
    import subprocess
    import sys
    from pathlib import Path

    _, root = uniform_copy
    (tmp_path / "ct2").mkdir()
    (tmp_path / "ct2" / "model.bin").write_bytes(b"")
    argv = [a.format(onnx=root / "onnx", ct2=tmp_path / "ct2") for a in argv]
    project = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(project / "examples" / "profile_onnx.py"), *argv],
        capture_output=True,
        text=True,
        cwd=project,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_onnx_profile_batch_feeds_and_op_shares(uniform_copy, tokenizer):
    """The large-batch part of examples/profile_onnx.py: the decoder feeds are generate()'s (its ODD output follows
    from them), and the profiler's op shares of each graph add up to the whole."""
    import importlib.util
    from pathlib import Path

    from em_nat.modeling.decoding import odd_decode

    path = Path(__file__).resolve().parents[1] / "examples" / "profile_onnx.py"
    spec = importlib.util.spec_from_file_location("profile_onnx", path)
    profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile)
    _, root = uniform_copy
    onnx_nat = OnnxNAT.from_pretrained(root / "onnx", precision="int8", intra_op_num_threads=1)
    batch = _batch(tokenizer)
    feeds = profile._batch_feeds(onnx_nat, batch)
    values, ids, _ = onnx_nat._decoder.run(None, feeds["decoder"])
    lengths = torch.from_numpy(feeds["decoder"]["target_mask"]).sum(-1)
    tokens, _ = odd_decode(torch.from_numpy(values)[..., :3], torch.from_numpy(ids)[..., :3], lengths - 1)
    expected = onnx_nat.generate(**batch)
    for row, length, out in zip(tokens.tolist(), lengths.tolist(), expected.tolist()):
        assert out[: length - 1] == row[: length - 1] and out[length - 1] == onnx_nat.config.eos_token_id
    shares = profile._op_shares(str(root / "onnx"), "int8", [batch])
    assert set(shares) == {"encoder", "decoder"}
    for pairs in shares.values():
        assert pairs and sum(share for _, share in pairs) == pytest.approx(1.0)
        assert [share for _, share in pairs] == sorted((share for _, share in pairs), reverse=True)
