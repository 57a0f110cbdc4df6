"""The oneDNN convolutions (jaxvis.conv) against XLA's and PyTorch's, values and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax

from jaxvis import conv, native
from jaxvis.native import build

NHWC = ("NHWC", "HWIO", "NHWC")


def test_kernels_are_used_where_they_can_be_built():
    # make test installs oneDNN and builds the kernels on x86-64 Linux; where a compiler and oneDNN's
    # headers are present they must load (built on first use if missing), and a failure must show here.
    reason = build.cannot_build(native.onednn_prefix())
    if reason:
        pytest.skip(reason)
    assert conv.onednn_available(), conv.unavailable_reason()


needs_onednn = pytest.mark.skipif(not conv.onednn_available(), reason="oneDNN kernels not built")


def _conv(backend, stride=(1, 1), padding="SAME", dilation=(1, 1)):
    return functools.partial(conv.conv_general_dilated, window_strides=stride, padding=padding,
                             rhs_dilation=dilation, dimension_numbers=NHWC, backend=backend)


def _uses_onednn(fn, *args) -> bool:
    return "jaxvis_conv_forward" in jax.jit(fn).lower(*args).as_text()


def _rel(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


GEOMETRIES = [
    # (input NHWC, kernel HWIO, stride, padding, dilation, through oneDNN): VGG's 3x3, SSD's dilated
    # fc6, its stride-2 and valid extras, 1x1, odd sizes. The last, with asymmetric padding and mixed
    # strides and dilations, has a direct oneDNN kernel on some CPUs only (AVX-512 ones have one, AVX2
    # ones not): None there, it goes wherever oneDNN's answer for this CPU sends it.
    ((2, 17, 13, 16), (3, 3, 16, 24), (1, 1), "SAME", (1, 1), True),
    ((1, 19, 19, 32), (3, 3, 32, 16), (1, 1), ((6, 6), (6, 6)), (6, 6), True),
    ((2, 19, 19, 8), (3, 3, 8, 16), (2, 2), ((1, 1), (1, 1)), (1, 1), True),
    ((1, 5, 5, 8), (3, 3, 8, 4), (1, 1), "VALID", (1, 1), True),
    ((3, 9, 11, 12), (1, 1, 12, 20), (1, 1), "VALID", (1, 1), True),
    # Asymmetric padding and H != W in stride, dilation and kernel, so that a swap of top and bottom
    # or of H and W shows; SAME at stride 2 on an even size pads (0, 1); VALID at stride 2 on 8 and 9
    # leaves input rows and columns that no output reads (their gradient must be zero).
    ((1, 12, 10, 16), (3, 3, 16, 16), (1, 1), ((1, 2), (0, 1)), (1, 1), True),
    ((1, 12, 10, 16), (3, 3, 16, 16), (1, 1), ((2, 2), (1, 1)), (2, 1), True),
    ((1, 12, 10, 16), (3, 1, 16, 16), (2, 1), ((1, 1), (0, 0)), (1, 1), True),
    ((2, 8, 8, 8), (3, 3, 8, 16), (2, 2), "SAME", (1, 1), True),
    ((2, 8, 9, 8), (3, 3, 8, 8), (2, 2), "VALID", (1, 1), True),
    ((1, 10, 12, 3), (3, 5, 3, 8), (2, 1), ((0, 2), (1, 3)), (1, 2), None),
]


@needs_onednn
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, direct", GEOMETRIES)
def test_values_and_gradients_match_xla_and_torch(x_shape, w_shape, stride, padding, dilation, direct):
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[:3])), jnp.float32)
    fast, ref = _conv("onednn", stride, padding, dilation), _conv("xla", stride, padding, dilation)
    if direct is None:
        direct = conv._has_direct_kernel(x_shape, w_shape, conv._attrs(x_shape, w_shape, stride, padding, dilation))
    assert _uses_onednn(fast, x, w) == direct and not _uses_onednn(ref, x, w)

    y = jax.jit(fast)(x, w)
    y_ref = ref(x, w)
    assert y.shape == y_ref.shape
    assert _rel(y, y_ref) < 1e-5

    # A constant cotangent (the gradient of a sum) as well as a random one.
    ones = jax.jit(jax.grad(lambda x: jnp.sum(fast(x, w))))(x)
    assert _rel(ones, jax.grad(lambda x: jnp.sum(ref(x, w)))(x)) < 1e-5
    cot = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    dx, dw = jax.jit(jax.grad(lambda x, w: jnp.vdot(fast(x, w), cot), argnums=(0, 1)))(x, w)
    dx_ref, dw_ref = jax.grad(lambda x, w: jnp.vdot(ref(x, w), cot), argnums=(0, 1))(x, w)
    assert _rel(dx, dx_ref) < 1e-5 and _rel(dw, dw_ref) < 1e-5

    # And against PyTorch's autograd in float64.
    pads = padding if not isinstance(padding, str) else lax.padtype_to_pads(
        x_shape[1:3], [(k - 1) * d + 1 for k, d in zip(w_shape[:2], dilation)], stride, padding)
    xt = torch.tensor(np.asarray(x, np.float64).transpose(0, 3, 1, 2), requires_grad=True)
    wt = torch.tensor(np.asarray(w, np.float64).transpose(3, 2, 0, 1))
    (top, bottom), (left, right) = pads
    yt = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (left, right, top, bottom)), wt,
                                    stride=stride, dilation=dilation)
    yt.backward(torch.tensor(np.asarray(cot, np.float64).transpose(0, 3, 1, 2)))
    assert _rel(y, jnp.asarray(yt.detach().numpy().transpose(0, 2, 3, 1), jnp.float32)) < 1e-5
    assert _rel(dx, jnp.asarray(xt.grad.numpy().transpose(0, 2, 3, 1), jnp.float32)) < 1e-5


@needs_onednn
def test_vmap_over_images_over_kernels_and_over_both():
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((4, 1, 12, 12, 8)), jnp.float32)
    ws = jnp.asarray(rng.standard_normal((4, 3, 3, 8, 6)) * 0.2, jnp.float32)
    fast, ref = _conv("onednn"), _conv("xla")

    def loss(f):
        return lambda x, w: jnp.sum(jnp.sin(f(x, w)))

    cases = [((0, None), (xs, ws[0])), ((None, 0), (xs[0], ws)), ((0, 0), (xs, ws))]
    for in_axes, args in cases:
        got = jax.jit(jax.vmap(jax.value_and_grad(loss(fast), argnums=(0, 1)), in_axes=in_axes))(*args)
        want = jax.vmap(jax.value_and_grad(loss(ref), argnums=(0, 1)), in_axes=in_axes)(*args)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert a.shape == b.shape
            assert _rel(a, b) < 1e-5, in_axes
    # Nested vmaps: a grid of images by kernels.
    got = jax.jit(jax.vmap(jax.vmap(fast, (None, 0)), (0, None)))(xs, ws)
    want = jax.vmap(jax.vmap(ref, (None, 0)), (0, None))(xs, ws)
    assert got.shape == (4, 4, 1, 12, 12, 6) and _rel(got, want) < 1e-5


@needs_onednn
def test_other_cases_fall_back_to_xla():
    x = jnp.ones((1, 8, 8, 4), jnp.float32)
    w = jnp.ones((3, 3, 4, 4), jnp.float32)
    f = _conv("auto")
    assert _uses_onednn(f, x, w)
    assert not _uses_onednn(f, x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
    nchw = functools.partial(conv.conv_general_dilated, window_strides=(1, 1), padding="SAME",
                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
    assert not _uses_onednn(nchw, jnp.ones((1, 4, 8, 8)), jnp.ones((4, 4, 3, 3)))
    grouped = functools.partial(conv.conv_general_dilated, window_strides=(1, 1), padding="SAME",
                                dimension_numbers=NHWC, feature_group_count=2)
    assert not _uses_onednn(grouped, x, jnp.ones((3, 3, 2, 4)))
    # Float64 (the port tests' gradients) stays on XLA.
    with jax.enable_x64(True):
        assert not _uses_onednn(f, x.astype(jnp.float64), w.astype(jnp.float64))


@needs_onednn
def test_geometries_without_a_direct_kernel_go_to_xla(monkeypatch):
    x = jnp.ones((1, 8, 8, 4), jnp.float32)
    w = jnp.ones((3, 3, 4, 4), jnp.float32)
    assert _uses_onednn(_conv("onednn"), x, w)
    with conv.record_xla_convolutions() as found:
        jax.eval_shape(_conv("auto"), x, w)
    assert found == []
    monkeypatch.setattr(conv, "_has_direct_kernel", lambda *args: False)  # as oneDNN answers for them
    assert not _uses_onednn(_conv("onednn"), x, w) and not _uses_onednn(_conv("auto"), x, w)
    with conv.record_xla_convolutions() as found:  # what the engine reads to choose its steps loop
        jax.eval_shape(_conv("auto"), x, w)
        jax.eval_shape(_conv("xla"), x, w)  # asked of XLA: not recorded
    assert found == [((1, 8, 8, 4), (3, 3, 4, 4))]


@needs_onednn
def test_accelerator_lowering_has_no_cpu_kernel():
    # One traced program serves every platform: lowered for CUDA it holds XLA's convolution only.
    x = jnp.ones((1, 8, 8, 4), jnp.float32)
    w = jnp.ones((3, 3, 4, 4), jnp.float32)
    f = jax.jit(jax.grad(lambda x: jnp.sum(_conv("auto")(x, w) ** 2)))
    cuda = f.trace(x).lower(lowering_platforms=("cuda",)).as_text()
    cpu = f.trace(x).lower(lowering_platforms=("cpu",)).as_text()
    assert "jaxvis_conv" not in cuda and "convolution" in cuda
    assert "jaxvis_conv_forward" in cpu and "jaxvis_conv_backward_data" in cpu


def test_bad_backend_is_refused():
    x = jnp.ones((1, 8, 8, 4), jnp.float32)
    with pytest.raises(ValueError, match="one of"):
        conv.conv_general_dilated(x, x[:3, :3], (1, 1), "SAME", dimension_numbers=NHWC, backend="mkl")


@needs_onednn
@pytest.mark.slow  # VGG11 at full size
def test_vgg_logits_through_onednn_match_torchvision(converted_vgg):
    import jaxvis
    from torch_ref import nchw

    tmodel, _, path = converted_vgg("vgg11")
    model = jaxvis.load(path)
    x = np.random.default_rng(3).standard_normal((2, 64, 80, 3)).astype(np.float32)
    fn = jax.jit(lambda p, x: model.module.apply(p, x)[0])
    assert "jaxvis_conv_forward" in fn.lower(model.params, x).as_text()
    got = np.asarray(fn(model.params, x))
    with torch.no_grad():
        want = tmodel(nchw(x)).numpy()
    assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want))


@needs_onednn
def test_concurrent_calls_on_eight_cpu_devices(tmp_path):
    # Sharded over 8 host devices, XLA runs the kernels on 8 threads at once: each call must keep its
    # scratch memory to itself.
    import os
    import subprocess
    import sys
    import textwrap

    from conftest import ROOT

    script = textwrap.dedent("""
        import numpy as np, jax, jax.numpy as jnp
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from jaxvis import conv
        assert len(jax.devices()) == 8
        mesh = Mesh(np.array(jax.devices()), ("points",))
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((8, 1, 56, 56, 64)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((3, 3, 64, 64)) * 0.05, jnp.float32)
        def fn(backend):
            c = lambda xi, w: conv.conv_general_dilated(xi, w, (1, 1), "SAME",
                                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), backend=backend)
            return jax.vmap(jax.value_and_grad(lambda xi, w: jnp.sum(jnp.sin(c(xi, w)))), in_axes=(0, None))
        xs = jax.device_put(x, NamedSharding(mesh, P("points")))
        for _ in range(3):
            got = jax.jit(fn("onednn"))(xs, w)
            want = fn("xla")(x, w)
            for a, b in zip(got, want):
                err = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
                assert err < 1e-5, err
        print("ok")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
