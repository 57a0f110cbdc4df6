"""SSD with a VGG backbone (Liu et al. 2016) in Flax, laid out as torchvision's ``ssd300_vgg16``.

``__call__`` maps the normalised NHWC input to ``({"cls_logits": (N, A, K), "bbox_regression":
(N, A, 4)}, activations)``. Rows are ordered feature map, row, column, box shape: the order of the
default boxes in ``jaxvis.boxes.default_boxes``. The activations carry the names of the VGG and SSD
papers (``conv1_1`` … ``conv5_3``, ``pool1`` … ``pool5``, ``fc6``, ``fc7``, ``conv8_1`` … ``conv11_2``),
``conv4_3_norm`` (the L2-normalised, rescaled conv4_3) and ``map0`` … ``map5`` (the maps the heads see).

The same module builds smaller detectors: fewer channels (``blocks``, ``fc_width``, ``extras``), other
class counts, other input sizes.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvis.conv import Convolution
from jaxvis.models.pooling import max_pool_2x2, max_pool_2x2_ceil, max_pool_3x3_s1, plain
from jaxvis.models.taps import record
from jaxvis.models.vgg import BLOCKS

# (1x1 width, 3x3 width, stride, padding) of the extra blocks conv8 … conv11 of SSD300.
SSD300_EXTRAS = ((256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0), (128, 256, 1, 0))




class SSD(nn.Module):
    """SSD on a VGG backbone: VGG blocks 1-5 (pool3 in ceil mode, pool5 3x3/1), dilated fc6, fc7, extra
    blocks, and a 3x3 classification and regression conv on each of the feature maps.

    ``l2norm``: ``"max"`` divides conv4_3 by max(||x||, 1e-12) (torchvision); ``"add"`` by ||x|| + 1e-10
    (amdegroot/ssd.pytorch).
    """

    num_classes: int = 91
    blocks: Sequence[Sequence[int]] = BLOCKS["D"]
    fc_width: int = 1024
    fc_dilation: int = 6
    extras: Sequence[Sequence[int]] = SSD300_EXTRAS
    anchors_per_location: Sequence[int] = (4, 6, 6, 6, 4, 4)
    l2norm: str = "max"
    l2norm_init: float = 20.0
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
    # The conv4_3 normalisation's rule, injected: a function of the normalisation returning the one to run
    # (``plain``, the normalisation itself, unless a rule replaces its backward pass: LRP hands relevance
    # through it unchanged).
    norm: Callable = plain

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"SSD expects a batch of images shaped (N, H, W, 3) (NHWC), got shape {x.shape}; "
                             "add a batch axis with x[None].")
        if len(self.anchors_per_location) != 2 + len(self.extras):
            raise ValueError(f"anchors_per_location needs {2 + len(self.extras)} entries (conv4_3, fc7 and one "
                             f"per extra block), got {len(self.anchors_per_location)}")
        x = x.astype(self.dtype)
        acts: dict[str, jax.Array] = {}
        conv = functools.partial(
            nn.Conv,
            dtype=self.dtype,
            conv_general_dilated=self.conv_general_dilated,
        )
        maps = []
        for b, widths in enumerate(self.blocks, start=1):
            if b == 5:
                x = record(self, acts, "pool4", self.pool(max_pool_2x2)(x))  # pool4
            for i, width in enumerate(widths, start=1):
                name = f"conv{b}_{i}"
                x = record(self, acts, name, self.relu(conv(width, (3, 3), padding=((1, 1), (1, 1)), name=name)(x)))
            if b <= 3:
                # pool3 runs in ceil mode: an odd side keeps its last row/column.
                x = record(self, acts, f"pool{b}", self.pool(max_pool_2x2 if b < 3 else max_pool_2x2_ceil)(x))
            elif b == 4:
                maps.append(record(self, acts, "map0", record(self, acts, "conv4_3_norm", self.norm(self._l2norm)(x))))
        x = record(self, acts, "pool5", self.pool(max_pool_3x3_s1)(x))  # pool5 of SSD: 3x3, stride 1
        d = self.fc_dilation
        x = self.relu(conv(self.fc_width, (3, 3), padding=((d, d), (d, d)), kernel_dilation=(d, d), name="fc6")(x))
        x = record(self, acts, "fc6", x)
        x = record(self, acts, "fc7", self.relu(conv(self.fc_width, (1, 1), padding="VALID", name="fc7")(x)))
        x = record(self, acts, "map1", x)
        maps.append(x)
        for j, (mid, out, stride, pad) in enumerate(self.extras, start=8):
            x = record(self, acts, f"conv{j}_1", self.relu(conv(mid, (1, 1), padding="VALID", name=f"conv{j}_1")(x)))
            x = self.relu(conv(out, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                             name=f"conv{j}_2")(x))
            x = record(self, acts, f"map{len(maps)}", record(self, acts, f"conv{j}_2", x))
            maps.append(x)
        cls, box = [], []
        n = x.shape[0]
        for i, (fmap, a) in enumerate(zip(maps, self.anchors_per_location)):
            c = conv(a * self.num_classes, (3, 3), padding=((1, 1), (1, 1)), name=f"cls_head_{i}")(fmap)
            r = conv(a * 4, (3, 3), padding=((1, 1), (1, 1)), name=f"box_head_{i}")(fmap)
            # NHWC channel index a*K + k: a plain reshape gives rows (y, x, a), torchvision's order.
            cls.append(c.reshape(n, -1, self.num_classes))
            box.append(r.reshape(n, -1, 4))
        outputs = {"cls_logits": jnp.concatenate(cls, 1), "bbox_regression": jnp.concatenate(box, 1)}
        return outputs, acts

    def _l2norm(self, x: jax.Array) -> jax.Array:
        scale = self.param("conv4_3_scale", nn.initializers.constant(self.l2norm_init), (x.shape[-1],), jnp.float32)
        sumsq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
        if self.l2norm == "max":
            # max(sqrt(s), 1e-12) == sqrt(max(s, 1e-24)); written this way the gradient stays finite at 0.
            norm = jnp.sqrt(jnp.maximum(sumsq, 1e-24))
        elif self.l2norm == "add":
            positive = sumsq > 0
            norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sumsq, 1.0)), 0.0) + 1e-10
        else:
            raise ValueError(f"l2norm must be 'max' or 'add', got {self.l2norm!r}")
        return scale.astype(self.dtype) * (x / norm)

