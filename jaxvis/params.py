"""Parameter pytrees on disk: safetensors files with the model spec in their metadata.

A file holds the model variables as flat tensors named by their path in the pytree
(``params/conv1_1/kernel``, ``batch_stats/bn1_1/mean``) and a metadata header with the spec (JSON),
the jaxvis version and the format version. Reading a file parses a JSON header and raw tensor bytes:
nothing in it is executed.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Mapping

import numpy as np

from jaxvis.fileio import atomic_write
from jaxvis.spec import ModelSpec, NewerSpecError

FORMAT = "jaxvis-params-1"
SEP = "/"
_MAX_HEADER = 100 * 2**20  # safetensors' own limit
# safetensors' floating-point dtypes; jaxvis writes F32 (integer counters such as torch's
# num_batches_tracked are not part of a jaxvis model: the converter leaves them out)
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
REWRITE = "write the file again (python -m converters.torchvision, or the script that trained the model)"


class ParamsFileError(ValueError):
    """A params file that cannot be read: missing, truncated, corrupt or not a jaxvis file."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict of leaves -> {"a/b/c": leaf}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if SEP in key:
            raise ValueError(f"parameter name {key!r} contains {SEP!r}, which separates path parts")
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + SEP))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a/b/c": array} -> nested dict."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split(SEP)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def save(path: str | os.PathLike, variables: Mapping[str, Any], spec: ModelSpec,
         extra_metadata: Mapping[str, str] | None = None) -> None:
    """Writes ``variables`` and ``spec`` to ``path`` atomically (a partial file is never left behind)."""
    from safetensors.numpy import save as st_save

    from jaxvis import __version__

    tensors = {k: np.ascontiguousarray(v) for k, v in flatten(variables).items()}
    metadata = {"format": FORMAT, "jaxvis_version": __version__, "spec": spec.to_json()}
    for key, value in (extra_metadata or {}).items():
        if key in metadata:
            raise ValueError(f"metadata key {key!r} is reserved")
        metadata[key] = str(value)
    data = st_save(tensors, metadata=metadata)
    atomic_write(path, lambda f: f.write(data))


def shape_mismatches(found: Mapping[str, tuple], expected: Mapping[str, tuple], optional=frozenset()):
    """(missing, unexpected, misshaped) names of a set of tensors against the expected shapes; misshaped
    entries are (name, found shape, expected shape). All sorted."""
    missing = sorted(k for k in expected if k not in found and k not in optional)
    unexpected = sorted(k for k in found if k not in expected)
    misshaped = sorted((k, tuple(found[k]), tuple(expected[k]))
                       for k in expected if k in found and tuple(found[k]) != tuple(expected[k]))
    return missing, unexpected, misshaped


