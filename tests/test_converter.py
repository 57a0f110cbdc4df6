"""converters.torchvision: finding checkpoints, refusing bad ones with one clear message each."""

import os

import numpy as np
import pytest
import torch

import jaxvis
from conftest import run_module
from converters import checkpoint as ckpt
from converters import vgg as vgg_remap
from converters.torchvision import convert
from jaxvis import models

ARCH = "vgg11"


@pytest.fixture(scope="module")
def good_state():
    """A vgg11 state_dict with the right keys and shapes (values are irrelevant to these checks)."""
    expected, _ = vgg_remap.expected_keys(models.arch_spec(ARCH))
    g = torch.Generator().manual_seed(0)
    return {k: 0.01 * torch.randn(shape, generator=g) for k, shape in expected.items()}


def _convert_error(tmp_path, state_or_bytes, arch=ARCH) -> str:
    src = tmp_path / "in.pth"
    if isinstance(state_or_bytes, bytes):
        src.write_bytes(state_or_bytes)
    else:
        torch.save(state_or_bytes, src)
    with pytest.raises(ckpt.CheckpointError) as e:
        convert(arch, str(src), str(tmp_path / "out.safetensors"), log=lambda *_: None)
    assert not (tmp_path / "out.safetensors").exists()
    return str(e.value)


def test_missing_extra_and_misshaped_keys_are_all_listed(tmp_path, good_state):
    state = dict(good_state)
    del state["features.3.weight"]
    del state["classifier.3.bias"]
    state["features.99.weight"] = torch.zeros(3)
    state["classifier.6.weight"] = torch.zeros(10, 4096)
    state["classifier.6.bias"] = torch.zeros(10)
    msg = _convert_error(tmp_path, state)
    assert "does not match torchvision's vgg11" in msg
    assert "missing keys (2): classifier.3.bias, features.3.weight" in msg
    assert "unexpected keys (1): features.99.weight" in msg
    assert ("wrong shapes (2): classifier.6.bias (10,) (expected (1000,)); "
            "classifier.6.weight (10, 4096) (expected (1000, 4096))") in msg


