"""Image parameterisations: the image as a function of the variable the optimiser changes.

A ``Parameterization`` is a small frozen value with three parts, composed with ``+``:

* the **basis** of the variable: ``pixels()`` (a value per pixel and channel), ``fourier(decay)`` (a
  real FFT spectrum, real and imaginary parts, scaled by 1/f^decay: Olah et al. 2017, Lucid's
  ``fft_image``) or ``maco(spectrum)`` (only the Fourier phase; the magnitude is fixed to a given
  amplitude spectrum: Fel et al. 2023, "Unlocking feature visualization for deeper networks with
  magnitude constrained optimization");
* an optional **colour decorrelation** ``decorrelated(matrix)``: the basis gives colours in a
  decorrelated space, mapped back to RGB by the square root of a 3x3 colour covariance;
* the **map into the valid pixel range**: ``sigmoid()`` or ``clip()``.

``fourier() + decorrelated(IMAGENET) + sigmoid()`` is Lucid's standard image.

``pixels()`` alone is the engine's historical form: the variable *is* the image in the network's
input space (the normalised input). Every other combination makes an RGB image in [0, 1] (zero-centred
basis output plus 0.5, through decorrelation and the range map), which ``render`` then normalises into
the network's input space, so what the engine reports is always the network-input image.

Which parts a parameterisation has is static (it selects the compiled program); the Fourier decay is
a per-point number (``render(..., decay=...)``), so a sweep over decays is one vmapped grid.

Fourier convention (the same formula as Lucid's fft_image, written for numpy's FFT): with
``f = sqrt(fy^2 + fx^2)`` the frequencies of ``numpy.fft.fftfreq(h)`` and ``rfftfreq(w)``,
``scale = sqrt(h w) / max(f, 1 / max(h, w))^decay`` and the image ``irfft2(scale (re + i im), s=(h, w)) / 4``.

Colour decorrelation: for a covariance ``C = U diag(s) U^T`` the square root used is Lucid's
``U diag(sqrt(s))``, divided by its largest column norm; a colour ``t`` (row vector) maps to
``t @ M^T``. ``IMAGENET_COLOUR_SQRT`` is the ImageNet matrix published with Lucid
(``lucid/optvis/param/color.py``, ``color_correlation_svd_sqrt``); the shapes models' matrix is
estimated from the shapes generator by ``experiments/image_statistics.py`` and ships in
``jaxvis/assets/shapes_image_stats.npz``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

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


@dataclasses.dataclass(frozen=True)
class Parameterization:
    """How the image is made from the variable (see the module's docstring).

    Attributes:
      basis: "pixels", "fourier" or "maco".
      colour: the 3x3 decorrelation matrix (``Frozen``), or None.
      range: "none", "sigmoid" or "clip".
      spectrum: MACO's magnitude, (H, W // 2 + 1, 3) (``Frozen``), or None.
      decay: the default Fourier decay (a point may give its own).
      alpha: a fourth, opacity channel (see ``alpha()``): the image is a colour layer over a background
        that the engine draws anew for every view, so only what is opaque must do the work.
      backdrop: what an image with opacity is reported over: mid grey (0), or a background of the kind
        the views see with this contrast in (0, 1], drawn from the point's own seed (``report_background``).
      solid: with ``alpha``, the colour layer is one colour, its mean over the image (see ``solid()``).
      box_start: with ``alpha`` and a value in (0, 1): the opacity at the start in the middle of the point's
        target boxes (see ``box_start()``); 0: the start is the same everywhere.
    """

    basis: str = "pixels"
    colour: Frozen | None = None
    range: str = "none"
    spectrum: Frozen | None = None
    decay: float = 1.0
    alpha: bool = False
    backdrop: float = 0.0
    solid: bool = False
    box_start: float = 0.0

    def __post_init__(self):
        if self.basis not in ("pixels", "fourier", "maco"):
            raise ParameterizationError(f"basis must be pixels, fourier or maco, got {self.basis!r}.")
        if self.range not in ("none", "sigmoid", "clip"):
            raise ParameterizationError(f"range must be none, sigmoid or clip, got {self.range!r}.")
        if (self.basis == "maco") != (self.spectrum is not None):
            raise ParameterizationError("a maco parameterisation needs a magnitude spectrum, and only it has one.")
        if self.alpha and self.basis == "maco":
            raise ParameterizationError("alpha needs a free magnitude for its opacity channel; use it with the pixels "
                                        "or fourier basis, not maco.")
        if not 0.0 <= self.backdrop <= 1.0 or (self.backdrop and not self.alpha):
            raise ParameterizationError(f"a backdrop is the contrast, in [0, 1], of the background that an image with "
                                        f"opacity is reported over (alpha(C)); got {self.backdrop!r}.")

        if self.solid and not self.alpha:
            raise ParameterizationError("solid makes the colour layer of an image with opacity one colour: add alpha "
                                        "(e.g. fourier+decorrelated+sigmoid+alpha+solid).")
        if self.box_start:
            _check_box_start(self.box_start)
            if not self.alpha:
                raise ParameterizationError("boxstart starts an image with opacity opaque in its target boxes: add "
                                            "alpha (e.g. fourier+sigmoid+alpha+boxstart(0.9)).")

    def __add__(self, other: "Parameterization") -> "Parameterization":
        if not isinstance(other, Parameterization):
            return NotImplemented
        base = Parameterization()
        merged = {}
        for f in dataclasses.fields(self):
            a, b, default = getattr(self, f.name), getattr(other, f.name), getattr(base, f.name)
            if a != default and b != default and a != b:
                raise ParameterizationError(f"cannot combine two different {f.name}s ({a!r} and {b!r}).")
            merged[f.name] = b if b != default else a
        return Parameterization(**merged)

    @property
    def identity(self) -> bool:
        """The historical form: the variable is the network-input image itself."""
        return self.basis == "pixels" and self.colour is None and self.range == "none" and not self.alpha

    @property
    def channels(self) -> int:
        """Channels of the rendered image: 3, or 4 with the opacity channel last."""
        return 4 if self.alpha else 3

    @property
    def name(self) -> str:
        parts = [f"fourier({self.decay:g})" if self.basis == "fourier" and self.decay != 1 else self.basis]
        if self.colour is not None:
            parts.append("decorrelated")
        if self.range != "none":
            parts.append(self.range)
        if self.alpha:
            parts.append(f"alpha({self.backdrop:g})" if self.backdrop else "alpha")
        if self.solid:
            parts.append("solid")
        if self.box_start:
            parts.append(f"boxstart({self.box_start:g})")
        return "+".join(parts)

    def variable_shape(self, size: tuple[int, int]) -> tuple[int, ...]:
        h, w = size
        if self.basis == "pixels":
            return (h, w, self.channels)
        if self.basis == "fourier":
            return (h, w // 2 + 1, self.channels, 2)
        return (h, w // 2 + 1, 3)

    def check(self, size: tuple[int, int]) -> None:
        if self.alpha and self.range == "none":
            raise ParameterizationError("alpha's opacity must stay in [0, 1]: add a range map (sigmoid or clip).")
        if self.spectrum is not None:
            want = (size[0], size[1] // 2 + 1, 3)
            if self.spectrum.array.shape != want:
                raise ParameterizationError(
                    f"the MACO magnitude spectrum has shape {self.spectrum.array.shape}, but a {size[0]}x{size[1]} "
                    f"input needs {want}; estimate one at the model's input size with experiments/image_statistics.py.")

    def init(self, key, size: tuple[int, int], scale, decay=None) -> jax.Array:
        """A starting variable: zeros for scale 0, else Gaussian noise of std ``scale``; MACO's phase is
        uniform in [-pi, pi) whatever the scale. A ``solid`` image starts from a colour of its own, drawn
        from ``key`` (``SOLID_COLOUR_STD`` around mid grey before the colour and range maps): mid grey, the
        colour of no object, over backgrounds around mid grey gives the network nothing to answer, and its
        opacity fades before its colour can move."""
        shape = self.variable_shape(size)
        if self.basis == "maco":
            return jax.random.uniform(key, shape, jnp.float32, -np.pi, np.pi)
        noise = jax.random.normal(key, shape, jnp.float32)
        v = jnp.where(scale > 0, scale * noise, jnp.zeros_like(noise))
        if self.solid:
            mean = SOLID_COLOUR_STD * jax.random.normal(jax.random.fold_in(key, SOLID_KEY), (3,), jnp.float32)
            if self.basis == "pixels":
                v = v.at[..., :3].add(mean)
            else:  # the mean of the basis image is the DC bin times its scale over 4 h w
                dc = fourier_scale(size, self.decay if decay is None else decay)[0, 0]
                v = v.at[0, 0, :3, 0].add(mean * (4.0 * size[0] * size[1]) / dc)
        return v


def pixels() -> Parameterization:
    """A value per pixel and channel (alone: the network-input image itself, the engine's default)."""
    return Parameterization(basis="pixels")


def fourier(decay: float = 1.0) -> Parameterization:
    """The real FFT spectrum, scaled by 1/f^decay (Lucid's fft_image); ``decay`` is the default of the
    points that give none."""
    return Parameterization(basis="fourier", decay=float(decay))


def maco(spectrum) -> Parameterization:
    """The Fourier phase alone, the magnitude fixed to ``spectrum`` (H, W // 2 + 1, 3), an amplitude
    spectrum of zero-centred images (``experiments/image_statistics.py`` estimates one)."""
    s = np.asarray(spectrum, np.float32)
    if s.ndim != 3 or s.shape[-1] != 3 or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ParameterizationError(f"a MACO spectrum is a finite, non-negative (H, W // 2 + 1, 3) array; got shape "
                                    f"{s.shape}.")
    return Parameterization(basis="maco", spectrum=Frozen(s))


def decorrelated(matrix=IMAGENET_COLOUR_SQRT) -> Parameterization:
    """Colours in a decorrelated space, mapped to RGB by ``matrix`` (a covariance square root, made
    unit by its largest column norm)."""
    m = np.asarray(matrix, np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise ParameterizationError(f"a colour decorrelation matrix is 3x3 and finite; got shape {m.shape}.")
    norm = np.max(np.linalg.norm(m, axis=0))
    if norm == 0:
        raise ParameterizationError("the colour decorrelation matrix is zero.")
    return Parameterization(colour=Frozen(m / norm))


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
    return Parameterization(alpha=True, backdrop=float(backdrop))


def solid() -> Parameterization:
    """An image with opacity (it brings ``alpha``) whose colour layer is one colour, the mean of the colours
    the basis makes: a silhouette in a single flat colour over the views' random backgrounds. Only the
    opacity can draw, so what the network reads must be in the outline; for models trained on flat-coloured
    objects (the shapes models) it keeps the image in the family they were trained on, with no texture
    inside the object for a class model to exploit."""
    return Parameterization(alpha=True, solid=True)


def box_start(opacity: float = 0.9) -> Parameterization:
    """An image with opacity (it brings ``alpha``) that starts opaque in its target boxes: the opacity at the
    start is ``opacity`` in the middle of each of the point's target boxes, falling off smoothly over the
    ellipse inscribed in the box, and unchanged outside (``opacity_start``). From a transparent start the
    opacity penalty can empty the box before the objective has drawn anything there; from an opaque one
    the objective shapes what is there. The ellipse favours no class of the shapes: its outline is what
    the optimisation redraws."""
    _check_box_start(opacity)
    return Parameterization(alpha=True, box_start=float(opacity))


def _check_box_start(opacity: float) -> None:
    if not 0.0 < opacity < 1.0:
        raise ParameterizationError(f"boxstart(P) starts an image with opacity at opacity P, in (0, 1), inside its "
                                    f"target boxes (e.g. fourier+sigmoid+alpha+boxstart(0.9)); got {opacity!r}.")


def sigmoid() -> Parameterization:
    return Parameterization(range="sigmoid")


def clip() -> Parameterization:
    return Parameterization(range="clip")


def covariance_sqrt(cov) -> np.ndarray:
    """Lucid's square root of a colour covariance: ``U diag(sqrt(s))`` of its SVD."""
    u, s, _ = np.linalg.svd(np.asarray(cov, np.float64))
    return u * np.sqrt(s)[None, :]


def image_statistics(images_at: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """The statistics ``experiments/image_statistics.py`` writes, from ``images_at``: size -> (N, size,
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


def basis_image(par: Parameterization, v: jax.Array, size: tuple[int, int], decay) -> jax.Array:
    """The zero-centred image (H, W, C) that the basis gives for variable ``v`` (before colour and range)."""
    h, w = size
    if par.basis == "pixels":
        return v
    if par.basis == "fourier":
        scale = fourier_scale(size, decay)
        spectrum = jax.lax.complex(v[..., 0] * scale[..., None], v[..., 1] * scale[..., None])
        return jnp.fft.irfft2(spectrum, s=(h, w), axes=(0, 1)) / 4.0
    magnitude = jnp.asarray(hermitian_magnitude(par.spectrum.array, w))
    phase = _odd_phase(v, w)
    spectrum = jax.lax.complex(magnitude * jnp.cos(phase), magnitude * jnp.sin(phase))
    return jnp.fft.irfft2(spectrum, s=(h, w), axes=(0, 1))


def rgb_image(par: Parameterization, v: jax.Array, size: tuple[int, int], decay) -> jax.Array:
    """RGB in [0, 1] (for range none: unbounded, centred on 0.5) from variable ``v``; RGBA with ``alpha``
    (the opacity made by the same range map, not colour-decorrelated; with ``solid``, the colours replaced
    by their mean over the image)."""
    rgb = _colour_and_range(par, basis_image(par, v, size, decay))
    if par.solid:
        colour = jnp.mean(rgb[..., :3], axis=(0, 1), keepdims=True)
        rgb = jnp.concatenate([jnp.broadcast_to(colour, rgb.shape[:-1] + (3,)), rgb[..., 3:]], -1)
    return rgb


def _colour_and_range(par: Parameterization, t: jax.Array) -> jax.Array:
    """A zero-centred basis image (H, W, C) through the colour decorrelation (its first three channels) and
    the range map."""
    if par.colour is not None:
        rgb = jnp.einsum("hwc,dc->hwd", t[..., :3], jnp.asarray(par.colour.array), precision=jax.lax.Precision.HIGHEST)
        t = jnp.concatenate([rgb, t[..., 3:]], -1)
    if par.range == "sigmoid":
        return jax.nn.sigmoid(t)
    if par.range == "clip":
        return jnp.clip(t + 0.5, 0.0, 1.0)
    return t + 0.5


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


def variable_for(par: Parameterization, x: jax.Array, size: tuple[int, int], to_input: InputMap,
                 decay=None, margin: float = 1e-3) -> jax.Array:
    """A variable whose image is the network-input image ``x`` (H, W, 3): the start of a feature
    accentuation. Exact for every basis but MACO, whose magnitude is fixed: it keeps ``x``'s phase (the
    image's structure) under the given magnitude, and for ``solid``, whose image takes the mean of ``x``'s
    colours. A sigmoid range cannot reach 0 or 1, so colours are first moved ``margin`` inside [0, 1]."""
    if par.identity:
        return jnp.asarray(x, jnp.float32)
    decay = par.decay if decay is None else decay
    rgb = from_input(to_input, jnp.asarray(x, jnp.float32))
    if par.range == "sigmoid":
        rgb = jnp.clip(rgb, margin, 1.0 - margin)
        t = jnp.log(rgb) - jnp.log1p(-rgb)
    else:
        t = rgb - 0.5
    if par.colour is not None:  # t = b @ M^T
        inverse = np.linalg.inv(par.colour.array.astype(np.float64)).astype(np.float32)
        t = jnp.einsum("hwd,cd->hwc", t, jnp.asarray(inverse), precision=jax.lax.Precision.HIGHEST)
    if par.alpha:  # the start image opaque
        opaque = np.log((1.0 - margin) / margin) if par.range == "sigmoid" else 0.5 - margin
        t = jnp.concatenate([t, jnp.full(t.shape[:2] + (1,), opaque, jnp.float32)], -1)
    return _variable_of_basis_image(par, t, size, decay)


def _variable_of_basis_image(par: Parameterization, t: jax.Array, size: tuple[int, int], decay) -> jax.Array:
    """The variable whose ``basis_image`` is ``t`` (H, W, C); for MACO, ``t``'s phase."""
    if par.basis == "pixels":
        return t
    spectrum = jnp.fft.rfft2(t, axes=(0, 1))
    if par.basis == "maco":
        return jnp.angle(spectrum).astype(jnp.float32)
    factor = (4.0 / fourier_scale(size, decay))[..., None]
    return jnp.stack([jnp.real(spectrum) * factor, jnp.imag(spectrum) * factor], -1).astype(jnp.float32)


BOX_START_EDGE = 0.15  # the width of the fall-off of a box start, as a share of the ellipse's radius


def opacity_start(par: Parameterization, boxes: jax.Array, valid: jax.Array, size: tuple[int, int],
                  decay=None) -> jax.Array:
    """What ``box_start`` adds to a starting variable: in the opacity channel alone, before the range map,
    the amount that takes mid opacity (0.5) to ``par.box_start`` at the middle of each valid xyxy box of
    ``boxes`` (B, 4; ``valid`` (B,)), falling to nothing at the ellipse inscribed in the box (a smooth step
    over ``BOX_START_EDGE`` of its radius), the boxes joined by their largest value. Zero without
    ``box_start``."""
    h, w = size
    decay = par.decay if decay is None else decay
    if not par.box_start:
        return jnp.zeros(par.variable_shape(size), jnp.float32)
    lift = (np.log(par.box_start / (1.0 - par.box_start)) if par.range == "sigmoid" else par.box_start - 0.5)
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) + 0.5, jnp.arange(w, dtype=jnp.float32) + 0.5,
                          indexing="ij")

    def one(box, ok):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        rx, ry = jnp.maximum((box[2] - box[0]) / 2, 1.0), jnp.maximum((box[3] - box[1]) / 2, 1.0)
        r = jnp.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
        return jnp.where(ok, jnp.clip((1.0 - r) / BOX_START_EDGE, 0.0, 1.0), 0.0)

    bump = jnp.max(jax.vmap(one)(jnp.asarray(boxes, jnp.float32), jnp.asarray(valid, bool)), axis=0)
    bump = bump * bump * (3.0 - 2.0 * bump)  # smoothstep
    t = jnp.zeros((h, w, 4), jnp.float32).at[..., 3].set(lift * bump)
    return _variable_of_basis_image(par, t, size, decay)


def render(par: Parameterization, v: jax.Array, size: tuple[int, int], to_input: InputMap, decay=None) -> jax.Array:
    """The network-input image (H, W, 3) for variable ``v``; with ``alpha``, (H, W, 4): the network-input
    colours and the opacity in [0, 1] last."""
    decay = par.decay if decay is None else decay
    if par.identity:
        return v
    rgb = rgb_image(par, v, size, decay)
    if par.alpha:
        return jnp.concatenate([to_input(rgb[..., :3]), rgb[..., 3:]], -1)
    return to_input(rgb)


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


REPORT_KEY = 0x6C000000  # the backdrop of a point's reported image folds this into the key of its seed


def report_background(par: Parameterization, seed, size: tuple[int, int], to_input: InputMap,
                      decay=None) -> jax.Array:
    """The backdrop a point's image with opacity is reported over (network input, H x W x 3): mid grey for
    ``par.backdrop`` 0, else a ``background`` of contrast ``par.backdrop`` drawn from the point's ``seed``
    (the same at every snapshot and in the final image, and for a point alone or in a sweep)."""
    if not par.backdrop:
        return jnp.broadcast_to(_mid_grey(to_input), size + (3,))
    key = jax.random.fold_in(jax.random.key(seed), REPORT_KEY)
    return background(par, key, size, to_input, decay, contrast=par.backdrop)


BACKGROUND_STD = 2.0  # the random backgrounds' spread before the range map: sigmoid(+-2) = 0.12 .. 0.88


def background(par: Parameterization, key, size: tuple[int, int], to_input: InputMap, decay=None,
               contrast=None) -> jax.Array:
    """A random network-input background (H, W, 3) for an image with opacity: noise of the parameterisation's
    own basis spectrum (1/f^decay for fourier, white for pixels) and colours, normalised to a spread of
    ``BACKGROUND_STD`` times a contrast drawn uniformly from [0, 1] (from flat grey to strong texture) unless
    ``contrast`` is given, through its range map."""
    decay = par.decay if decay is None else decay
    k_noise, k_contrast = jax.random.split(key)
    # no opacity (the pixels or fourier basis alone)
    colours = dataclasses.replace(par, alpha=False, backdrop=0.0, solid=False, box_start=0.0)
    t = basis_image(colours, jax.random.normal(k_noise, colours.variable_shape(size), jnp.float32), size, decay)
    spread = BACKGROUND_STD if par.range == "sigmoid" else BACKGROUND_STD / 4.0  # clip's range is t + 0.5
    contrast = jax.random.uniform(k_contrast, (), jnp.float32) if contrast is None else contrast
    t = t / (jnp.std(t) + 1e-8) * spread * contrast
    return to_input(_colour_and_range(colours, t))


def load_stats(name_or_path: str = "shapes") -> dict[str, Any]:
    """Image statistics written by ``experiments/image_statistics.py``: ``colour_sqrt`` (3x3) and
    ``spectrum_<H>x<W>`` arrays. ``"shapes"`` is the file shipped for the shapes models."""
    import os

    from jaxvis import assets

    path = assets.path("shapes_image_stats.npz") if name_or_path == "shapes" else name_or_path
    if not os.path.exists(path):
        raise ParameterizationError(f"no image statistics file {path!r}; write one with "
                                    "python -m experiments.image_statistics --out FILE.npz.")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def spectrum_for(stats: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
    key = f"spectrum_{size[0]}x{size[1]}"
    if key not in stats:
        have = sorted(k for k in stats if k.startswith("spectrum_"))
        raise ParameterizationError(f"the image statistics have no spectrum for a {size[0]}x{size[1]} input "
                                    f"(they have {have}); estimate one with experiments/image_statistics.py --sizes.")
    return stats[key]
