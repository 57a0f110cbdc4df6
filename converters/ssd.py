"""SSD300 state_dicts (torchvision's ``ssd300_vgg16`` and amdegroot/ssd.pytorch's VOC model) <-> jaxvis
SSD variables: key and layout remaps only (numpy)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from jaxvis.spec import ModelSpec

_BACKBONE = ("1_1", "1_2", "2_1", "2_2", "3_1", "3_2", "3_3", "4_1", "4_2", "4_3", "5_1", "5_2", "5_3")
_VGG_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _names(layout: str, n_extras: int, n_maps: int) -> dict[str, str]:
    """jaxvis layer name -> torch key prefix, for the conv layers."""
    names = {}
    for name, idx in zip(_BACKBONE, _VGG_INDEX):
        if layout == "torchvision":
            names[f"conv{name}"] = f"backbone.features.{idx}" if idx < 23 else f"backbone.extra.0.{idx - 23}"
        else:
            names[f"conv{name}"] = f"vgg.{idx}"
    if layout == "torchvision":
        names["fc6"], names["fc7"] = "backbone.extra.0.7.1", "backbone.extra.0.7.3"
    else:
        names["fc6"], names["fc7"] = "vgg.31", "vgg.33"
    for j in range(n_extras):
        for k, sub in enumerate(("1", "2")):
            key = f"backbone.extra.{j + 1}.{2 * k}" if layout == "torchvision" else f"extras.{2 * j + k}"
            names[f"conv{j + 8}_{sub}"] = key
    for i in range(n_maps):
        if layout == "torchvision":
            names[f"cls_head_{i}"] = f"head.classification_head.module_list.{i}"
            names[f"box_head_{i}"] = f"head.regression_head.module_list.{i}"
        else:
            names[f"cls_head_{i}"] = f"conf.{i}"
            names[f"box_head_{i}"] = f"loc.{i}"
    return names


def layout_of(spec: ModelSpec) -> str:
    return "amdegroot" if spec.arch.endswith("_voc") else "torchvision"


def _scale_key(layout: str) -> str:
    return "backbone.scale_weight" if layout == "torchvision" else "L2Norm.weight"


def _shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """jaxvis layer name -> torch conv weight shape (O, I, kH, kW)."""
    cfg = spec.config
    widths = [w for block in cfg["blocks"] for w in block]
    shapes, cin = {}, 3
    for name, w in zip(_BACKBONE, widths):
        shapes[f"conv{name}"] = (w, cin, 3, 3)
        cin = w
    fc = cfg["fc_width"]
    shapes["fc6"], shapes["fc7"] = (fc, cin, 3, 3), (fc, fc, 1, 1)
    map_channels = [widths[9], fc]
    cin = fc
    for j, (mid, out, _, _) in enumerate(cfg["extras"]):
        shapes[f"conv{j + 8}_1"] = (mid, cin, 1, 1)
        shapes[f"conv{j + 8}_2"] = (out, mid, 3, 3)
        map_channels.append(out)
        cin = out
    for i, (c, a) in enumerate(zip(map_channels, cfg["anchors_per_location"])):
        shapes[f"cls_head_{i}"] = (a * cfg["num_classes"], c, 3, 3)
        shapes[f"box_head_{i}"] = (a * 4, c, 3, 3)
    return shapes


def expected_keys(spec: ModelSpec) -> tuple[dict[str, tuple[int, ...]], frozenset[str]]:
    layout = layout_of(spec)
    shapes = _shapes(spec)
    names = _names(layout, len(spec.config["extras"]), len(spec.config["anchors_per_location"]))
    keys = {_scale_key(layout): (spec.config["blocks"][3][-1],)}
    for name, shape in shapes.items():
        keys[f"{names[name]}.weight"] = shape
        keys[f"{names[name]}.bias"] = (shape[0],)
    return keys, frozenset()


def from_torch(state: Mapping[str, np.ndarray], spec: ModelSpec) -> dict[str, Any]:
    """Variables for ``jaxvis.models.ssd.SSD`` from a (key-checked) state_dict in either layout."""
    layout = layout_of(spec)
    names = _names(layout, len(spec.config["extras"]), len(spec.config["anchors_per_location"]))
    params: dict[str, Any] = {"conv4_3_scale": np.ascontiguousarray(state[_scale_key(layout)], np.float32)}
    for name, key in names.items():
        params[name] = {
            "kernel": np.ascontiguousarray(np.asarray(state[f"{key}.weight"], np.float32).transpose(2, 3, 1, 0)),
            "bias": np.ascontiguousarray(state[f"{key}.bias"], np.float32),
        }
    return {"params": params}


def to_torch(variables: Mapping[str, Any], spec: ModelSpec, layout: str | None = None) -> dict[str, np.ndarray]:
    """The inverse remap, into either layout (``"torchvision"`` or ``"amdegroot"``)."""
    layout = layout or layout_of(spec)
    params = variables["params"]
    names = _names(layout, len(spec.config["extras"]), len(spec.config["anchors_per_location"]))
    state = {_scale_key(layout): np.asarray(params["conv4_3_scale"])}
    for name, key in names.items():
        state[f"{key}.weight"] = np.ascontiguousarray(np.asarray(params[name]["kernel"]).transpose(3, 2, 0, 1))
        state[f"{key}.bias"] = np.asarray(params[name]["bias"])
    return state
