"""NATGenerationConfig: the NAT's typed decoding settings, checked in one place, saved as a stock generation config."""

import json
import os
import re
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, GenerationConfig

from em_nat.modeling import NATForConditionalGeneration, NATGenerationConfig

KNOBS = {"length_beam": 5, "odd": False, "odd_top_k": 4, "rescore_alpha": 1.25}
# generation_config.json as the NAT wrote it before the config was typed (special token ids set per test)
OLD_FORMAT = {
    "_from_model_config": False,
    "length_beam": 1,
    "odd": True,
    "odd_top_k": 3,
    "output_attentions": False,
    "output_hidden_states": False,
    "rescore_alpha": 0.6,
    "transformers_version": "5.25.0",
}


def old_format(nat, **knobs) -> dict:
    ids = {name: getattr(nat.config, name) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return {**OLD_FORMAT, **ids, **knobs}


def knobs_of(config) -> dict:
    return {name: getattr(config, name) for name in KNOBS}


def test_the_model_holds_a_typed_config_with_the_defaults(nat):
    assert isinstance(nat.generation_config, NATGenerationConfig)
    assert knobs_of(nat.generation_config) == {"length_beam": 1, "odd": True, "odd_top_k": 3, "rescore_alpha": 0.6}
    assert nat.generation_config.max_length is None


BAD_SETTINGS = [
    ("length_beam", 0, "NATGenerationConfig.length_beam must be an integer >= 1, got 0."),
    ("length_beam", 2.5, "NATGenerationConfig.length_beam must be an integer >= 1, got 2.5."),
    ("odd_top_k", 1, "NATGenerationConfig.odd_top_k must be an integer >= 2, got 1."),
    ("odd", "yes", "NATGenerationConfig.odd must be True or False, got 'yes'."),
    (
        "rescore_alpha",
        -0.5,
        "NATGenerationConfig.rescore_alpha must be a number >= 0 (the GNMT length-penalty exponent), got -0.5.",
    ),
    ("max_length", 0, "NATGenerationConfig.max_length must be an integer >= 1 or None, got 0."),
    ("max_new_tokens", 0, "NATGenerationConfig.max_new_tokens must be an integer >= 1 or None, got 0."),
    ("min_length", -1, "NATGenerationConfig.min_length must be an integer >= 0 or None, got -1."),
]


@pytest.mark.parametrize("name, value, message", BAD_SETTINGS)
def test_a_bad_setting_is_named_with_its_value_and_range_wherever_it_is_given(nat, batch, name, value, message):
    match = "^" + re.escape(message) + "$"
    with pytest.raises(ValueError, match=match):
        NATGenerationConfig(**{name: value})
    with pytest.raises(ValueError, match=match):
        nat.generate(batch["input_ids"], **{name: value})
    stock = GenerationConfig()
    setattr(stock, name, value)  # a stock config does not check the NAT knobs
    with pytest.raises(ValueError, match=match):
        nat.generate(batch["input_ids"], generation_config=stock)
    if name != "max_length":  # the model's own max_length is not used by generate() (see below)
        setattr(nat.generation_config, name, value)  # set directly, bypassing update(): caught at generate()
        with pytest.raises(ValueError, match=match):
            nat.generate(batch["input_ids"])


def test_min_length_above_a_cap_is_refused():
    with pytest.raises(ValueError, match=r"^NATGenerationConfig.min_length \(5\) must be <= max_length \(3\)\.$"):
        NATGenerationConfig(min_length=5, max_length=3)
    with pytest.raises(ValueError, match=r"^NATGenerationConfig.min_length \(5\) must be <= max_new_tokens \(4\)\.$"):
        NATGenerationConfig(min_length=5, max_new_tokens=4)


def test_named_knobs_a_given_config_and_the_models_own_decode_alike(nat, batch):
    enc = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    by_name = nat.generate(**enc, length_beam=3, odd=False)
    assert not torch.equal(by_name, nat.generate(**enc))  # the knobs change the output: the checks below have teeth
    assert torch.equal(nat.generate(**enc, generation_config=NATGenerationConfig(length_beam=3, odd=False)), by_name)
    assert torch.equal(nat.generate(**enc, generation_config=GenerationConfig(length_beam=3, odd=False)), by_name)
    given = NATGenerationConfig(length_beam=5, odd=True)
    assert torch.equal(nat.generate(**enc, generation_config=given, length_beam=3, odd=False), by_name)  # names win
    nat.generation_config.update(length_beam=3, odd=False)
    assert torch.equal(nat.generate(**enc), by_name)


def test_generate_leaves_the_configs_it_reads_unchanged(nat, batch):
    given = NATGenerationConfig(length_beam=3)
    own_before, given_before = nat.generation_config.to_dict(), given.to_dict()
    nat.generate(batch["input_ids"], generation_config=given, length_beam=2, odd=False, max_length=6)
    nat.generate(batch["input_ids"], odd_top_k=5, min_length=2)
    assert nat.generation_config.to_dict() == own_before
    assert given.to_dict() == given_before


def test_the_models_own_max_length_is_no_cap(nat, batch):
    """Seq2SeqTrainer writes transformers' default max_length (20) into the model's generation config; a cap comes
    from generate() or an explicit generation config."""
    enc = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    free = nat.generate(**enc, return_dict_in_generate=True)
    assert int(free.lengths.max()) > 2
    nat.generation_config.max_length = 2
    assert torch.equal(nat.generate(**enc), free.sequences)
    assert nat.generate(**enc, max_length=2).shape[1] <= 2
    assert nat.generate(**enc, generation_config=NATGenerationConfig(max_length=2)).shape[1] <= 2


def test_stock_generate_arguments_are_ignored_and_misspelt_knobs_refused(nat, batch):
    enc = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    plain = nat.generate(**enc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # values that leave stock decoding as it is: no warning
        quiet = nat.generate(
            **enc,
            num_beams=1,
            do_sample=False,
            use_cache=True,
            synced_gpus=False,
            output_scores=False,
            pad_token_id=nat.config.pad_token_id,
            labels=batch["labels"],
        )
    assert torch.equal(quiet, plain)
    with pytest.warns(UserWarning, match=r"ignores temperature=0\.5"):
        assert torch.equal(nat.generate(**enc, temperature=0.5), plain)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['odd_topk'\]"):
        nat.generate(**enc, odd_topk=2)


def test_saved_file_is_a_stock_generation_config_in_the_old_format(nat, tmp_path):
    nat.generation_config.update(**KNOBS)
    nat.save_pretrained(tmp_path)
    stock = GenerationConfig.from_pretrained(tmp_path)
    assert type(stock) is GenerationConfig
    assert knobs_of(stock) == KNOBS
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert set(saved) == set(old_format(nat)) | {"rescore_top_k"}  # the old keys, and the knob added since
    assert saved["rescore_top_k"] is None
    assert (tmp_path / "generation_config_nat.py").is_file()  # the code trust_remote_code users load


def test_from_pretrained_gives_back_the_typed_config(nat, batch, tmp_path):
    nat.generation_config.update(**KNOBS, max_new_tokens=7)
    nat.save_pretrained(tmp_path)
    for loaded in (
        NATForConditionalGeneration.from_pretrained(tmp_path),
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path),
    ):
        assert isinstance(loaded.generation_config, NATGenerationConfig)
        assert knobs_of(loaded.generation_config) == KNOBS
        assert loaded.generation_config.max_new_tokens == 7
        assert torch.equal(loaded.generate(batch["input_ids"]), nat.generate(batch["input_ids"]))
    loaded.save_pretrained(tmp_path / "again")  # saved back unchanged
    assert knobs_of(GenerationConfig.from_pretrained(tmp_path / "again")) == KNOBS


@pytest.mark.parametrize("written", ["old format", "without knobs", "no file"])
def test_folders_saved_before_the_typed_config_still_load(nat, batch, tmp_path, written):
    nat.save_pretrained(tmp_path)
    path = tmp_path / "generation_config.json"
    expected = {"length_beam": 1, "odd": True, "odd_top_k": 3, "rescore_alpha": 0.6}
    if written == "old format":
        expected = {"length_beam": 3, "odd": False, "odd_top_k": 3, "rescore_alpha": 0.6}
        path.write_text(json.dumps(old_format(nat, length_beam=3, odd=False)))
    elif written == "without knobs":
        path.write_text(json.dumps({k: v for k, v in old_format(nat).items() if k not in KNOBS}))
    else:
        path.unlink()
    loaded = NATForConditionalGeneration.from_pretrained(tmp_path)
    assert isinstance(loaded.generation_config, NATGenerationConfig)
    assert knobs_of(loaded.generation_config) == expected
    assert torch.equal(loaded.generate(batch["input_ids"]), nat.generate(batch["input_ids"], **expected))


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockEmNat(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "em_nat" or name.startswith("em_nat."):
                raise ImportError("em_nat is blocked in this interpreter")

    sys.meta_path.insert(0, BlockEmNat())
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(sys.argv[1], trust_remote_code=True)
    config = model.generation_config
    knobs = {name: getattr(config, name) for name in ("length_beam", "odd", "odd_top_k", "rescore_alpha")}
    print(json.dumps({"class": type(config).__name__, "module": type(config).__module__, "knobs": knobs}))
    """
)


def test_remote_code_loads_the_typed_config_where_em_nat_is_not_importable(nat, tmp_path):
    nat.generation_config.update(**KNOBS)
    nat.save_pretrained(tmp_path / "nat")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(tmp_path / "nat")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["class"] == "NATGenerationConfig" and result["module"].startswith("transformers_modules")
    assert result["knobs"] == KNOBS
