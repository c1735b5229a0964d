"""Checkpoint averaging: the element-wise mean of the weights of the last k checkpoints of one training run.

Averaging the last checkpoints is what small-data translation recipes use to smooth the end of training (fairseq's
`average_checkpoints.py`, Vaswani et al. 2017). It works for any model, AR or NAT: the checkpoints are files written
by `save_state_dict` (a `torch.save`d state dict) or folders written by `save_pretrained` (`model.safetensors`).
"""

import os

import torch
from safetensors.torch import load_file


def save_state_dict(model: torch.nn.Module, path: str) -> None:
    """Write `model`'s weights to `path` atomically (written aside, then renamed), so a kill never leaves half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)


def load_state_dict(path: str) -> dict:
    """The weights in `path`: a `save_state_dict` file or a `save_pretrained` folder."""
    if os.path.isdir(path):
        weights = os.path.join(path, "model.safetensors")
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"{path} has no model.safetensors; pass save_pretrained folders or .pt files.")
        return load_file(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint at {path}.")
    return torch.load(path, map_location="cpu", weights_only=True)


def average_state_dicts(state_dicts: list[dict]) -> dict:
    """Element-wise mean of floating-point tensors (in float32, cast back); other tensors are taken from the first.

    Raises:
        ValueError: no state dicts, or their keys or shapes differ (checkpoints of different models).
    """
    if not state_dicts:
        raise ValueError("Nothing to average: no checkpoints given.")
    first = state_dicts[0]
    for index, other in enumerate(state_dicts[1:], start=1):
        if set(other) != set(first):
            differing = sorted(set(other) ^ set(first))[:5]
            raise ValueError(
                f"Checkpoint {index} has other weights than checkpoint 0 ({differing}...): not one model."
            )
        for key, value in other.items():
            if value.shape != first[key].shape:
                raise ValueError(
                    f"Checkpoint {index} has {key} of shape {tuple(value.shape)}, checkpoint 0 {tuple(first[key].shape)}."
                )
    averaged = {}
    for key, value in first.items():
        if value.is_floating_point():
            total = sum(sd[key].float() for sd in state_dicts)
            averaged[key] = (total / len(state_dicts)).to(value.dtype)
        else:
            averaged[key] = value.clone()
    return averaged


def average_checkpoints(paths: list[str]) -> dict:
    """The averaged weights of `paths` (`save_state_dict` files or `save_pretrained` folders), ready for
    `model.load_state_dict`."""
    return average_state_dicts([load_state_dict(path) for path in paths])