def describe_mismatches(missing, unexpected, misshaped, noun: str = "keys") -> list[str]:
    """Lines naming every missing, unexpected and mis-shaped tensor (as from ``shape_mismatches``)."""
    lines = []
    if missing:
        lines.append(f"  missing {noun} ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        lines.append(f"  unexpected {noun} ({len(unexpected)}): {', '.join(unexpected)}")
    if misshaped:
        lines.append(f"  wrong shapes ({len(misshaped)}): {'; '.join(f'{k} {f} (expected {e})' for k, f, e in misshaped)}")
    return lines


def non_finite(tensors: Mapping[str, Any]) -> list[str]:
    """Sorted names of the floating-point tensors that hold NaN or infinity."""
    return sorted(k for k, v in tensors.items()
                  if np.issubdtype(np.asarray(v).dtype, np.floating) and not np.isfinite(v).all())


def check_family(spec: ModelSpec, path: str) -> None:
    """Raises ParamsFileError unless jaxvis has a module family of the spec's name."""
    from jaxvis.models import FAMILIES

    if spec.family not in FAMILIES:
        raise ParamsFileError(
            f"{path!r} has an unusable model spec in its metadata: family must be one of {', '.join(FAMILIES)}; "
            f"got {spec.family!r}; the file comes from a newer jaxvis (upgrade jaxvis) or is damaged."
        )


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Checks the file's framing and returns (tensor table, metadata) without reading tensor data."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ParamsFileError(f"params file {path!r} does not exist; convert a checkpoint with "
                              "`python -m converters.torchvision --arch ... --out FILE` first.")
    if os.path.isdir(path):
        raise ParamsFileError(f"{path!r} is a directory; expected a .safetensors params file.")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ParamsFileError(f"{path!r} is {size} bytes long, too short to be a safetensors file "
                                  "(truncated or empty); convert the checkpoint again.")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > _MAX_HEADER:
            raise ParamsFileError(f"{path!r} is not a safetensors file (its first 8 bytes give a header of "
                                  f"{n} bytes); expected a file written by jaxvis or converters.torchvision.")
        if 8 + n > size:
            raise ParamsFileError(f"{path!r} is truncated: its header alone needs {8 + n} bytes but the file "
                                  f"has {size}; copy or convert it again.")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ParamsFileError(f"{path!r} is not a safetensors file (unreadable header: {e}).") from None
    if not isinstance(header, dict):
        raise ParamsFileError(f"{path!r} is not a safetensors file (header is not a JSON object).")
    metadata = header.pop("__metadata__", None) or {}
    end = 0
    for name, entry in header.items():
        try:
            start, stop = entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise ParamsFileError(f"{path!r} is corrupt: tensor {name!r} has no valid data_offsets.") from None
        end = max(end, stop)
    if 8 + n + end > size:
        raise ParamsFileError(f"{path!r} is truncated: its tensors need {8 + n + end} bytes but the file has "
                              f"{size}; copy or convert it again.")
    return header, metadata


def load(path: str | os.PathLike) -> tuple[dict[str, Any], ModelSpec, dict[str, str]]:
    """Reads a params file: (variables as nested dict of numpy arrays, spec, metadata).

    Raises ParamsFileError, with what was expected and what to do, for a missing, truncated or corrupt
    file, a safetensors file that jaxvis did not write, a spec field with an unusable value (checked
    before any tensor is read), tensors that are not floating-point, and parameters that are not finite.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = os.fspath(path)
    table, metadata = read_header(path)
    if metadata.get("format") != FORMAT:
        raise ParamsFileError(
            f"{path!r} is a safetensors file but not a jaxvis params file (metadata format "
            f"{metadata.get('format')!r}, expected {FORMAT!r}); convert torchvision checkpoints with "
            "`python -m converters.torchvision`."
        )
    try:
        spec = ModelSpec.from_json(metadata["spec"])
    except KeyError:
        raise ParamsFileError(f"{path!r} has no model spec in its metadata; convert the checkpoint again.") from None
    except NewerSpecError as e:
        raise ParamsFileError(f"{path!r} has a model spec this jaxvis cannot read: {e}") from None
    except (ValueError, TypeError) as e:
        raise ParamsFileError(f"{path!r} has an unusable model spec in its metadata: {e}; the file is damaged or "
                              f"was edited by hand: {REWRITE}.") from None
    check_family(spec, path)
    not_float = sorted(f"{name} ({entry.get('dtype')})" for name, entry in table.items()
                       if not isinstance(entry, dict) or entry.get("dtype") not in FLOAT_DTYPES)
    if not_float:
        raise ParamsFileError(
            f"{path!r} has {len(not_float)} tensor(s) that are not floating-point: {', '.join(not_float)}; "
            f"jaxvis parameters are floating-point ({', '.join(FLOAT_DTYPES)}) and an integer tensor would be "
            "cast without a word: the file was not written by jaxvis or converters.torchvision, or is damaged: "
            f"{REWRITE}."
        )
    try:
        flat = load_file(path)
    except SafetensorError as e:
        raise ParamsFileError(f"{path!r} is corrupt: {e}; copy or convert it again.") from None
    bad = non_finite(flat)
    if bad:
        raise ParamsFileError(
            f"{path!r} has non-finite values (NaN or inf) in {len(bad)} tensor(s): {', '.join(bad)}; "
            "the checkpoint it came from is broken or is a partial (features-only) checkpoint."
        )
    return unflatten(flat), spec, dict(metadata)
