"""Params files: round trip, and one clear error for each way a file can be wrong."""

import json
import struct

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

import jaxvis
from jaxvis import params as params_io
from jaxvis.params import ParamsFileError
from jaxvis.spec import ModelSpec
from tiny import random_variables

TINY = ModelSpec(arch="tiny_vgg", family="vgg",
                 config={"blocks": [[4], [8, 8]], "batch_norm": True, "num_classes": 3, "fc_width": 16,
                         "pool_size": [2, 2]},
                 input_size=(32, 32), resize="squash", resize_size=None, labels=("a", "b", "c"))


@pytest.fixture
def tiny_file(tmp_path):
    # random values everywhere, batch statistics included, so a loader that drops any would be caught
    variables = random_variables(jaxvis.models.build(TINY), (1, 32, 32, 3), 0)
    path = tmp_path / "tiny.safetensors"
    params_io.save(path, variables, TINY)
    return path, variables


def test_round_trip_keeps_values_spec_and_outputs(tiny_file):
    path, variables = tiny_file
    model = jaxvis.load(path)
    assert model.spec == TINY
    flat_in, flat_out = params_io.flatten(variables), params_io.flatten(model.params)
    assert set(flat_in) == set(flat_out)
    assert "batch_stats/bn2_2/var" in flat_out
    for k in flat_in:
        np.testing.assert_array_equal(np.asarray(flat_in[k]), np.asarray(flat_out[k]))
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    want = jaxvis.models.build(TINY).apply(variables, x)[0]
    np.testing.assert_array_equal(np.asarray(model.apply(model.params, x)[0]), np.asarray(want))
    _, metadata = params_io.read_header(path)
    assert metadata["jaxvis_version"] == jaxvis.__version__
    assert json.loads(metadata["spec"])["arch"] == "tiny_vgg"


def test_missing_file(tmp_path):
    with pytest.raises(ParamsFileError, match=r"does not exist; convert a checkpoint"):
        jaxvis.load(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("keep", [0, 5, 8 + 40, -100])
def test_truncated_file(tiny_file, tmp_path, keep):
    path, _ = tiny_file
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(ParamsFileError, match=r"truncated"):
        jaxvis.load(cut)


def test_not_a_safetensors_file(tmp_path):
    bad = tmp_path / "photo.safetensors"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(ParamsFileError, match=r"is not a safetensors file"):
        jaxvis.load(bad)


def test_corrupt_header(tmp_path):
    bad = tmp_path / "bad.safetensors"
    header = b"{not json}"
    bad.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ParamsFileError, match=r"unreadable header"):
        jaxvis.load(bad)


def test_safetensors_without_jaxvis_metadata(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(other))
    with pytest.raises(ParamsFileError, match=r"not a jaxvis params file.*converters.torchvision"):
        jaxvis.load(other)


def test_non_finite_values_are_named(tiny_file, tmp_path):
    _, variables = tiny_file
    flat = params_io.flatten(variables)
    flat = {k: np.array(v) for k, v in flat.items()}
    flat["params/fc8/kernel"][0, 0] = np.nan
    flat["params/conv1_1/bias"][1] = np.inf
    path = tmp_path / "nan.safetensors"
    params_io.save(path, params_io.unflatten(flat), TINY)
    with pytest.raises(ParamsFileError, match=r"non-finite.*2 tensor\(s\): params/conv1_1/bias, params/fc8/kernel"):
        jaxvis.load(path)


def test_other_architecture_than_asked(tiny_file):
    path, _ = tiny_file
    with pytest.raises(ParamsFileError, match=r"holds a tiny_vgg but vgg16 was asked for"):
        jaxvis.load(path, arch="vgg16")


def test_tensors_that_do_not_fit_the_spec(tiny_file, tmp_path):
    _, variables = tiny_file
    flat = {k: np.array(v) for k, v in params_io.flatten(variables).items()}
    flat["params/fc8/kernel"] = np.zeros((16, 5), np.float32)
    del flat["params/fc7/bias"]
    path = tmp_path / "misfit.safetensors"
    params_io.save(path, params_io.unflatten(flat), TINY)
    with pytest.raises(ParamsFileError, match=r"(?s)missing tensors \(1\): params/fc7/bias.*"
                       r"wrong shapes \(1\): params/fc8/kernel \(16, 5\) \(expected \(16, 3\)\)"):
        jaxvis.load(path)


def test_save_is_atomic_and_leaves_no_partial_file(tiny_file, tmp_path, monkeypatch):
    path, variables = tiny_file
    before = path.read_bytes()
    import os
    real_replace = os.replace

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        params_io.save(path, jax.tree.map(lambda a: a * 2, variables), TINY)
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]
