"""A damaged weights file (a download, copy or save cut short) is an error that names the file and the fix, for the NAT
(`from_pretrained`, the Auto classes) and for any model loaded with `em_nat.models.load_pretrained` (the stock AR)."""

import re

import pytest
from safetensors import SafetensorError
from transformers import AutoModelForSeq2SeqLM

from em_nat import NATForConditionalGeneration
from em_nat.modeling.modeling_nat import check_weights_files, load_with_weights_check
from em_nat.models import load_pretrained

FIX = "download it again.*force_download=True.*save_pretrained"


@pytest.fixture
def nat_folder(nat, tokenizer, tmp_path):
    folder = tmp_path / "nat"
    nat.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def truncate(path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda data: data[: len(data) // 2], "truncated \\(\\d+ of the \\d+ bytes its header describes\\)"),
        (lambda data: data[:4], "truncated \\(4 bytes, shorter than its own header\\)"),
        (lambda data: data[:8] + b"x" * (len(data) - 8), "damaged \\(its header is not a valid safetensors header\\)"),
        (lambda data: data + b"\0" * 16, "damaged \\(16 stray bytes after the last tensor\\)"),
    ],
    ids=["cut-in-the-data", "cut-in-the-header", "garbage-header", "stray-bytes"],
)
def test_damaged_nat_weights_name_the_file_the_damage_and_the_fix(nat_folder, damage, problem):
    weights = nat_folder / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    message = (
        f"{re.escape(str(weights))} is {problem}: the download, copy or save that wrote it did not finish. Fix: {FIX}"
    )
    with pytest.raises(OSError, match=message):
        NATForConditionalGeneration.from_pretrained(nat_folder)
    with pytest.raises(OSError, match=problem):
        AutoModelForSeq2SeqLM.from_pretrained(nat_folder)  # the Auto class reaches the same check
    with pytest.raises(OSError, match=problem):
        load_pretrained(nat_folder)


def test_stray_bytes_are_refused_by_safetensors_too(nat_folder):
    """The check is no stricter than safetensors: it refuses what safetensors itself cannot read."""
    from safetensors import safe_open

    weights = nat_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b"\0" * 16)
    with pytest.raises(SafetensorError):
        safe_open(str(weights), framework="pt")


def test_truncated_ar_weights_are_named_by_load_pretrained(marian, tokenizer, tmp_path):
    folder = tmp_path / "ar"
    marian.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert type(load_pretrained(folder)) is type(marian)  # intact: loads
    weights = folder / "model.safetensors"
    truncate(weights, weights.stat().st_size - 100)
    with pytest.raises(OSError, match=f"{re.escape(str(weights))} is truncated .*{FIX}"):
        load_pretrained(folder)


def test_intact_folders_pass_the_check_sharded_ones_included(nat, tmp_path):
    nat.save_pretrained(tmp_path / "whole")
    check_weights_files(tmp_path / "whole")
    nat.save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1
    check_weights_files(tmp_path / "sharded")
    loaded = NATForConditionalGeneration.from_pretrained(tmp_path / "sharded")
    assert all((loaded.state_dict()[k] == v).all() for k, v in nat.state_dict().items())
    truncate(shards[-1], 100)
    with pytest.raises(OSError, match=f"{re.escape(str(shards[-1]))} is truncated"):
        NATForConditionalGeneration.from_pretrained(tmp_path / "sharded")


def test_a_damaged_download_names_the_repository_and_force_download():
    """Hub files are in the cache, not in a folder the caller named: safetensors' error is re-raised with the repo."""

    def load(name, **kwargs):
        raise SafetensorError("Error while deserializing header: MetadataIncompleteBuffer")

    expected = f"A weights file of user/nat is damaged \\(.*MetadataIncompleteBuffer\\)\\. Fix: {FIX}"
    with pytest.raises(OSError, match=expected):
        load_with_weights_check(load, "user/nat", revision="main")
