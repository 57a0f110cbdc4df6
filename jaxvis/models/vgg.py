"""VGG classifiers (Simonyan & Zisserman 2014) in Flax, laid out as torchvision builds them.

The module runs in inference mode only: BatchNorm uses its running statistics and dropout is absent,
so ``apply`` is a pure function of the variables and the image, safe to ``jit``, ``grad`` and ``vmap``
per image. Input is NHWC float32, already normalised the way torchvision normalises it.

``__call__`` returns ``(logits, activations)``. The activations carry the layer names of the VGG
paper: ``conv{b}_{i}`` (after BatchNorm and ReLU), ``conv{b}_{i}_pre`` (before the ReLU),
``pool{b}``, ``fc6``/``fc7`` (after ReLU), ``fc6_pre``/``fc7_pre`` and ``fc8`` (the logits).
Unused activations cost nothing under ``jit``: XLA drops what the caller does not read.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.conv import Convolution
from jaxvis.models.pooling import max_pool_2x2, plain
from jaxvis.models.taps import record

# Channel widths per block; every block ends with a 2x2 max-pool (torchvision's cfgs A, B, D, E).
BLOCKS = {
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "E": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}
ARCH_CFG = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


def adaptive_bins(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """torchvision/PyTorch adaptive pooling bins: [floor(i*n/o), ceil((i+1)*n/o)) for each output i."""
    return [((i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)) for i in range(n_out)]


def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    m = np.zeros((n_out, n_in), np.float32)
    for i, (start, end) in enumerate(adaptive_bins(n_in, n_out)):
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """``nn.AdaptiveAvgPool2d`` on NHWC input: averaging bins that may overlap at odd sizes."""
    h, w = x.shape[1:3]
    if (h, w) == tuple(out_hw):
        return x
    ph = jnp.asarray(_pool_matrix(h, out_hw[0]), x.dtype)
    pw = jnp.asarray(_pool_matrix(w, out_hw[1]), x.dtype)
    return jnp.einsum("oh,nhwc,pw->nopc", ph, x, pw, precision=jax.lax.Precision.HIGHEST)


class VGG(nn.Module):
    """A VGG network: 3x3 convolutions in blocks, 2x2 max-pools, adaptive average pool, three dense layers.

    ``blocks`` gives the conv widths per block. The torchvision models are the partials below; smaller
    networks (fewer channels, a narrower head, fewer classes) use the same code with other widths.
    """

    blocks: Sequence[Sequence[int]]
    batch_norm: bool = False
    num_classes: int = 1000
    fc_width: int = 4096
    pool_size: tuple[int, int] = (7, 7)
    dtype: jnp.dtype = jnp.float32
    # The convolution nn.Conv runs (lax.conv_general_dilated's signature), injected: jaxvis.conv's
    # (oneDNN on CPUs where usable, else XLA) unless Model.with_conv_backend or the caller give another.
    conv_general_dilated: Callable = Convolution("auto")
    # The rectifier, injected: ``nn.relu`` unless a backward rule replaces its gradient (jaxvis.rules:
    # Guided Backprop, DeconvNet), the same function in the forward pass.
    relu: Callable = nn.relu
    # The max-pooling rule, injected: a function of each pooling function returning the one to run
    # (``pooling.plain``, the pool itself, unless a backward rule replaces the pools' gradient).
    pool: Callable = plain
    # The adaptive average pool's rule, injected: a function of the pooling function returning the one to run
    # (``plain``, the pool itself, unless a rule replaces its backward pass: LRP's epsilon rule).
    avgpool: Callable = plain

    @property
    def min_input_size(self) -> int:
        return 2 ** len(self.blocks)

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(
                f"VGG expects a batch of RGB images shaped (N, H, W, 3) (NHWC), got shape {x.shape}; "
                "add a batch axis with x[None] or move channels last with x.transpose(0, 2, 3, 1)."
            )
        if min(x.shape[1:3]) < self.min_input_size:
            raise ValueError(
                f"VGG with {len(self.blocks)} pooling stages needs inputs of at least "
                f"{self.min_input_size}x{self.min_input_size} pixels, got {x.shape[1]}x{x.shape[2]}; "
                "resize the image up first (model.preprocess does)."
            )
        x = x.astype(self.dtype)
        acts: dict[str, jax.Array] = {}
        for b, widths in enumerate(self.blocks, start=1):
            for i, width in enumerate(widths, start=1):
                name = f"conv{b}_{i}"
                x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                            conv_general_dilated=self.conv_general_dilated, name=name)(x)
                if self.batch_norm:
                    x = nn.BatchNorm(
                        use_running_average=True, epsilon=1e-5, dtype=self.dtype, name=f"bn{b}_{i}"
                    )(x)
                x = record(self, acts, f"{name}_pre", x)
                x = record(self, acts, name, self.relu(x))
            x = record(self, acts, f"pool{b}", self.pool(max_pool_2x2)(x))
        x = self.avgpool(functools.partial(adaptive_avg_pool, out_hw=tuple(self.pool_size)))(x)
        # NHWC flatten; the converter permutes torchvision's NCHW-ordered fc6 kernel to match.
        x = x.reshape(x.shape[0], -1)
        for name in ("fc6", "fc7"):
            x = nn.Dense(self.fc_width, dtype=self.dtype, name=name)(x)
            x = record(self, acts, f"{name}_pre", x)
            x = record(self, acts, name, self.relu(x))
        logits = record(self, acts, "fc8", nn.Dense(self.num_classes, dtype=self.dtype, name="fc8")(x))
        return logits, acts


VGG11 = functools.partial(VGG, blocks=BLOCKS["A"])
VGG13 = functools.partial(VGG, blocks=BLOCKS["B"])
VGG16 = functools.partial(VGG, blocks=BLOCKS["D"])
VGG19 = functools.partial(VGG, blocks=BLOCKS["E"])
VGG11_BN = functools.partial(VGG, blocks=BLOCKS["A"], batch_norm=True)
VGG13_BN = functools.partial(VGG, blocks=BLOCKS["B"], batch_norm=True)
VGG16_BN = functools.partial(VGG, blocks=BLOCKS["D"], batch_norm=True)
VGG19_BN = functools.partial(VGG, blocks=BLOCKS["E"], batch_norm=True)
