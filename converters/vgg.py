"""torchvision VGG state_dict <-> jaxvis VGG variables: a pure key and layout remap (numpy only)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from jaxvis.spec import ModelSpec


def _layers(spec: ModelSpec):
    """(name, torch_index, width) of every conv in torchvision's ``features`` numbering."""
    cfg = spec.config
    bn = cfg.get("batch_norm", False)
    index, out = 0, []
    for b, widths in enumerate(cfg["blocks"], start=1):
        for i, width in enumerate(widths, start=1):
            out.append((f"{b}_{i}", index, width))
            index += 3 if bn else 2
        index += 1  # max-pool
    return out


def expected_keys(spec: ModelSpec) -> tuple[dict[str, tuple[int, ...]], frozenset[str]]:
    """torchvision's state_dict keys and shapes for this VGG, and the keys that may be absent."""
    cfg = spec.config
    keys: dict[str, tuple[int, ...]] = {}
    optional = set()
    cin = 3
    for _, idx, width in _layers(spec):
        keys[f"features.{idx}.weight"] = (width, cin, 3, 3)
        keys[f"features.{idx}.bias"] = (width,)
        if cfg.get("batch_norm", False):
            for p in ("weight", "bias", "running_mean", "running_var"):
                keys[f"features.{idx + 1}.{p}"] = (width,)
            keys[f"features.{idx + 1}.num_batches_tracked"] = ()
            optional.add(f"features.{idx + 1}.num_batches_tracked")
        cin = width
    ph, pw = cfg.get("pool_size", (7, 7))
    fc = cfg.get("fc_width", 4096)
    for idx, (n_out, n_in) in zip((0, 3, 6), ((fc, cin * ph * pw), (fc, fc), (cfg["num_classes"], fc))):
        keys[f"classifier.{idx}.weight"] = (n_out, n_in)
        keys[f"classifier.{idx}.bias"] = (n_out,)
    return keys, frozenset(optional)


def from_torch(state: Mapping[str, np.ndarray], spec: ModelSpec) -> dict[str, Any]:
    """Variables for ``jaxvis.models.vgg.VGG`` from a torchvision VGG state_dict (already key-checked)."""
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for name, idx, _ in _layers(spec):
        params[f"conv{name}"] = {
            "kernel": f32(state[f"features.{idx}.weight"]).transpose(2, 3, 1, 0),  # OIHW -> HWIO
            "bias": f32(state[f"features.{idx}.bias"]),
        }
        if spec.config.get("batch_norm", False):
            bn = f"features.{idx + 1}"
            params[f"bn{name}"] = {"scale": f32(state[f"{bn}.weight"]), "bias": f32(state[f"{bn}.bias"])}
            stats[f"bn{name}"] = {"mean": f32(state[f"{bn}.running_mean"]), "var": f32(state[f"{bn}.running_var"])}
    # fc6 reads torchvision's NCHW flatten (c*H*W + h*W + w); the Flax model flattens NHWC, so the
    # kernel's input axis is permuted once here: K[(h*W + w)*C + c, o] = W[o, c*H*W + h*W + w].
    w6 = f32(state["classifier.0.weight"])
    ph, pw = spec.config.get("pool_size", (7, 7))
    channels = w6.shape[1] // (ph * pw)
    k6 = _fc6_kernel(w6, channels, ph, pw)
    for name, idx, kernel in (("fc6", 0, k6), ("fc7", 3, None), ("fc8", 6, None)):
        if kernel is None:
            kernel = f32(state[f"classifier.{idx}.weight"]).T
        params[name] = {"kernel": np.ascontiguousarray(kernel), "bias": f32(state[f"classifier.{idx}.bias"])}
    params = {k: {n: np.ascontiguousarray(a) for n, a in v.items()} for k, v in params.items()}
    variables: dict[str, Any] = {"params": params}
    if stats:
        variables["batch_stats"] = stats
    return variables


def _fc6_kernel(w6: np.ndarray, channels: int, ph: int, pw: int, block: int = 64) -> np.ndarray:
    """fc6's (C*H*W, O) kernel in NHWC flatten order from torchvision's (O, C*H*W) weight, copied ``block``
    outputs at a time: the one-pass copy reads the weight with a stride of a whole row per element written,
    three times slower on VGG16's 100M numbers than blocks that stay in the caches."""
    n_out = w6.shape[0]
    k6 = np.empty((w6.shape[1], n_out), np.float32)
    for lo in range(0, n_out, block):
        part = w6[lo:lo + block]
        k6[:, lo:lo + block] = part.reshape(len(part), channels, ph, pw).transpose(2, 3, 1, 0).reshape(-1, len(part))
    return k6


def to_torch(variables: Mapping[str, Any], spec: ModelSpec) -> dict[str, np.ndarray]:
    """The inverse remap: jaxvis VGG variables -> a torchvision-layout state_dict (numpy arrays)."""
    params = variables["params"]
    state: dict[str, np.ndarray] = {}
    for name, idx, _ in _layers(spec):
        state[f"features.{idx}.weight"] = np.asarray(params[f"conv{name}"]["kernel"]).transpose(3, 2, 0, 1)
        state[f"features.{idx}.bias"] = np.asarray(params[f"conv{name}"]["bias"])
        if spec.config.get("batch_norm", False):
            bn, stats = params[f"bn{name}"], variables["batch_stats"][f"bn{name}"]
            state[f"features.{idx + 1}.weight"] = np.asarray(bn["scale"])
            state[f"features.{idx + 1}.bias"] = np.asarray(bn["bias"])
            state[f"features.{idx + 1}.running_mean"] = np.asarray(stats["mean"])
            state[f"features.{idx + 1}.running_var"] = np.asarray(stats["var"])
    ph, pw = spec.config.get("pool_size", (7, 7))
    k6 = np.asarray(params["fc6"]["kernel"])
    channels = k6.shape[0] // (ph * pw)
    state["classifier.0.weight"] = k6.reshape(ph, pw, channels, -1).transpose(3, 2, 0, 1).reshape(k6.shape[1], -1)
    state["classifier.0.bias"] = np.asarray(params["fc6"]["bias"])
    for name, idx in (("fc7", 3), ("fc8", 6)):
        state[f"classifier.{idx}.weight"] = np.asarray(params[name]["kernel"]).T
        state[f"classifier.{idx}.bias"] = np.asarray(params[name]["bias"])
    return {k: np.ascontiguousarray(v) for k, v in state.items()}
