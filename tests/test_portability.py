"""save_pretrained / from_pretrained, Auto classes, and loading a saved folder where em_nat cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer

import em_nat
from em_nat import NATForConditionalGeneration, NATModel


@pytest.fixture
def saved(nat, tokenizer, tmp_path):
    folder = tmp_path / "nat"
    nat.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_save_load_round_trip_is_strict_and_exact(nat, saved, batch):
    assert (saved / "model.safetensors").is_file()
    loaded, info = NATForConditionalGeneration.from_pretrained(saved, output_loading_info=True)
    assert info["missing_keys"] == [] or info["missing_keys"] == set()
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    for name, tensor in nat.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert loaded.lm_head.weight is loaded.model.shared.weight
    assert torch.equal(loaded.generate(batch["input_ids"]), nat.generate(batch["input_ids"]))


def test_auto_classes_resolve_to_the_nat(saved):
    assert isinstance(AutoConfig.from_pretrained(saved), em_nat.NATConfig)
    assert isinstance(AutoModelForSeq2SeqLM.from_pretrained(saved), NATForConditionalGeneration)
    assert isinstance(AutoModel.from_pretrained(saved), NATModel)


def test_base_model_loads_from_the_full_checkpoint(nat, saved):
    base = AutoModel.from_pretrained(saved)
    assert torch.equal(base.shared.weight, nat.model.shared.weight)
    assert torch.equal(base.length_slot, nat.model.length_slot)


def test_saved_folder_carries_code_auto_map_and_pipeline(saved):
    for name in ("configuration_nat.py", "modeling_nat.py", "decoding.py", "pipeline_translation.py"):
        assert (saved / name).is_file(), name
    config = json.loads((saved / "config.json").read_text())
    assert config["auto_map"]["AutoConfig"] == "configuration_nat.NATConfig"
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_nat.NATForConditionalGeneration"
    assert config["custom_pipelines"]["translation"]["impl"] == "pipeline_translation.TranslationPipeline"
    assert json.loads((saved / "generation_config.json").read_text())["length_beam"] == 1


def test_generation_config_round_trips_decoding_knobs(nat, tmp_path):
    nat.generation_config.length_beam = 5
    nat.generation_config.odd = False
    nat.save_pretrained(tmp_path / "m")
    loaded = NATForConditionalGeneration.from_pretrained(tmp_path / "m")
    assert loaded.generation_config.length_beam == 5 and loaded.generation_config.odd is False


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockEmNat(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "em_nat" or name.startswith("em_nat."):
                raise ImportError("em_nat is blocked in this interpreter")

    sys.meta_path.insert(0, BlockEmNat())
    try:
        import em_nat  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("em_nat is importable: the test would prove nothing")

    import torch
    from transformers import AutoModelForSeq2SeqLM, pipeline

    folder, ids = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True)
    out = model.generate(torch.tensor(ids))
    translator = pipeline("translation", model=folder, trust_remote_code=True)
    single = translator("the cat sees the house .")
    batch = translator(["a dog likes the garden .", "my friend paints a red ball ."])
    print(json.dumps({"ids": out.tolist(), "module": type(model).__module__, "single": single, "batch": batch}))
    """
)


def test_folder_loads_and_generates_where_em_nat_is_not_importable(nat, saved, batch, tmp_path):
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    ids = batch["input_ids"][:, :5].tolist()  # unpadded rows
    proc = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(saved), json.dumps(ids)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules"), result["module"]
    assert result["ids"] == nat.generate(torch.tensor(ids)).tolist()
    local = em_nat.TranslationPipeline(model=nat, tokenizer=AutoTokenizer.from_pretrained(saved))
    assert result["single"] == local("the cat sees the house .")
    assert result["batch"] == local(["a dog likes the garden .", "my friend paints a red ball ."])
