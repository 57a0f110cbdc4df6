"""Image parameterisations: the image as a function of the variable the optimiser changes.

A ``Parameterization`` is a chain of **stages**, each a small frozen value, composed with ``+``:

* a **basis** makes a zero-centred image from the variable: ``pixels()`` (a value per pixel and channel),
  ``fourier(decay)`` (a real FFT spectrum, real and imaginary parts, scaled by 1/f^decay: Olah et al. 2017,
  Lucid's ``fft_image``) or ``maco(spectrum)`` (only the Fourier phase; the magnitude is fixed to a given
  amplitude spectrum: Fel et al. 2023, "Unlocking feature visualization for deeper networks with
  magnitude constrained optimization");
* an optional **colour decorrelation** ``decorrelated(matrix)``: the basis gives colours in a
  decorrelated space, mapped back to RGB by the square root of a 3x3 colour covariance;
* the **map into the valid pixel range**: ``sigmoid()`` or ``clip()`` (without one the image is the basis
  image plus 0.5);
* **opacity** ``alpha(backdrop)``: a fourth channel, and the image is a colour layer over backgrounds;
* stages on the RGB(A) image in [0, 1]: ``solid()`` (one colour under the opacity), ``box_start(p)``
  (a start opaque in the target boxes), and any stage a user writes (``Stage``).

``fourier() + decorrelated(IMAGENET) + sigmoid()`` is Lucid's standard image. The stages run in the order
of their ``order`` (basis, colour, range, opacity, then the rest), whatever the order of the ``+``; a chain
holds one stage of each ``slot`` (two bases, or two range maps, are refused), and a stage's ``needs`` (the
opacity that ``solid`` works on) join the chain with their default settings.

``pixels()`` alone is the engine's historical form: the variable *is* the image in the network's
input space (the normalised input). Every other chain makes an RGB image in [0, 1], which ``render`` then
normalises into the network's input space, so what the engine reports is always the network-input image.

What a stage does
-----------------
A stage is called on the image the stage before it made, ``stage(t, draw) -> t``, where ``draw`` (a
``Draw``) holds the input size, the point's Fourier decay and the map into the network's input. Besides
that a stage may take part in the four moments of a point's life (each a method with a default that does
nothing; ``chain`` is the whole ``Parameterization``, ``point`` the point's numbers: ``seed``, ``boxes``,
``box_valid``, ``target``, ...):

* ``start(chain, v, key, point, draw) -> v``: change the starting variable;
* ``seen(chain, x, key, point, draw) -> x``: change what the network sees after the random transforms
  (``alpha`` composites over a random background here);
* ``report(chain, x, point, draw) -> x``: change the image reported and shown (``alpha``: over its backdrop);
* ``opacity(x)``: the opacity that the ``opacity`` objective terms read, or None;
* ``invert(t, draw)``: the stage's input for its output ``t`` (a start from an image needs every stage's);
* ``check(chain, size)``: refuse a chain or an input size the stage cannot work with.

Which stages a chain has is static (it selects the compiled program); the Fourier decay is a per-point
number (``render(..., decay=...)``), so a sweep over decays is one vmapped grid. Stages must be hashable
(frozen dataclasses are): the chain is part of the compiled program's static configuration.

Fourier convention (the same formula as Lucid's fft_image, written for numpy's FFT): with
``f = sqrt(fy^2 + fx^2)`` the frequencies of ``numpy.fft.fftfreq(h)`` and ``rfftfreq(w)``,
``scale = sqrt(h w) / max(f, 1 / max(h, w))^decay`` and the image ``irfft2(scale (re + i im), s=(h, w)) / 4``.

Colour decorrelation: for a covariance ``C = U diag(s) U^T`` the square root used is Lucid's
``U diag(sqrt(s))``, divided by its largest column norm; a colour ``t`` (row vector) maps to
``t @ M^T``. ``IMAGENET_COLOUR_SQRT`` is the ImageNet matrix published with Lucid
(``lucid/optvis/param/color.py``, ``color_correlation_svd_sqrt``); the shapes models' matrix is
estimated from the shapes generator by ``image_statistics`` and ships in
``jaxvis/assets/shapes_image_stats.npz``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class ParameterizationError(ValueError):
    """A parameterisation that cannot be built or does not fit the model."""


# Lucid's published square root of ImageNet's colour correlation (lucid/optvis/param/color.py).
IMAGENET_COLOUR_SQRT = ((0.26, 0.09, 0.02),
                        (0.27, 0.00, -0.05),
                        (0.27, -0.09, 0.03))


SOLID_COLOUR_STD = 1.5  # the spread of a solid image's start colour, before the colour and range maps
SOLID_KEY = 0x50000000  # a solid image's start colour folds this into the key of its start
START_MARGIN = 1e-3  # a start from an image moves its colours this far inside [0, 1] (a sigmoid cannot reach 0 or 1)


class Frozen:
    """A numpy array as a hashable, comparable constant (by content), so a value holding one can be a
    static argument of a compiled function."""

    def __init__(self, array):
        self.array = np.ascontiguousarray(np.asarray(array, np.float32))
        self.array.setflags(write=False)
        self._digest = hashlib.sha256(self.array.tobytes() + str(self.array.shape).encode()).hexdigest()

    def __hash__(self):
        return hash(self._digest)

    def __eq__(self, other):
        return isinstance(other, Frozen) and other._digest == self._digest

    @property
    def digest(self) -> str:
        """A short content hash, for names (an objective's name reads back its constants by it)."""
        return self._digest[:10]

    def __repr__(self):
        return f"Frozen(shape={self.array.shape}, sha256={self._digest[:12]})"


class Draw(NamedTuple):
    """What a stage knows of the point it draws: the input ``size`` (height, width), the point's Fourier
    ``decay`` (a number, traced in a sweep) and ``to_input``, RGB [0, 1] -> network input (an ``InputMap``)."""

    size: tuple[int, int]
    decay: Any = 1.0
    to_input: Any = None


# The order in which a chain runs its stages (a stage's ``order``).
BASIS, COLOUR, RANGE, OPACITY, ON_IMAGE = 0, 10, 20, 30, 40


class Stage:
    """One step of making the image; subclass it as a frozen dataclass (see the module's docstring).

    Class attributes: ``order`` (where it runs: ``BASIS`` < ``COLOUR`` < ``RANGE`` < ``OPACITY`` <
    ``ON_IMAGE``, the default: on the RGB(A) image in [0, 1]); ``slot`` (a chain has one stage per slot;
    None: the stage's class is its slot); ``extra_channels`` (channels the stage adds to the image, that
    the basis must make); ``needs`` (stage classes the chain must have; their defaults join it)."""

    order: int = ON_IMAGE
    slot: str | None = None
    extra_channels: int = 0
    needs: tuple = ()

    @property
    def name(self) -> str:
        """How the stage is written in a chain's name (empty: left out)."""
        return type(self).__name__.lower()

    def __call__(self, t: jax.Array, draw: Draw) -> jax.Array:
        return t

    def invert(self, t: jax.Array, draw: Draw) -> jax.Array:
        raise ParameterizationError(f"the {self.name} stage has no inverse, which a start from an image needs; "
                                    f"give {type(self).__name__} an invert(t, draw) method.")

    def check(self, chain: "Parameterization", size: tuple[int, int] | None) -> None:
        """Raise ``ParameterizationError`` for a chain or an input size this stage cannot work with; ``size``
        is None when a chain is built (refuse then only what no stage added later could mend)."""

    def start(self, chain: "Parameterization", v: jax.Array, key, point, draw: Draw) -> jax.Array:
        return v

    def seen(self, chain: "Parameterization", x: jax.Array, key, point, draw: Draw) -> jax.Array:
        return x

    def report(self, chain: "Parameterization", x: jax.Array, point, draw: Draw) -> jax.Array:
        return x

    def opacity(self, x: jax.Array) -> jax.Array | None:
        return None


class Basis(Stage):
    """A stage that makes the zero-centred image from the variable. Besides ``__call__`` and ``invert`` (the
    variable of an image) a basis gives the variable's ``shape``, its random ``init``, a ``shift`` of its image
    by a constant colour, and how a start image takes the starting noise (``with_noise``)."""

    order, slot = BASIS, "basis"

    def shape(self, size: tuple[int, int], channels: int) -> tuple[int, ...]:
        raise NotImplementedError

    def init(self, key, shape: tuple[int, ...], scale) -> jax.Array:
        """Gaussian noise of std ``scale``; zeros for scale 0."""
        noise = jax.random.normal(key, shape, jnp.float32)
        return jnp.where(scale > 0, scale * noise, jnp.zeros_like(noise))

    def shift(self, v: jax.Array, colour: jax.Array, draw: Draw) -> jax.Array:
        raise ParameterizationError(f"the {self.name} basis cannot shift its image by a colour.")

    def with_noise(self, start: jax.Array, noise: jax.Array) -> jax.Array:
        return start + noise


@dataclasses.dataclass(frozen=True)
class Pixels(Basis):
    """A value per pixel and channel."""

    def shape(self, size, channels):
        return (size[0], size[1], channels)

    def __call__(self, v, draw):
        return v

    def invert(self, t, draw):
        return t

    def shift(self, v, colour, draw):
        return v.at[..., :3].add(colour)


@dataclasses.dataclass(frozen=True)
class Fourier(Basis):
    """The real FFT spectrum, real and imaginary parts, scaled by 1/f^decay (``decay``: the default of the
    points that give none)."""

    decay: float = 1.0

    @property
    def name(self):
        return "fourier" if self.decay == 1 else f"fourier({self.decay:g})"

    def shape(self, size, channels):
        return (size[0], size[1] // 2 + 1, channels, 2)

    def __call__(self, v, draw):
        h, w = draw.size
        scale = fourier_scale(draw.size, draw.decay)
        spectrum = jax.lax.complex(v[..., 0] * scale[..., None], v[..., 1] * scale[..., None])
        return jnp.fft.irfft2(spectrum, s=(h, w), axes=(0, 1)) / 4.0

    def invert(self, t, draw):
        spectrum = jnp.fft.rfft2(t, axes=(0, 1))
        factor = (4.0 / fourier_scale(draw.size, draw.decay))[..., None]
        return jnp.stack([jnp.real(spectrum) * factor, jnp.imag(spectrum) * factor], -1).astype(jnp.float32)

    def shift(self, v, colour, draw):  # the mean of the image is the DC bin times its scale over 4 h w
        h, w = draw.size
        dc = fourier_scale(draw.size, draw.decay)[0, 0]
        return v.at[0, 0, :3, 0].add(colour * (4.0 * h * w) / dc)


@dataclasses.dataclass(frozen=True)
class Maco(Basis):
    """The Fourier phase alone under a fixed magnitude ``spectrum`` (``Frozen``, (H, W // 2 + 1, 3))."""

    spectrum: Frozen

    def shape(self, size, channels):
        return (size[0], size[1] // 2 + 1, 3)

    def init(self, key, shape, scale):
        """A uniform phase in [-pi, pi), whatever the scale."""
        return jax.random.uniform(key, shape, jnp.float32, -np.pi, np.pi)

    def __call__(self, v, draw):
        w = draw.size[1]
        magnitude = jnp.asarray(hermitian_magnitude(self.spectrum.array, w))
        phase = _odd_phase(v, w)
        spectrum = jax.lax.complex(magnitude * jnp.cos(phase), magnitude * jnp.sin(phase))
        return jnp.fft.irfft2(spectrum, s=draw.size, axes=(0, 1))

    def invert(self, t, draw):
        """The image's phase (its magnitude is this stage's own)."""
        return jnp.angle(jnp.fft.rfft2(t, axes=(0, 1))).astype(jnp.float32)

    def with_noise(self, start, noise):
        """A start image keeps its phase: the random phase is not added."""
        return start + 0.0

    def check(self, chain, size):
        if size is None:
            return
        want = (size[0], size[1] // 2 + 1, 3)
        if self.spectrum.array.shape != want:
            raise ParameterizationError(
                f"the MACO magnitude spectrum has shape {self.spectrum.array.shape}, but a {size[0]}x{size[1]} "
                f"input needs {want}; estimate one at the model's input size with jaxvis.parameterizations."
                "image_statistics (or python -m experiments.image_statistics).")


@dataclasses.dataclass(frozen=True)
class Decorrelated(Stage):
    """The first three channels mapped from a decorrelated colour space to RGB by ``matrix`` (``Frozen``
    3x3, unit largest column norm): ``t @ M^T``; other channels pass."""

    matrix: Frozen
    order, slot = COLOUR, "colour"

    name = "decorrelated"

    def __call__(self, t, draw):
        rgb = jnp.einsum("hwc,dc->hwd", t[..., :3], jnp.asarray(self.matrix.array), precision=jax.lax.Precision.HIGHEST)
        return jnp.concatenate([rgb, t[..., 3:]], -1)

    def invert(self, t, draw):
        inverse = np.linalg.inv(self.matrix.array.astype(np.float64)).astype(np.float32)
        rgb = jnp.einsum("hwd,cd->hwc", t[..., :3], jnp.asarray(inverse), precision=jax.lax.Precision.HIGHEST)
        return jnp.concatenate([rgb, t[..., 3:]], -1)


class Range(Stage):
    """A map of a zero-centred image into [0, 1]. ``preimage(p)``: the value (a Python float) it maps to
    ``p``; ``spread``: the spread of the views' random backgrounds before it, relative to a sigmoid's."""

    order, slot = RANGE, "range"
    spread = 1.0

    def preimage(self, p: float) -> float:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Sigmoid(Range):
    name = "sigmoid"

    def __call__(self, t, draw):
        return jax.nn.sigmoid(t)

    def invert(self, t, draw):
        t = jnp.clip(t, START_MARGIN, 1.0 - START_MARGIN)
        return jnp.log(t) - jnp.log1p(-t)

    def preimage(self, p):
        return float(np.log(p / (1.0 - p)))


@dataclasses.dataclass(frozen=True)
class Clip(Range):
    name, spread = "clip", 0.25

    def __call__(self, t, draw):
        return jnp.clip(t + 0.5, 0.0, 1.0)

    def invert(self, t, draw):
        return t - 0.5

    def preimage(self, p):
        return p - 0.5


@dataclasses.dataclass(frozen=True)
class Offset(Range):
    """No range map: the basis image plus 0.5 (the chain's range when it names none; unbounded)."""

    name, spread = "", 0.25

    def __call__(self, t, draw):
        return t + 0.5

    def invert(self, t, draw):
        return t - 0.5

    def preimage(self, p):
        return p - 0.5


BACKGROUND_KEY = 0x6B000000  # the random background of a view folds this into the view's key
REPORT_KEY = 0x6C000000  # the backdrop of a point's reported image folds this into the key of its seed
BACKGROUND_STD = 2.0  # the random backgrounds' spread before a sigmoid: sigmoid(+-2) = 0.12 .. 0.88


@dataclasses.dataclass(frozen=True)
class Alpha(Stage):
    """An opacity channel beside the colours (see ``alpha()``); ``backdrop``: the contrast of the background
    the image is reported over (0: mid grey)."""

    backdrop: float = 0.0
    order, extra_channels = OPACITY, 1

    def __post_init__(self):
        if not 0.0 <= self.backdrop <= 1.0:
            raise ParameterizationError(f"a backdrop is the contrast, in [0, 1], of the background that an image with "
                                        f"opacity is reported over (alpha(C)); got {self.backdrop!r}.")

    @property
    def name(self):
        return f"alpha({self.backdrop:g})" if self.backdrop else "alpha"

    def invert(self, t, draw):  # a start image is opaque
        return jnp.concatenate([t, jnp.full(t.shape[:2] + (1,), 1.0 - START_MARGIN, jnp.float32)], -1)

    def check(self, chain, size):
        if isinstance(chain.basis, Maco):
            raise ParameterizationError("alpha needs a free magnitude for its opacity channel; use it with the pixels "
                                        "or fourier basis, not maco.")
        if size is not None and isinstance(chain.range, Offset):
            raise ParameterizationError("alpha's opacity must stay in [0, 1]: add a range map (sigmoid or clip).")

    def opacity(self, x):
        return x[..., 3]

    def seen(self, chain, x, key, point, draw):
        return composite(x, background(chain, jax.random.fold_in(key, BACKGROUND_KEY), draw.size, draw.to_input,
                                       draw.decay))

    def report(self, chain, x, point, draw):
        return composite(x, report_background(chain, point["seed"], draw.size, draw.to_input, draw.decay))


@dataclasses.dataclass(frozen=True)
class Solid(Stage):
    """The colour layer of an image with opacity made one colour, the mean of its colours (see ``solid()``)."""

    name, needs = "solid", (Alpha,)

    def __call__(self, t, draw):
        colour = jnp.mean(t[..., :3], axis=(0, 1), keepdims=True)
        return jnp.concatenate([jnp.broadcast_to(colour, t.shape[:-1] + (3,)), t[..., 3:]], -1)

    def invert(self, t, draw):  # the image takes the mean of the start's colours
        return t

    def start(self, chain, v, key, point, draw):
        """A colour of its own, drawn from ``key`` (``SOLID_COLOUR_STD`` around mid grey before the colour and
        range maps): mid grey, the colour of no object, over backgrounds around mid grey gives the network
        nothing to answer, and its opacity fades before its colour can move."""
        colour = SOLID_COLOUR_STD * jax.random.normal(jax.random.fold_in(key, SOLID_KEY), (3,), jnp.float32)
        return chain.basis.shift(v, colour, draw)


BOX_START_EDGE = 0.15  # the width of the fall-off of a box start, as a share of the ellipse's radius


@dataclasses.dataclass(frozen=True)
class BoxStart(Stage):
    """A start opaque (``opacity``) in the point's target boxes (see ``box_start()``)."""

    opacity_at_start: float = 0.9
    needs = (Alpha,)

    def __post_init__(self):
        if not 0.0 < self.opacity_at_start < 1.0:
            raise ParameterizationError(f"boxstart(P) starts an image with opacity at opacity P, in (0, 1), inside "
                                        f"its target boxes (e.g. fourier+sigmoid+alpha+boxstart(0.9)); got "
                                        f"{self.opacity_at_start!r}.")

    @property
    def name(self):
        return f"boxstart({self.opacity_at_start:g})"

    def invert(self, t, draw):
        return t

    def start(self, chain, v, key, point, draw):
        return v + opacity_start(chain, point["boxes"], point["box_valid"], draw.size, draw.decay)


def _slot(stage: Stage) -> Any:
    return stage.slot if stage.slot is not None else type(stage)


_FILLERS = (Pixels(), Offset())  # the basis and range of a chain that names none


def _gives_way(stage: Stage, other: Stage) -> bool:
    """Whether ``stage`` makes room for ``other`` of its slot: a filler (the pixels basis, the plain range)
    for any other stage, a class's default settings (``fourier()``, ``alpha()``) for other settings."""
    if stage in _FILLERS:
        return True
    if type(stage) is not type(other):
        return False
    try:
        return type(stage)() == stage
    except TypeError:
        return False


@dataclasses.dataclass(frozen=True, init=False)
class Parameterization:
    """How the image is made from the variable: a chain of ``Stage`` values (see the module's docstring).
    ``Parameterization(stages)`` puts them in order, merges a slot's default with another stage of that
    slot, adds what they need, and fills in the pixels basis and the plain range when there are none.

    Example:

    ```python
    import jax
    from jaxvis import parameterizations as P

    image = P.fourier(1.5) + P.decorrelated() + P.sigmoid()   # Lucid's image (ImageNet's colour matrix)
    draw = image.draw((64, 64))
    v = image.init(jax.random.key(0), (64, 64), 0.01)         # the variable the optimiser changes
    rgb = image.image(v, draw)                                 # RGB in [0, 1]
    print(image, v.shape, rgb.shape, float(rgb.min()) >= 0.0)
    ```
    """

    stages: tuple

    def __init__(self, stages=()):
        stages = tuple(stages)
        for s in stages:
            if not isinstance(s, Stage):
                raise ParameterizationError(f"a parameterisation is made of jaxvis.parameterizations.Stage values "
                                            f"(pixels(), fourier(), sigmoid(), or a Stage of your own); got {s!r}.")
            try:
                hash(s)
            except TypeError:
                raise ParameterizationError(f"the stage {s!r} is not hashable; write it as a frozen dataclass (it "
                                            "selects the compiled program).") from None
        for s in list(stages):
            for need in s.needs:
                if not any(isinstance(o, need) for o in stages):
                    stages += (need(),)
        if not any(isinstance(s, Basis) for s in stages):
            stages = (Pixels(),) + stages
        if not any(isinstance(s, Range) for s in stages):
            stages += (Offset(),)
        merged: dict[Any, Stage] = {}
        for s in stages:
            have = merged.get(_slot(s))
            if have is None or have == s or _gives_way(have, s):
                merged[_slot(s)] = s
            elif not _gives_way(s, have):
                raise ParameterizationError(f"cannot combine two different {_slot_names(s)} ({have.name or 'none'} "
                                            f"and {s.name or 'none'}).")
        object.__setattr__(self, "stages", tuple(sorted(merged.values(), key=lambda s: s.order)))
        self.check(None)

    def __add__(self, other: "Parameterization | Stage") -> "Parameterization":
        if isinstance(other, Stage):
            other = Parameterization((other,))
        if not isinstance(other, Parameterization):
            return NotImplemented
        return Parameterization(self.stages + other.stages)

    def find(self, kind: type) -> Stage | None:
        """The chain's stage of class ``kind``, or None."""
        return next((s for s in self.stages if isinstance(s, kind)), None)

    @property
    def basis(self) -> Basis:
        return self.find(Basis)

    @property
    def range(self) -> Range:
        return self.find(Range)

    @property
    def decay(self) -> float:
        """The default Fourier decay (a point may give its own)."""
        return getattr(self.basis, "decay", 1.0)

    @property
    def identity(self) -> bool:
        """The historical form: the variable is the network-input image itself."""
        return self.stages == (Pixels(), Offset())

    @property
    def channels(self) -> int:
        """Channels of the rendered image: 3, plus what stages add (the opacity, last)."""
        return 3 + sum(s.extra_channels for s in self.stages)

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.stages if s.name)

    def variable_shape(self, size: tuple[int, int]) -> tuple[int, ...]:
        return self.basis.shape(size, self.channels)

    def check(self, size: tuple[int, int] | None) -> None:
        """Every stage's ``check`` for a model input of ``size`` (the engine's; None: what needs no size)."""
        for s in self.stages:
            s.check(self, size)

    def draw(self, size: tuple[int, int], to_input=None, decay=None) -> Draw:
        """A ``Draw`` for a point with Fourier ``decay`` (None: the chain's default)."""
        return Draw(tuple(size), self.decay if decay is None else decay, to_input)

    def init(self, key, size: tuple[int, int], scale, decay=None, point=None, to_input=None) -> jax.Array:
        """A starting variable: the basis's random start of std ``scale`` (zeros for scale 0; MACO: a uniform
        phase), then each stage's ``start`` with the point's numbers ``point``."""
        draw = self.draw(size, to_input, decay)
        v = self.basis.init(key, self.variable_shape(size), scale)
        for s in self.stages:
            v = s.start(self, v, key, point, draw)
        return v

    def image(self, v: jax.Array, draw: Draw) -> jax.Array:
        """RGB(A) in [0, 1] (for the plain range: unbounded, centred on 0.5) from variable ``v``."""
        for s in self.stages:
            v = s(v, draw)
        return v

    def render(self, v: jax.Array, draw: Draw) -> jax.Array:
        """The network-input image (H, W, 3) for variable ``v``, with any extra channels (the opacity, in
        [0, 1]) after the colours."""
        if self.identity:
            return v
        rgb = self.image(v, draw)
        if rgb.shape[-1] == 3:
            return draw.to_input(rgb)
        return jnp.concatenate([draw.to_input(rgb[..., :3]), rgb[..., 3:]], -1)

    def variable_for(self, x: jax.Array, draw: Draw) -> jax.Array:
        """A variable whose image is the network-input image ``x`` (H, W, 3): every stage's ``invert`` in
        reverse order. Exact for every basis but MACO, whose magnitude is fixed (it keeps ``x``'s phase, the
        image's structure, under the given magnitude), and for ``solid``, whose image takes the mean of ``x``'s
        colours; a sigmoid cannot reach 0 or 1, so colours are first moved ``START_MARGIN`` inside [0, 1]."""
        if self.identity:
            return jnp.asarray(x, jnp.float32)
        t = from_input(draw.to_input, jnp.asarray(x, jnp.float32))
        for s in reversed(self.stages):
            t = s.invert(t, draw)
        return t

    def opacity(self, x: jax.Array) -> jax.Array | None:
        """The opacity of a rendered image (H, W), or None for an image without one."""
        return next((a for a in (s.opacity(x) for s in self.stages) if a is not None), None)

    def seen(self, x: jax.Array, key, point, draw: Draw) -> jax.Array:
        """What the network sees of a transformed image ``x`` (each stage's ``seen``), with the view's ``key``."""
        for s in self.stages:
            x = s.seen(self, x, key, point, draw)
        return x

    def report(self, x: jax.Array, point, draw: Draw) -> jax.Array:
        """The image as reported (H, W, 3): each stage's ``report``."""
        for s in self.stages:
            x = s.report(self, x, point, draw)
        return x


def _slot_names(stage: Stage) -> str:
    """The plural of the stage's slot, for messages: bases, colour maps, ranges, or its class's name."""
    slot = _slot(stage)
    plurals = {"basis": "bases", "colour": "colour maps", "range": "ranges"}
    return plurals.get(slot, f"{getattr(slot, '__name__', str(slot)).lower()} stages")


def pixels() -> Parameterization:
    """A value per pixel and channel (alone: the network-input image itself, the engine's default)."""
    return Parameterization((Pixels(),))


def fourier(decay: float = 1.0) -> Parameterization:
    """The real FFT spectrum, scaled by 1/f^decay (Lucid's fft_image); ``decay`` is the default of the
    points that give none."""
    return Parameterization((Fourier(float(decay)),))


def maco(spectrum) -> Parameterization:
    """The Fourier phase alone, the magnitude fixed to ``spectrum`` (H, W // 2 + 1, 3), an amplitude
    spectrum of zero-centred images (``image_statistics`` estimates one)."""
    s = np.asarray(spectrum, np.float32)
    if s.ndim != 3 or s.shape[-1] != 3 or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ParameterizationError(f"a MACO spectrum is a finite, non-negative (H, W // 2 + 1, 3) array; got shape "
                                    f"{s.shape}.")
    return Parameterization((Maco(Frozen(s)),))


def decorrelated(matrix=IMAGENET_COLOUR_SQRT) -> Parameterization:
    """Colours in a decorrelated space, mapped to RGB by ``matrix`` (a covariance square root, made
    unit by its largest column norm)."""
    m = np.asarray(matrix, np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise ParameterizationError(f"a colour decorrelation matrix is 3x3 and finite; got shape {m.shape}.")
    norm = np.max(np.linalg.norm(m, axis=0))
    if norm == 0:
        raise ParameterizationError("the colour decorrelation matrix is zero.")
    return Parameterization((Decorrelated(Frozen(m / norm)),))


def alpha(backdrop: float = 0.0) -> Parameterization:
    """An opacity channel beside the colours (Lucid's transparent images): the variable has a fourth
    channel, made by the same basis and range map (not colour-decorrelated), and the network sees the
    colours composited over a random background drawn anew for every view (``background``). The
    background carries no signal, so only the opaque part can raise the objective: it must hold the object,
    with its outline, rather than colour the whole frame. An ``opacity`` penalty keeps the opaque part small.
    What is reported is the image over mid grey (``over_grey``), or with ``backdrop`` > 0 over one
    background of the views' kind with that contrast, drawn from the point's seed (``report_background``):
    a network that never saw flat grey around its objects (the shapes detector) reads the image over such
    a backdrop as it read the views."""
    return Parameterization((Alpha(float(backdrop)),))


def solid() -> Parameterization:
    """An image with opacity (it brings ``alpha``) whose colour layer is one colour, the mean of the colours
    the basis makes: a silhouette in a single flat colour over the views' random backgrounds. Only the
    opacity can draw, so what the network reads must be in the outline; for models trained on flat-coloured
    objects (the shapes models) it keeps the image in the family they were trained on, with no texture
    inside the object for a class model to exploit."""
    return Parameterization((Solid(),))


def box_start(opacity: float = 0.9) -> Parameterization:
    """An image with opacity (it brings ``alpha``) that starts opaque in its target boxes: the opacity at the
    start is ``opacity`` in the middle of each of the point's target boxes, falling off smoothly over the
    ellipse inscribed in the box, and unchanged outside (``opacity_start``). From a transparent start the
    opacity penalty can empty the box before the objective has drawn anything there; from an opaque one
    the objective shapes what is there. The ellipse favours no class of the shapes: its outline is what
    the optimisation redraws."""
    return Parameterization((BoxStart(float(opacity)),))


def sigmoid() -> Parameterization:
    return Parameterization((Sigmoid(),))


def clip() -> Parameterization:
    return Parameterization((Clip(),))


def covariance_sqrt(cov) -> np.ndarray:
    """Lucid's square root of a colour covariance: ``U diag(sqrt(s))`` of its SVD."""
    u, s, _ = np.linalg.svd(np.asarray(cov, np.float64))
    return u * np.sqrt(s)[None, :]


def image_statistics(images_at: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Image statistics (what ``experiments/image_statistics.py`` writes) from ``images_at``: size -> (N, size,
    size, 3) RGB in [0, 1]. ``colour_sqrt``: Lucid's square root of the colour covariance of all the
    pixels; ``spectrum_SxS``: the mean over images of |rfft2(image - 0.5)| per channel."""
    pixels = np.concatenate([im.reshape(-1, 3) for im in images_at.values()]).astype(np.float64)
    out = {"colour_sqrt": covariance_sqrt(np.cov(pixels, rowvar=False)).astype(np.float32)}
    for size, images in images_at.items():
        amplitude = np.abs(np.fft.rfft2(np.asarray(images, np.float64) - 0.5, axes=(1, 2)))
        out[f"spectrum_{size}x{size}"] = amplitude.mean(0).astype(np.float32)
    return out


def hermitian_magnitude(m: np.ndarray, w: int) -> np.ndarray:
    """``m`` made symmetric along the rows in the columns whose real FFT bins are their own mirror
    (column 0 and, for an even width ``w``, column w/2), as the amplitude spectrum of a real image is."""
    m = np.array(m, np.float32)
    mirror = (-np.arange(m.shape[0])) % m.shape[0]
    for c in [0] + ([w // 2] if w % 2 == 0 else []):
        m[:, c] = 0.5 * (m[:, c] + m[mirror, c])
    return m


def frequencies(size: tuple[int, int]) -> np.ndarray:
    """|f| of the real FFT bins, (H, W // 2 + 1)."""
    h, w = size
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def fourier_scale(size: tuple[int, int], decay) -> jax.Array:
    """sqrt(h w) / max(f, 1 / max(h, w))^decay per real FFT bin, (H, W // 2 + 1): the Fourier basis's scale."""
    h, w = size
    f = jnp.asarray(np.maximum(frequencies(size), 1.0 / max(h, w)), jnp.float32)
    return jnp.sqrt(jnp.float32(h * w)) * jnp.power(f, -jnp.asarray(decay, jnp.float32))


def _odd_phase(phase: jax.Array, w: int) -> jax.Array:
    """The phase made odd along the rows in the self-mirrored columns (0, and w/2 for even w), so that
    the spectrum is that of a real image and irfft2 keeps its magnitude exactly."""
    h = phase.shape[0]
    mirror = (-jnp.arange(h)) % h
    cols = [0] + ([w // 2] if w % 2 == 0 else [])
    for c in cols:
        phase = phase.at[:, c].set(0.5 * (phase[:, c] - phase[mirror, c]))
    return phase


@dataclasses.dataclass(frozen=True)
class InputMap:
    """RGB [0, 1] -> the network's input: ``black + rgb[..., order] * (white - black)`` per network channel."""

    black: tuple[float, ...]
    white: tuple[float, ...]
    order: tuple[int, ...]

    @classmethod
    def of(cls, spec) -> "InputMap":
        from jaxvis import preprocess as pre

        black = np.asarray(pre.normalize(spec, np.zeros(3, np.float32)))
        white = np.asarray(pre.normalize(spec, np.ones(3, np.float32)))
        order = (2, 1, 0) if spec.channel_order == "BGR" else (0, 1, 2)
        return cls(tuple(map(float, black)), tuple(map(float, white)), order)

    def __call__(self, rgb: jax.Array) -> jax.Array:
        black, white = jnp.asarray(self.black, jnp.float32), jnp.asarray(self.white, jnp.float32)
        return black + rgb[..., list(self.order)] * (white - black)


def from_input(to_input: InputMap, x: jax.Array) -> jax.Array:
    """The inverse of ``to_input``: network input -> RGB [0, 1]."""
    black, white = jnp.asarray(to_input.black, jnp.float32), jnp.asarray(to_input.white, jnp.float32)
    rgb_in_network_order = (x - black) / (white - black)
    return rgb_in_network_order[..., list(np.argsort(to_input.order))]


def basis_image(par: Parameterization, v: jax.Array, size: tuple[int, int], decay) -> jax.Array:
    """The zero-centred image (H, W, C) that the basis gives for variable ``v`` (before colour and range)."""
    return par.basis(v, Draw(tuple(size), decay))


def rgb_image(par: Parameterization, v: jax.Array, size: tuple[int, int], decay) -> jax.Array:
    """RGB in [0, 1] (for the plain range: unbounded, centred on 0.5) from variable ``v``; RGBA with ``alpha``."""
    return par.image(v, par.draw(size, None, decay))


def render(par: Parameterization, v: jax.Array, size: tuple[int, int], to_input: InputMap, decay=None) -> jax.Array:
    """The network-input image for variable ``v`` (``Parameterization.render``)."""
    return par.render(v, par.draw(size, to_input, decay))


def variable_for(par: Parameterization, x: jax.Array, size: tuple[int, int], to_input: InputMap,
                 decay=None) -> jax.Array:
    """A variable whose image is the network-input image ``x`` (``Parameterization.variable_for``): the start
    of a feature accentuation."""
    return par.variable_for(x, par.draw(size, to_input, decay))


def opacity_start(par: Parameterization, boxes: jax.Array, valid: jax.Array, size: tuple[int, int],
                  decay=None) -> jax.Array:
    """What ``box_start`` adds to a starting variable: in the opacity channel alone, before the range map,
    the amount that takes mid opacity (0.5) to the box start's opacity at the middle of each valid xyxy box
    of ``boxes`` (B, 4; ``valid`` (B,)), falling to nothing at the ellipse inscribed in the box (a smooth step
    over ``BOX_START_EDGE`` of its radius), the boxes joined by their largest value. Zero without
    ``box_start``."""
    h, w = size
    box_start = par.find(BoxStart)
    if box_start is None:
        return jnp.zeros(par.variable_shape(size), jnp.float32)
    lift = par.range.preimage(box_start.opacity_at_start)
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) + 0.5, jnp.arange(w, dtype=jnp.float32) + 0.5,
                          indexing="ij")

    def one(box, ok):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        rx, ry = jnp.maximum((box[2] - box[0]) / 2, 1.0), jnp.maximum((box[3] - box[1]) / 2, 1.0)
        r = jnp.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
        return jnp.where(ok, jnp.clip((1.0 - r) / BOX_START_EDGE, 0.0, 1.0), 0.0)

    bump = jnp.max(jax.vmap(one)(jnp.asarray(boxes, jnp.float32), jnp.asarray(valid, bool)), axis=0)
    bump = bump * bump * (3.0 - 2.0 * bump)  # smoothstep
    t = jnp.zeros((h, w, par.channels), jnp.float32).at[..., 3].set(lift * bump)
    return par.basis.invert(t, par.draw(size, None, decay))


def composite(x: jax.Array, background: jax.Array) -> jax.Array:
    """An image with opacity (H, W, 4; network-input colours) over ``background`` (H, W, 3, or a colour);
    an image of 3 channels is returned as it is."""
    if x.shape[-1] == 3:
        return x
    a = x[..., 3:]
    return x[..., :3] * a + background * (1.0 - a)


def _mid_grey(to_input: InputMap) -> jax.Array:
    return to_input(jnp.full((3,), 0.5, jnp.float32))


def over_grey(x: jax.Array, to_input: InputMap) -> jax.Array:
    """``x`` composited over mid grey: how an image with opacity is reported and shown by default."""
    return composite(x, _mid_grey(to_input))


def report_background(par: Parameterization, seed, size: tuple[int, int], to_input: InputMap,
                      decay=None) -> jax.Array:
    """The backdrop a point's image with opacity is reported over (network input, H x W x 3): mid grey for
    a backdrop of 0, else a ``background`` of the ``alpha`` stage's backdrop contrast drawn from the point's
    ``seed`` (the same at every snapshot and in the final image, and for a point alone or in a sweep)."""
    stage = par.find(Alpha)
    backdrop = stage.backdrop if stage is not None else 0.0
    if not backdrop:
        return jnp.broadcast_to(_mid_grey(to_input), tuple(size) + (3,))
    key = jax.random.fold_in(jax.random.key(seed), REPORT_KEY)
    return background(par, key, size, to_input, decay, contrast=backdrop)


def background(par: Parameterization, key, size: tuple[int, int], to_input: InputMap, decay=None,
               contrast=None) -> jax.Array:
    """A random network-input background (H, W, 3) for an image with opacity: noise of the chain's own basis
    spectrum (1/f^decay for fourier, white for pixels) and colours, normalised to a spread of
    ``BACKGROUND_STD`` (times the range map's ``spread``) times a contrast drawn uniformly from [0, 1] (from
    flat grey to strong texture) unless ``contrast`` is given, through the chain's colour and range stages."""
    draw = par.draw(size, to_input, decay)
    k_noise, k_contrast = jax.random.split(key)
    t = par.basis(jax.random.normal(k_noise, par.basis.shape(size, 3), jnp.float32), draw)
    spread = BACKGROUND_STD * par.range.spread
    contrast = jax.random.uniform(k_contrast, (), jnp.float32) if contrast is None else contrast
    t = t / (jnp.std(t) + 1e-8) * spread * contrast
    for s in par.stages:
        if BASIS < s.order < OPACITY:
            t = s(t, draw)
    return to_input(t)


def load_stats(name_or_path: str = "shapes") -> dict[str, Any]:
    """Image statistics as ``image_statistics`` writes them: ``colour_sqrt`` (3x3) and ``spectrum_<H>x<W>``
    arrays, from a file jaxvis ships (``"shapes"``: the shapes models') or a path."""
    import os

    from jaxvis import assets

    path = assets.path(assets.STATS_FILES[name_or_path]) if name_or_path in assets.STATS_FILES else name_or_path
    if not os.path.exists(path):
        raise ParameterizationError(f"no image statistics file {path!r}; write one with "
                                    "jaxvis.parameterizations.image_statistics (or python -m "
                                    "experiments.image_statistics --out FILE.npz).")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def stats_of(model, stats: str = "") -> dict[str, Any] | None:
    """The image statistics for ``model``'s parameterisations: ``stats`` (a shipped name or a path) when
    given, else those its spec names (``ModelSpec.image_stats``), else None."""
    name = stats or (model.spec.image_stats if model is not None else "")
    return load_stats(name) if name else None


def spectrum_for(stats: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
    key = f"spectrum_{size[0]}x{size[1]}"
    if key not in stats:
        have = sorted(k for k in stats if k.startswith("spectrum_"))
        raise ParameterizationError(f"the image statistics have no spectrum for a {size[0]}x{size[1]} input "
                                    f"(they have {have}); estimate one with jaxvis.parameterizations.image_statistics "
                                    "(python -m experiments.image_statistics --sizes).")
    return stats[key]
