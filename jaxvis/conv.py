"""Convolutions for the models: XLA's everywhere, oneDNN's on CPUs where it is built.

``conv_general_dilated`` takes ``lax.conv_general_dilated``'s arguments, so a Flax ``nn.Conv`` can
use it directly. On a CPU, a float32 NHWC/HWIO convolution without groups or input dilation runs
through oneDNN (``jaxvis/native/conv_onednn.cc``), forward and input gradient; every other case, and
every other platform, is ``lax.conv_general_dilated``. The choice between the two is made when XLA
lowers for a platform (``lax.platform_dependent``), so one traced model serves CPUs and GPUs alike.
The kernel's gradient is XLA's in both cases (it is dropped when only the input gradient is needed,
as in class-model visualisation and saliency).

Backends: ``"auto"`` (oneDNN on CPUs where the kernels can be used, else XLA; which of the two is
logged once per process, at INFO on the ``jaxvis.conv`` logger), ``"onednn"`` (the same, but an error
where they cannot be used) and ``"xla"``. Models take the convolution as a function, a
``Convolution(backend)`` (``Model.with_conv_backend`` builds and injects one).

The kernels live in a versioned library in a per-user cache (``jaxvis.native``): it is loaded on first
use when its stamp matches this environment (jax, oneDNN, the source), built there first when it is
missing or stale and a compiler is present, and refused otherwise (XLA's convolutions are used, with a
warning that says what to do).

Reverse-mode derivatives (``grad``, ``vjp``) of any order-one use work through the oneDNN path;
forward mode (``jvp``, ``jacfwd``) and derivatives of derivatives do not: use ``"xla"`` for those.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import logging
import threading
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxvis import native

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onednn", "xla")
_NHWC = ("NHWC", "HWIO", "NHWC")
_lock = threading.Lock()
_registered: bool | None = None
_library = None
_library_path = None
_unavailable = ""  # why the kernels are not used, when they are not
_auto_logged = False
_recording = threading.local()  # lists that record_xla_convolutions() collects into


def onednn_available() -> bool:
    """Whether the oneDNN kernels are built and registered with XLA (loading them on first call, and
    building them into the cache first where they are missing or stale and a compiler is present)."""
    global _registered
    with _lock:
        if _registered is None:
            _registered = _register()
        return _registered


def unavailable_reason() -> str:
    """Why the oneDNN kernels are not used ("" when they are, or before ``onednn_available``)."""
    return _unavailable


def _register() -> bool:
    global _library, _library_path, _unavailable
    try:
        lib, path = native.load()
        supported, forward, backward = (
            lib.JaxvisConvSupported, lib.JaxvisConvForward, lib.JaxvisConvBackwardData)
    except (native.Unavailable, OSError, AttributeError) as err:
        _unavailable = str(err)
        # A library that should be there but is refused deserves a warning; no oneDNN at all (another
        # platform, the extra not installed) is an ordinary set-up.
        quiet = not native.supported_platform() or native.onednn_prefix() is None
        (log.info if quiet else log.warning)("jaxvis.conv: oneDNN kernels not used: %s", err)
        return False
    supported.restype = ctypes.c_int
    supported.argtypes = [ctypes.c_int64] * 15
    _library, _library_path = lib, path
    jax.ffi.register_ffi_target("jaxvis_conv_forward", jax.ffi.pycapsule(forward), platform="cpu")
    jax.ffi.register_ffi_target(
        "jaxvis_conv_backward_data", jax.ffi.pycapsule(backward), platform="cpu"
    )
    return True


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"conv backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "onednn" and not onednn_available():
        raise RuntimeError(
            f"conv backend 'onednn' asked for, but the oneDNN kernels cannot be used: {_unavailable} "
            "Or use backend 'auto' or 'xla'."
        )


@contextlib.contextmanager
def record_xla_convolutions():
    """Collects, while tracing inside the block, the convolutions that were asked of oneDNN ("auto" or
    "onednn") but run as XLA's on CPUs: not eligible (dtype, layout, groups) or without a direct oneDNN
    kernel. Yields the list, of (input shape, kernel shape) pairs; trace the function (e.g. with
    ``jax.eval_shape``) inside the block."""
    found: list[tuple[tuple, tuple]] = []
    stack = getattr(_recording, "stack", None)
    if stack is None:
        stack = _recording.stack = []
    stack.append(found)
    try:
        yield found
    finally:
        stack.remove(found)


def _log_auto_choice() -> None:
    """Says once per process which convolutions backend "auto" runs."""
    global _auto_logged
    if _auto_logged:
        return
    _auto_logged = True
    if onednn_available():
        log.info("jaxvis.conv: backend 'auto' runs float32 NHWC convolutions on CPUs through oneDNN (%s), "
                 "every other convolution and every other platform through XLA.", _library_path)
    else:
        log.info("jaxvis.conv: backend 'auto' runs every convolution through XLA (%s).", _unavailable)


@dataclasses.dataclass(frozen=True)
class Convolution:
    """A ``lax.conv_general_dilated`` for the models, through ``backend`` ("auto", "onednn", "xla").

    Models take it as their ``conv_general_dilated`` field and hand it to ``nn.Conv``; it compares
    and hashes by its backend, so modules built with it do too.
    """

    backend: str = "auto"

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"conv backend must be one of {BACKENDS}, got {self.backend!r}")

    def __call__(self, lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                 preferred_element_type=None):
        return conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type, backend=self.backend)

    def with_backend(self, backend: str) -> "Convolution":
        return dataclasses.replace(self, backend=backend)


def for_backend(backend: str) -> Convolution:
    """The convolution function for ``backend``, checked (an error for "onednn" where it is unavailable)."""
    check_backend(backend)
    return Convolution(backend)


def backend_of(fn) -> str | None:
    """The backend of a convolution function: its ``backend`` for a ``Convolution``, "xla" for
    ``lax.conv_general_dilated``, None for anything else."""
    if fn is lax.conv_general_dilated:
        return "xla"
    return getattr(fn, "backend", None)


def _is_nhwc(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
    return tuple(dimension_numbers) == _NHWC


def _attrs(x_shape, w_shape, window_strides, padding, rhs_dilation) -> tuple | None:
    """The kernel attributes of this convolution as hashable (name, value) pairs, or None where oneDNN
    cannot take it."""
    strides = tuple(int(s) for s in window_strides)
    dilation = tuple(int(d) for d in (rhs_dilation or (1, 1)))
    if len(strides) != 2 or len(dilation) != 2:
        return None
    if isinstance(padding, str):
        dilated = [(k - 1) * d + 1 for k, d in zip(w_shape[:2], dilation)]
        pads = lax.padtype_to_pads(x_shape[1:3], dilated, strides, padding)
    else:
        pads = [tuple(int(p) for p in pair) for pair in padding]
    if len(pads) != 2 or min(min(p) for p in pads) < 0:
        return None
    return (
        ("stride_h", strides[0]), ("stride_w", strides[1]),
        ("pad_top", int(pads[0][0])), ("pad_bottom", int(pads[0][1])),
        ("pad_left", int(pads[1][0])), ("pad_right", int(pads[1][1])),
        ("dilation_h", dilation[0]), ("dilation_w", dilation[1]),
    )  # fmt: skip


@functools.lru_cache(maxsize=None)
def _has_direct_kernel(x_shape: tuple, w_shape: tuple, attrs: tuple) -> bool:
    """Whether oneDNN has direct kernels (no im2col fallback) for this convolution."""
    a = dict(attrs)
    n, h, w, ci = x_shape
    kh, kw, _, co = w_shape
    return bool(_library.JaxvisConvSupported(
        n, h, w, ci, co, kh, kw, a["stride_h"], a["stride_w"], a["pad_top"], a["pad_bottom"],
        a["pad_left"], a["pad_right"], a["dilation_h"], a["dilation_w"]))  # fmt: skip


def _xla_conv(x, w, attrs):
    a = dict(attrs)
    return lax.conv_general_dilated(
        x,
        w,
        (a["stride_h"], a["stride_w"]),
        [(a["pad_top"], a["pad_bottom"]), (a["pad_left"], a["pad_right"])],
        rhs_dilation=(a["dilation_h"], a["dilation_w"]),
        dimension_numbers=_NHWC,
        precision=lax.Precision.HIGHEST,
    )


def _ffi_attrs(attrs: tuple) -> dict:
    """The attributes as the FFI handlers take them (64-bit integers)."""
    return {k: np.int64(v) for k, v in attrs}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _onednn_conv(x, w, attrs):
    return _onednn_forward(x, w, attrs)


def _onednn_forward(x, w, attrs):
    out = jax.eval_shape(functools.partial(_xla_conv, attrs=attrs), x, w)
    call = jax.ffi.ffi_call("jaxvis_conv_forward", out, vmap_method="expand_dims")
    return call(x, w, **_ffi_attrs(attrs))


def _onednn_fwd(x, w, attrs):
    return _onednn_forward(x, w, attrs), (x, w)


def _onednn_bwd(attrs, residuals, dy):
    x, w = residuals
    call = jax.ffi.ffi_call(
        "jaxvis_conv_backward_data",
        jax.ShapeDtypeStruct(x.shape, x.dtype),
        vmap_method="expand_dims",
    )
    dx = call(dy, w, **_ffi_attrs(attrs))
    _, kernel_vjp = jax.vjp(lambda w_: _xla_conv(x, w_, attrs), w)
    (dw,) = kernel_vjp(dy)
    return dx, dw


_onednn_conv.defvjp(_onednn_fwd, _onednn_bwd)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
    *,
    backend: str = "auto",
) -> jax.Array:
    """``lax.conv_general_dilated``, through oneDNN on CPUs where it can (see the module docstring)."""
    check_backend(backend)
    if backend == "auto":
        _log_auto_choice()
    xla = functools.partial(
        lax.conv_general_dilated,
        window_strides=window_strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    eligible = (
        backend != "xla"
        and onednn_available()
        and lhs.dtype == jnp.float32
        and rhs.dtype == jnp.float32
        and lhs.ndim == 4
        and rhs.ndim == 4
        and _is_nhwc(dimension_numbers)
        and feature_group_count == 1
        and batch_group_count == 1
        and all(int(d) == 1 for d in (lhs_dilation or (1, 1)))
        and preferred_element_type in (None, jnp.float32)
    )
    attrs = _attrs(lhs.shape, rhs.shape, window_strides, padding, rhs_dilation) if eligible else None
    if attrs is None or not _has_direct_kernel(tuple(lhs.shape), tuple(rhs.shape), attrs):
        for found in getattr(_recording, "stack", ()) if backend != "xla" else ():
            found.append((tuple(lhs.shape), tuple(rhs.shape)))
        return xla(lhs, rhs)
    return lax.platform_dependent(lhs, rhs, cpu=lambda x, w: _onednn_conv(x, w, attrs), default=xla)
