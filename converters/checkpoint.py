"""Finding and safely reading PyTorch checkpoints.

A checkpoint is read with ``torch.load(..., weights_only=True)``: a pickle that would need to run code
(a whole pickled ``nn.Module``, or a crafted file) is refused before anything in it runs. A state_dict
stored as safetensors is read without torch.
"""

from __future__ import annotations

import os
import re
import urllib.request
from typing import Callable, Mapping

import numpy as np

from jaxvis.fileio import sha256  # noqa: F401  (part of this module's interface)

TORCHVISION_URL = "https://download.pytorch.org/models/"

# torchvision's checkpoint file for each architecture (the suffix is the start of the file's sha256).
TORCHVISION_FILES = {
    "vgg11": "vgg11-8a719046.pth",
    "vgg13": "vgg13-19584684.pth",
    "vgg16": "vgg16-397923af.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
    "vgg11_bn": "vgg11_bn-6002323d.pth",
    "vgg13_bn": "vgg13_bn-abd245e5.pth",
    "vgg16_bn": "vgg16_bn-6c64b313.pth",
    "vgg19_bn": "vgg19_bn-c79401a0.pth",
    "ssd300_vgg16": "ssd300_vgg16_coco-b556d3b4.pth",
}

# Checkpoints published outside torchvision: fetched by hand, then given with --checkpoint.
OTHER_FILES = {
    "ssd300_vgg16_voc": "ssd300_mAP_77.43_v2.pth (linked from the README of github.com/amdegroot/ssd.pytorch)",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, read, or matched to the architecture asked for."""


def hash_prefix(file_name: str) -> str | None:
    """The sha256 prefix torchvision puts in its file names (``vgg16-397923af.pth`` -> ``397923af``)."""
    m = re.search(r"-([0-9a-f]{8,})\.pth$", file_name)
    return m.group(1) if m else None


def hub_checkpoint_dir() -> str:
    """torch hub's checkpoint folder: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/...)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return os.path.join(torch_home, "hub", "checkpoints")


def download(url: str, dst: str, timeout: float = 30.0) -> None:
    """Downloads ``url`` to ``dst`` through a temporary file in the same folder."""
    from jaxvis.fileio import atomic_write

    def copy(out):
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            for block in iter(lambda: resp.read(2**20), b""):
                out.write(block)

    atomic_write(dst, copy)


def locate(arch: str, checkpoint: str | None, allow_download: bool = True,
           fetch: Callable[[str, str], None] = download) -> str:
    """The checkpoint to convert: the given path, else torch hub's cache, else a download.

    When nothing works, the error names the file to fetch and where to put it.
    """
    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise CheckpointError(f"checkpoint {checkpoint!r} does not exist (or is not a file).")
        return checkpoint
    if arch in OTHER_FILES:
        raise CheckpointError(f"{arch} weights are not on torchvision's server: fetch {OTHER_FILES[arch]} "
                              "and pass it with --checkpoint PATH.")
    try:
        name = TORCHVISION_FILES[arch]
    except KeyError:
        raise CheckpointError(f"no published checkpoint is known for {arch!r}; pass --checkpoint.") from None
    cached = os.path.join(hub_checkpoint_dir(), name)
    if os.path.isfile(cached):
        return cached
    url = TORCHVISION_URL + name
    advice = (f"download {url} on a machine with internet access and put it at {cached} "
              f"(or anywhere, and pass --checkpoint PATH).")
    if not allow_download:
        raise CheckpointError(f"{name} is not in torch hub's cache ({cached}) and downloading is off; {advice}")
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        fetch(url, cached)
    except Exception as e:  # noqa: BLE001 - any failure ends in the same advice
        raise CheckpointError(f"{name} is not in torch hub's cache and downloading it failed ({e}); "
                              f"{advice}") from None
    prefix = hash_prefix(name)
    digest = sha256(cached)
    if prefix and not digest.startswith(prefix):
        os.unlink(cached)
        raise CheckpointError(f"downloaded {name} but its sha256 {digest[:12]}… does not start with {prefix}; "
                              f"the download was corrupted, try again or {advice}")
    return cached


def _unwrap(obj, path: str) -> Mapping:
    """A state_dict, possibly under a "state_dict"/"model" key or with DataParallel's "module." prefix."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{path!r} holds a {type(obj).__name__}, not a state_dict (a dict of tensors); save the weights "
            "with torch.save(model.state_dict(), path)."
        )
    if all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a checkpoint's tensors as float32/int numpy arrays, never executing pickled code."""
    with open(path, "rb") as f:
        head = f.read(8)
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return dict(load_file(path))
        except SafetensorError as e:
            raise CheckpointError(f"{path!r} is not a readable safetensors file: {e}") from None
    if not head:
        raise CheckpointError(f"{path!r} is empty; expected a PyTorch checkpoint (.pth).")
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(
            f"{path!r} is not a PyTorch checkpoint (it is neither a torch.save zip archive nor a pickle); "
            "pass the .pth file of the network's state_dict."
        )
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise CheckpointError(
                f"{path!r} is a pickle that needs to run code to load (for example a whole model saved with "
                "torch.save(model)), and jaxvis only reads plain state_dicts; in a trusted environment, "
                "re-save it with torch.save(model.state_dict(), path)."
            ) from None
        raise CheckpointError(f"{path!r} is not a PyTorch checkpoint, or it is truncated ({e}).") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds on damaged files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path!r} is not a PyTorch checkpoint, or it is truncated ({first}).") from None
    state = _unwrap(obj, path)
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path!r}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                                  "expected a state_dict of tensors.")
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        arrays[key] = value.numpy()
    return arrays


def check_keys(found: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]],
               optional: frozenset[str] = frozenset(), what: str = "the architecture") -> None:
    """Raises one CheckpointError that lists every missing, unexpected and mis-shaped key."""
    from jaxvis.params import describe_mismatches, shape_mismatches

    missing, unexpected, misshaped = shape_mismatches({k: v.shape for k, v in found.items()}, expected, optional)
    if not (missing or unexpected or misshaped):
        return
    lines = [f"the checkpoint does not match {what}:", *describe_mismatches(missing, unexpected, misshaped),
             "  check that --arch names the network the checkpoint was saved from."]
    raise CheckpointError("\n".join(lines))


def check_finite(found: Mapping[str, np.ndarray], path: str) -> None:
    from jaxvis.params import non_finite

    bad = non_finite(found)
    if bad:
        raise CheckpointError(
            f"{path!r} has NaN or infinite values in {', '.join(bad)}; a network with them gives no usable "
            "outputs (torchvision's vgg16_features-amdegroot checkpoint, for one, has no classifier)."
        )