@pytest.mark.parametrize("change,expect", [
    ("missing", "missing keys (1): features.0.bias"),
    ("extra", "unexpected keys (1): extra.weight"),
    ("shape", "wrong shapes (1): features.0.weight (64, 3, 5, 5) (expected (64, 3, 3, 3))"),
])
def test_each_key_problem_alone(tmp_path, good_state, change, expect):
    state = dict(good_state)
    if change == "missing":
        del state["features.0.bias"]
    elif change == "extra":
        state["extra.weight"] = torch.zeros(1)
    else:
        state["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    assert expect in _convert_error(tmp_path, state)


def test_checkpoint_of_another_architecture(tmp_path, good_state):
    msg = _convert_error(tmp_path, good_state, arch="vgg11_bn")
    assert "does not match torchvision's vgg11_bn" in msg and "missing keys (38)" in msg
    assert msg.endswith("it fits torchvision's vgg11: pass --arch vgg11.")


def test_whole_pickled_model_is_refused(tmp_path):
    import torchvision

    model = torchvision.models.vgg11(weights=None)
    src = tmp_path / "model.pth"
    torch.save(model, src)
    with pytest.raises(ckpt.CheckpointError, match=r"pickle that needs to run code.*torch.save\(model.state_dict\(\)"):
        convert(ARCH, str(src), str(tmp_path / "out.safetensors"), log=lambda *_: None)


class _Payload:
    """Unpickling this object would create a file: what a malicious checkpoint does."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned.txt"
    src = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Payload(str(marker))}, src)
    assert not marker.exists()
    with pytest.raises(ckpt.CheckpointError, match=r"needs to run code"):
        convert(ARCH, str(src), str(tmp_path / "out.safetensors"), log=lambda *_: None)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"hello, this is a text file\n", b"", bytes(range(256)) * 64])
def test_file_that_is_not_a_checkpoint(tmp_path, content):
    msg = _convert_error(tmp_path, content)
    assert "is not a PyTorch checkpoint" in msg or "is empty" in msg


def test_truncated_checkpoint(tmp_path, good_state):
    src = tmp_path / "full.pth"
    small = {k: v for k, v in good_state.items() if not k.startswith("classifier.0")}
    torch.save(small, src)
    data = src.read_bytes()
    msg = _convert_error(tmp_path, data[: len(data) // 2])
    assert "is not a PyTorch checkpoint, or it is truncated" in msg


def test_state_dict_wrapped_or_from_data_parallel_is_accepted(tmp_path, good_state):
    torch.save({"state_dict": {f"module.{k}": v for k, v in good_state.items()}, "epoch": 3}, tmp_path / "w.pth")
    out = convert(ARCH, str(tmp_path / "w.pth"), str(tmp_path / "w.safetensors"), log=lambda *_: None)
    model = jaxvis.load(out)
    np.testing.assert_array_equal(np.asarray(model.params["params"]["fc8"]["bias"]),
                                  good_state["classifier.6.bias"].numpy())
    assert model.spec.source == "w.pth"
    assert model.spec.source_sha256 == ckpt.sha256(str(tmp_path / "w.pth"))


def test_non_finite_checkpoint_is_refused(tmp_path, good_state):
    state = dict(good_state)
    state["classifier.0.weight"] = torch.full((4096, 25088), float("nan"))
    assert "NaN or infinite values in classifier.0.weight" in _convert_error(tmp_path, state)


def test_remap_round_trip():
    for arch in ("vgg11", "vgg13_bn"):
        spec = models.arch_spec(arch)
        # the dense layers' width changes their shapes, not their keys or layout: narrowed, the round trip of
        # every key (fc6's flatten order included) costs 10M numbers instead of 130M
        spec = spec.replace(config=dict(spec.config, fc_width=64))
        expected, optional = vgg_remap.expected_keys(spec)
        rng = np.random.default_rng(0)
        state = {k: rng.random(s, dtype=np.float32) for k, s in expected.items() if k not in optional}
        back = vgg_remap.to_torch(vgg_remap.from_torch(state, spec), spec)
        assert set(back) == set(state)
        for k in state:
            np.testing.assert_array_equal(back[k], state[k], err_msg=k)


def test_fc6_kernel_in_blocks_is_the_one_pass_permutation():
    w6 = np.random.default_rng(1).random((13, 5 * 3 * 2), dtype=np.float32)  # 13 outputs: blocks of 4 and a rest
    one_pass = w6.reshape(13, 5, 3, 2).transpose(2, 3, 1, 0).reshape(-1, 13)
    for block in (4, 13, 64):
        np.testing.assert_array_equal(vgg_remap._fc6_kernel(w6, 5, 3, 2, block=block), one_pass)


def test_locate_says_what_to_fetch_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    where = os.path.join(str(tmp_path / "th"), "hub", "checkpoints", "vgg16-397923af.pth")
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.locate("vgg16", None, allow_download=False)
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in str(e.value) and where in str(e.value)

    def offline(url, dst):
        raise OSError("network is unreachable")

    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.locate("vgg16", None, fetch=offline)
    assert "downloading it failed (network is unreachable)" in str(e.value) and where in str(e.value)

    def corrupt(url, dst):
        with open(dst, "wb") as f:
            f.write(b"not the file")

    with pytest.raises(ckpt.CheckpointError, match=r"does not start with 397923af"):
        ckpt.locate("vgg16", None, fetch=corrupt)
    assert not os.path.exists(where)

    with pytest.raises(ckpt.CheckpointError, match=r"does not exist"):
        ckpt.locate("vgg16", str(tmp_path / "missing.pth"))


@pytest.mark.slow  # full-size VGG checkpoints through the CLI
def test_cli_finds_the_hub_cache_and_reports_errors_in_one_line(tmp_path, good_state):
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(good_state, hub / "vgg11-8a719046.pth")
    env = {"TORCH_HOME": str(tmp_path / "th")}
    out = tmp_path / "vgg11.safetensors"
    proc = run_module("converters.torchvision", "--arch", "vgg11", "--out", str(out), "--nodownload", env=env)
    assert "carries torchvision's hash prefix 8a719046" in proc.stdout  # a locally made file, not torchvision's
    assert jaxvis.load(out).spec.source == "vgg11-8a719046.pth"

    proc = run_module("converters.torchvision", "--arch", "vgg13", "--out", str(tmp_path / "x.safetensors"),
                      "--nodownload", env=env, check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: vgg13-19584684.pth is not in torch hub's cache")
    assert "https://download.pytorch.org/models/vgg13-19584684.pth" in last

    proc = run_module("converters.torchvision", "--arch", "vgg11", "--out", str(out), "--nodownload",
                      env=env, check=False)
    assert proc.returncode == 1 and "exists; pass --overwrite" in proc.stderr
