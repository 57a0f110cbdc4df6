"""Random transforms: each against a reference of its formula, per-point keys (a point alone equals the
point inside a sweep; reruns are bit-identical), the historical jitter kept, bad transforms refused."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.ndimage

from jaxvis import cli
from jaxvis import engine
from jaxvis import objectives as obj
from jaxvis import parameterizations as par
from jaxvis import transforms as tfm
from tiny import tiny_vgg

CTX = tfm.Context(steps=10, fill=(0.1, -0.2, 0.3))


@pytest.fixture(scope="module")
def vgg():
    return tiny_vgg(0)


def image(h=16, w=16, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((h, w, 3)).astype(np.float32))


def test_identity_settings_leave_the_image():
    x = image()
    key = jax.random.key(0)
    for tr in (tfm.scale(1.0, 1.0), tfm.rotate(0.0), tfm.crop(1.0, 1.0), tfm.jitter(0), tfm.noise(0.0)):
        np.testing.assert_allclose(np.asarray(tr(key, x, None, 3, CTX)[0]), np.asarray(x), atol=1e-5, err_msg=tr.name)
    np.testing.assert_array_equal(np.asarray(tfm.apply((tfm.pad(5),), x, np.uint32(0), 0, CTX)), np.asarray(x))


def test_pad_fills_grey_and_jitter_after_pad_reveals_it():
    x = image(8, 8)
    padded = np.asarray(tfm.pad(3)(None, x, None, 0, CTX)[0])
    assert padded.shape == (14, 14, 3)
    np.testing.assert_array_equal(padded[:3, :, 1], np.float32(-0.2))
    np.testing.assert_array_equal(padded[3:11, 3:11], np.asarray(x))
    seen = np.asarray(tfm.apply((tfm.pad(3), tfm.jitter(3)), x, np.uint32(4), 2, CTX))
    key = jax.random.fold_in(tfm.step_key(np.uint32(4), 2), 1)
    dy, dx = np.asarray(jax.random.randint(key, (2,), -3, 4))
    want = np.roll(padded, (dy, dx), axis=(0, 1))[3:11, 3:11]
    np.testing.assert_array_equal(seen, want)


def test_jitter_keeps_the_engines_historical_shift():
    """The jitter setting drew fold_in(key(seed + 1), t) and rolled by randint(-n, n + 1): same images."""
    x = image(12, 12)
    for seed, t in [(0, 0), (7, 5), (123, 199)]:
        key = jax.random.fold_in(jax.random.key(np.uint32(seed) + np.uint32(1)), t)
        shift = tuple(jax.random.randint(key, (2,), -4, 5))
        want = np.asarray(jnp.roll(x, shift, axis=(0, 1)))
        np.testing.assert_array_equal(np.asarray(tfm.apply((tfm.jitter(4),), x, np.uint32(seed), t, CTX)), want)


def test_scale_rotate_and_crop_sample_where_their_formula_says():
    x = image(15, 17, seed=1)
    key = jax.random.key(3)
    fill = np.asarray(CTX.fill)
    c = np.array([(15 - 1) / 2, (17 - 1) / 2])
    rows, cols = np.meshgrid(np.arange(15.0), np.arange(17.0), indexing="ij")

    def ref(coords):
        return np.stack([scipy.ndimage.map_coordinates(np.asarray(x)[..., k] - fill[k], coords, order=1, mode="grid-constant",
                                                       cval=0.0) + fill[k] for k in range(3)], -1)

    s = float(jax.random.uniform(key, (), jnp.float32, 0.7, 1.3))
    want = ref([(rows - c[0]) / s + c[0], (cols - c[1]) / s + c[1]])
    np.testing.assert_allclose(np.asarray(tfm.scale(0.7, 1.3)(key, x, None, 0, CTX)[0]), want, atol=1e-5)

    theta = np.deg2rad(float(jax.random.uniform(key, (), jnp.float32, -30, 30)))
    r, q = rows - c[0], cols - c[1]
    want = ref([np.cos(theta) * r - np.sin(theta) * q + c[0], np.sin(theta) * r + np.cos(theta) * q + c[1]])
    np.testing.assert_allclose(np.asarray(tfm.rotate(30)(key, x, None, 0, CTX)[0]), want, atol=1e-5)
    # wrap: the image repeated with period (15, 17) instead of grey outside it
    coords = [np.cos(theta) * r - np.sin(theta) * q + c[0], np.sin(theta) * r + np.cos(theta) * q + c[1]]
    want = np.stack([scipy.ndimage.map_coordinates(np.asarray(x)[..., k], coords, order=1, mode="grid-wrap")
                     for k in range(3)], -1)
    np.testing.assert_allclose(np.asarray(tfm.rotate(30, wrap=True)(key, x, None, 0, CTX)[0]), want, atol=1e-5)
    coords = [(rows - c[0]) / s + c[0], (cols - c[1]) / s + c[1]]
    want = np.stack([scipy.ndimage.map_coordinates(np.asarray(x)[..., k], coords, order=1, mode="grid-wrap")
                     for k in range(3)], -1)
    np.testing.assert_allclose(np.asarray(tfm.scale(0.7, 1.3, wrap=True)(key, x, None, 0, CTX)[0]), want, atol=1e-5)

    for t in (0, 4, 9):  # MACO's schedule: the side goes linearly from 1.0 to 0.4 of the image
        f = 1.0 + (0.4 - 1.0) * t / 9
        corner = np.asarray(jax.random.uniform(key, (2,), jnp.float32)) * (1 - f) * np.array([15, 17])
        want = ref([corner[0] + (rows + 0.5) * f - 0.5, corner[1] + (cols + 0.5) * f - 0.5])
        np.testing.assert_allclose(np.asarray(tfm.crop(1.0, 0.4)(key, x, None, t, CTX)[0]), want, atol=1e-5, err_msg=str(t))


def test_consecutive_scales_and_rotations_are_one_warp_and_their_gradient_is_the_samplings():
    """jitter, scale, rotate, scale of one mode: one bilinear sampling at the composed coordinates (each
    transform's draw from its own key), against scipy; a mode change splits the run; the gradient of the
    gathered form equals the gradient of jax's map_coordinates per channel."""
    x = image(15, 17, seed=2)
    seed, t = np.uint32(5), 3
    base = tfm.step_key(seed, t)
    fill = np.asarray(CTX.fill)
    c = np.array([(15 - 1) / 2, (17 - 1) / 2])
    rows, cols = np.meshgrid(np.arange(15.0), np.arange(17.0), indexing="ij")
    for wrap in (False, True):
        chain = (tfm.jitter(2), tfm.scale(0.7, 1.3, wrap=wrap), tfm.rotate(40, wrap=wrap), tfm.scale(0.9, 1.2, wrap=wrap))
        dy, dx = np.asarray(jax.random.randint(base, (2,), -2, 3))
        shifted = np.roll(np.asarray(x), (dy, dx), axis=(0, 1))
        s1 = float(jax.random.uniform(jax.random.fold_in(base, 1), (), jnp.float32, 0.7, 1.3))
        theta = np.deg2rad(float(jax.random.uniform(jax.random.fold_in(base, 2), (), jnp.float32, -40, 40)))
        s2 = float(jax.random.uniform(jax.random.fold_in(base, 3), (), jnp.float32, 0.9, 1.2))
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        m = (np.eye(2) / s1) @ rot @ (np.eye(2) / s2)
        r, q = rows - c[0], cols - c[1]
        coords = [m[0, 0] * r + m[0, 1] * q + c[0], m[1, 0] * r + m[1, 1] * q + c[1]]
        if wrap:
            want = np.stack([scipy.ndimage.map_coordinates(shifted[..., k], coords, order=1, mode="grid-wrap")
                             for k in range(3)], -1)
        else:
            want = np.stack([scipy.ndimage.map_coordinates(shifted[..., k] - fill[k], coords, order=1,
                                                           mode="grid-constant", cval=0.0) + fill[k] for k in range(3)], -1)
        np.testing.assert_allclose(np.asarray(tfm.apply(chain, x, seed, t, CTX)), want, atol=1e-5, err_msg=str(wrap))
    # a change of mode ends the run: the rotation samples the scaled image, not the original
    split = (tfm.scale(0.7, 1.3), tfm.rotate(40, wrap=True))
    one = tfm.scale(0.7, 1.3)(base, x, None, t, CTX)[0]
    want = tfm.rotate(40, wrap=True)(jax.random.fold_in(base, 1), one, None, t, CTX)[0]
    np.testing.assert_array_equal(np.asarray(tfm.apply(split, x, seed, t, CTX)), np.asarray(want))

    coords = jnp.asarray(np.random.default_rng(3).uniform(-4, 20, (2, 15, 17)), jnp.float32)
    weights = jnp.asarray(np.random.default_rng(4).standard_normal((15, 17, 3)), jnp.float32)
    for wrap in (False, True):
        def reference(z):
            mode = "wrap" if wrap else "constant"
            return jnp.stack([jax.scipy.ndimage.map_coordinates(z[..., k] - (0 if wrap else fill[k]), [coords[0], coords[1]],
                                                                order=1, mode=mode, cval=0.0) for k in range(3)], -1)
        got = jax.grad(lambda z: jnp.sum(weights * tfm._sample(z, coords, jnp.asarray(fill, jnp.float32), wrap)))(x)
        want = jax.grad(lambda z: jnp.sum(weights * reference(z)))(x)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_blur_is_a_gaussian_filter_and_noise_has_its_std():
    x = image(20, 20, seed=2)
    want = scipy.ndimage.gaussian_filter(np.asarray(x, np.float64), sigma=(1.0, 1.0, 0), mode="nearest", truncate=3.0)
    np.testing.assert_allclose(np.asarray(tfm.blur(1.0)(None, x, None, 0, CTX)[0]), want, atol=1e-5)
    big = jnp.zeros((200, 200, 3), jnp.float32)
    noisy = np.asarray(tfm.noise(0.3)(jax.random.key(1), big, None, 0, CTX)[0])
    assert abs(noisy.std() - 0.3) < 0.01


def test_recolour_mixes_towards_one_flat_colour_and_transforms_leave_opacity_to_the_warps():
    ctx = tfm.Context(steps=10, fill=(0.1, -0.2, 0.3, 0.0), lo=(-2.0, -1.5, -1.8), hi=(2.2, 2.6, 2.4))
    x = jnp.concatenate([image(12, 12, seed=3), jnp.linspace(0, 1, 144).reshape(12, 12, 1)], -1)
    shares, colours = [], []
    for i in range(64):
        y = np.asarray(tfm.recolour(0.8)(jax.random.key(i), x, None, 0, ctx)[0])
        np.testing.assert_array_equal(y[..., 3], x[..., 3])  # the opacity is not a colour
        # y = (1 - s) x + s c for one share s and one colour c: differences of pixels shrink by 1 - s
        s = 1.0 - (y[0, 0, :3] - y[5, 7, :3]) / np.asarray(x[0, 0, :3] - x[5, 7, :3])
        np.testing.assert_allclose(s, s[0], atol=1e-4)
        colour = (y[..., :3] - (1 - s[0]) * np.asarray(x[..., :3])) / s[0]
        np.testing.assert_allclose(colour, np.broadcast_to(colour[0, 0], colour.shape), atol=1e-3)
        shares.append(s[0])
        colours.append(colour[0, 0])
    shares, colours = np.asarray(shares), np.asarray(colours)
    assert shares.min() >= 0 and shares.max() <= 0.8 and shares.max() > 0.7 and shares.min() < 0.1
    assert np.all(colours >= np.asarray(ctx.lo) - 1e-3) and np.all(colours <= np.asarray(ctx.hi) + 1e-3)
    np.testing.assert_array_equal(np.asarray(tfm.recolour(0)(jax.random.key(0), x, None, 0, ctx)[0]), np.asarray(x))
    noisy = np.asarray(tfm.noise(0.5)(jax.random.key(1), x, None, 0, ctx)[0])
    np.testing.assert_array_equal(noisy[..., 3], x[..., 3])
    assert cli.transforms("recolour(0.5)") == (tfm.recolour(0.5),) and tfm.recolour(0.5).name == "recolour(0.5)"
    with pytest.raises(tfm.TransformError, match="recolour takes the largest share"):
        tfm.recolour(1.5)
    with pytest.raises(tfm.TransformError, match="give the Context lo and hi"):
        tfm.recolour(0.5)(jax.random.key(0), x, None, 0, CTX)
    # pads and warps carry the opacity like a colour, transparent outside the image
    padded = np.asarray(tfm.apply((tfm.pad(2), tfm.rotate(30)), x, 0, 0, ctx))
    assert padded.shape == (12, 12, 4) and padded[0, 0, 3] == 0.0


@pytest.mark.parametrize("text", ["pad(6),jitter(5)", "scale(0.7,1.3)", "rotate(180)", "rotate(180,wrap)",
                                  "jitter(3),scale(0.8,1.2),rotate(90),jitter(2)", "crop(0.9,0.6)",
                                  "pad(4),crop(1.0,0.5),blur(1),noise(0.01)"])
def test_target_boxes_move_with_the_image(text):
    """A disc's box, moved by the transforms, is the box of the disc in the transformed image (turns keep
    a disc's box size), for several seeds and steps."""
    yy, xx = np.mgrid[:96, :96] + 0.5
    cx, cy, r = 40.0, 53.0, 12.0
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.float32)
    x = jnp.asarray(np.repeat(disc[..., None], 3, -1))
    box = jnp.asarray([[cx - r, cy - r, cx + r, cy + r]], jnp.float32)
    ctx = tfm.Context(steps=10, fill=(0.0, 0.0, 0.0))
    compared = 0
    for seed in range(8):
        t = seed % 10
        y, moved = tfm.apply(cli.transforms(text), x, seed, t, ctx, boxes=box)
        moved = np.asarray(moved)[0]
        if moved.min() < 0 or moved.max() > 96:  # a crop may leave part of the disc out of view
            continue
        rows, cols = np.nonzero(np.asarray(y)[..., 0] > 0.5)
        found = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        np.testing.assert_allclose(found, moved, atol=1.6, err_msg=f"{text} seed {seed} step {t}")
        compared += 1
    assert compared >= 4, compared
    assert tfm.apply((), x, 0, 0, ctx, boxes=box)[1] is box


STOCHASTIC = (tfm.pad(4), tfm.jitter(4), tfm.scale(0.9, 1.1), tfm.rotate(10), tfm.crop(1.0, 0.6), tfm.noise(0.02))


LUCID_IMAGE = par.fourier() + par.decorrelated() + par.sigmoid()


# the Lucid image (and two views) compile programs of their own: slow; pixels through the same transforms stays
@pytest.mark.parametrize("parameterization,views", [(par.pixels(), 1), pytest.param(LUCID_IMAGE, 1, marks=pytest.mark.slow),
                                                    pytest.param(LUCID_IMAGE, 2, marks=pytest.mark.slow)],
                         ids=["pixels", "fourier", "fourier-2views"])
def test_a_point_alone_equals_the_point_in_a_sweep_and_reruns_are_bit_identical(vgg, parameterization, views):
    terms = [obj.score().terms[0], obj.tv().terms[0]]
    kw = dict(optimizer=engine.Optimizer(optax.adam), steps=6, snapshots=[3], transforms=STOCHASTIC,
              parameterization=parameterization, views=views)
    loss = (obj.score() + 0.5 * obj.tv())
    sweep = engine.Sweep(targets=[1, 4], lrs=[0.05], losses=[loss], init_scales=[0.1], seeds=[3, 8])
    eng = engine.Engine(vgg, terms, **kw)
    grid = eng.run(sweep, chunk_size=4, progress=False)
    again = engine.Engine(vgg, terms, **kw).run(sweep, chunk_size=4, progress=False)  # a fresh engine
    for name in ("images", "loss", "final_loss"):
        np.testing.assert_array_equal(getattr(again, name), getattr(grid, name), err_msg=name)
    np.testing.assert_array_equal(again.snapshots[3], grid.snapshots[3])
    k = 3  # target 4, seed 8
    assert sweep.point_axes()[k]["seed"] == 8 and sweep.point_axes()[k]["target"] == 4
    alone_sweep = engine.Sweep(targets=[4], lrs=[0.05], losses=[loss], init_scales=[0.1], seeds=[8])
    alone = eng.run(alone_sweep, chunk_size=4, progress=False)
    # A chunk of the same size (the lone point padded with copies of itself) runs the same program: bit for bit.
    np.testing.assert_array_equal(alone.images[0], grid.images[k])
    np.testing.assert_array_equal(alone.loss[:, 0], grid.loss[:, k])
    # In a chunk of another size XLA may order the sums differently: equal to float32 rounding.
    single = eng.run(alone_sweep, chunk_size=1, progress=False)
    np.testing.assert_allclose(single.images[0], grid.images[k], rtol=0, atol=1e-5 * np.abs(grid.images[k]).max())


def test_jitter_setting_is_the_first_transform(vgg):
    terms = obj.score().terms
    sweep = engine.Sweep(targets=[2], lrs=[1.0], losses=[obj.score()], init_scales=[0.5], seeds=[1])
    a = engine.Engine(vgg, terms, steps=4, jitter=3).run(sweep, progress=False)
    b = engine.Engine(vgg, terms, steps=4, transforms=[tfm.jitter(3)]).run(sweep, progress=False)
    np.testing.assert_array_equal(a.images, b.images)
    assert engine.Engine(vgg, terms, jitter=2, transforms=[tfm.blur(1.0)]).transforms == (tfm.jitter(2), tfm.blur(1.0))


def test_text_form_and_bad_transforms():
    assert cli.transforms("pad(4), jitter(8),scale(0.9,1.1),rotate(10),crop(1,0.5),blur(0.5),noise(0.02)") == (
        tfm.pad(4), tfm.jitter(8), tfm.scale(0.9, 1.1), tfm.rotate(10), tfm.crop(1.0, 0.5), tfm.blur(0.5),
        tfm.noise(0.02))
    assert [t.name for t in cli.transforms("scale(0.9,1.1),crop(1,0.5)")] == ["scale(0.9,1.1)", "crop(1,0.5)"]
    with pytest.raises(tfm.TransformError, match="unknown transform 'zoom'"):
        cli.transforms("zoom(2)")
    with pytest.raises(tfm.TransformError, match="scale takes factors 0 < lo <= hi"):
        cli.transforms("scale(1.2,0.8)")
    with pytest.raises(tfm.TransformError, match="cannot read transforms"):
        cli.transforms("jitter 4")
    with pytest.raises(tfm.TransformError, match="crop takes side fractions"):
        tfm.crop(1.0, 0.0)
    with pytest.raises(tfm.TransformError, match="cannot read transform 'rotate\\(1,0.5,2\\)'"):
        cli.transforms("rotate(1,0.5,2)")
    assert cli.transforms("scale(0.8,1.2,wrap),rotate(180, wrap)") == (tfm.scale(0.8, 1.2, wrap=True),
                                                                   tfm.rotate(180, wrap=True))
    assert [t.name for t in cli.transforms("rotate(180,wrap),rotate(5)")] == ["rotate(180,wrap)", "rotate(5)"]
    for bad in ("jitter(4,wrap)", "rotate(wrap,10)", "scale(0.8,1.2,wrap,wrap)"):
        with pytest.raises(tfm.TransformError, match="only scale and rotate take wrap"):
            cli.transforms(bad)


@pytest.mark.slow  # eager gradients of the tiny VGG per view; test_plain_views stays
def test_views_average_the_loss_over_independent_copies_and_view_0_is_the_single_view(vgg):
    """With views=3 the step's loss (and gradient) is the mean over three transformed copies, each drawn
    from its own key; view 0 draws what a single-view engine draws."""
    from jaxvis.engine import core

    terms = obj.score().terms
    sweep = engine.Sweep(targets=[2], lrs=[0.05], losses=[obj.score()], init_scales=[0.3], seeds=[5])
    transforms = (tfm.pad(4), tfm.jitter(4), tfm.rotate(15))
    one = engine.Engine(vgg, terms, optimizer=engine.Optimizer(optax.adam), steps=3, transforms=transforms)
    three = one.replace(views=3)
    pts = jax.tree.map(jnp.asarray, sweep.arrays(one.term_names))
    v, _, _, _ = core.init_chunk(three.config, pts)
    p0 = jax.tree.map(lambda a: a[0], pts)
    x = core.render(three.config, v[0], p0)
    views = [core.seen(three.config, x, p0, 2, k) for k in range(3)]
    assert not np.array_equal(np.asarray(views[0]), np.asarray(views[1]))
    np.testing.assert_array_equal(np.asarray(views[0]), np.asarray(core.seen(one.config, x, p0, 2)))
    single = [core.loss(three.config, vgg.params, x, p0, view=view) for view in views]

    total, (_, score, prob) = core.view_loss(three.config, vgg.params, x, p0, 2)
    np.testing.assert_allclose(total, np.mean([s[0] for s in single]), rtol=1e-5)
    np.testing.assert_allclose(score, np.mean([s[1][1] for s in single]), rtol=1e-5)
    np.testing.assert_allclose(prob, np.mean([s[1][2] for s in single]), rtol=1e-5)

    def loss_of_view(xi, k):
        return core.loss(three.config, vgg.params, xi, p0, view=core.seen(three.config, xi, p0, 2, k))[0]

    grad = jax.grad(lambda xi: core.view_loss(three.config, vgg.params, xi, p0, 2)[0])(x)
    each = [jax.grad(loss_of_view)(x, k) for k in range(3)]
    np.testing.assert_allclose(grad, np.mean(each, axis=0), rtol=1e-4, atol=1e-6 * float(np.abs(grad).max()))
    assert three.run(sweep, progress=False).images.shape == (1, 64, 64, 3)
    with pytest.raises(engine.SweepError, match="views is a number"):
        one.replace(views=0)
    with pytest.raises(engine.SweepError, match="has none"):
        engine.Engine(vgg, terms, views=2)


def test_plain_views_see_the_image_as_it_is_and_the_others_as_without_them(vgg):
    """plain_views=1 of views=3: view 0 is the image untransformed (its target boxes unmoved), views 1 and 2
    are what an engine without plain views draws for them, and the loss is the mean over the three."""
    from jaxvis.engine import core

    terms = obj.score().terms
    sweep = engine.Sweep(targets=[2], lrs=[0.05], losses=[obj.score()], init_scales=[0.3], seeds=[5])
    transforms = (tfm.jitter(4), tfm.scale(0.8, 1.2), tfm.rotate(30))
    three = engine.Engine(vgg, terms, optimizer=engine.Optimizer(optax.adam), steps=3, transforms=transforms, views=3)
    plain = three.replace(plain_views=1)
    pts = jax.tree.map(jnp.asarray, sweep.arrays(three.term_names))
    p0 = jax.tree.map(lambda a: a[0], pts)
    x = core.render(plain.config, core.init_chunk(plain.config, pts)[0][0], p0)
    view0, boxes0 = core.seen(plain.config, x, p0, 2, 0, with_boxes=True)
    np.testing.assert_array_equal(np.asarray(view0), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(boxes0), np.asarray(p0["boxes"]))
    assert not np.array_equal(np.asarray(core.seen(three.config, x, p0, 2, 0)), np.asarray(x))
    for k in (1, 2):
        np.testing.assert_array_equal(np.asarray(core.seen(plain.config, x, p0, 2, k)),
                                      np.asarray(core.seen(three.config, x, p0, 2, k)))
    single = [core.loss(plain.config, vgg.params, x, p0, view=core.seen(plain.config, x, p0, 2, k))[0]
              for k in range(3)]
    np.testing.assert_allclose(core.view_loss(plain.config, vgg.params, x, p0, 2)[0], np.mean(single), rtol=1e-5)
    for bad in (3, -1, 1.5):
        with pytest.raises(engine.SweepError, match="plain_views"):
            three.replace(plain_views=bad)


def _tight(z):
    """The xyxy box of the pixels of ``z`` (H, W, C) whose first channel is over 0.5."""
    rows, cols = np.nonzero(np.asarray(z)[..., 0] > 0.5)
    return np.asarray([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


def test_quarter_turns_are_exact_even_and_carry_a_rectangle_and_its_box():
    """turn90 turns a square image by 0, 90, 180 or 270 degrees (np.rot90's pixels, no interpolation), each
    about as often over many keys; a rectangle's box turns with it (width and height swapped at 90 and 270);
    after a wrapped rotation it joins that warp (one sampling); a non-square image is refused."""
    x = image(12, 12, seed=4)
    ctx = tfm.Context(steps=10, fill=(0.5, 0.5, 0.5))
    yy, xx = np.mgrid[:48, :48] + 0.5
    rect = ((np.abs(xx - 20) <= 9) & (np.abs(yy - 30) <= 4)).astype(np.float32)
    rect = jnp.asarray(np.repeat(rect[..., None], 3, -1))
    box = jnp.asarray([[11.0, 26.0, 29.0, 34.0]], jnp.float32)
    seen = []
    for seed in range(40):
        y = np.asarray(tfm.apply((tfm.turn90(),), x, seed, 0, ctx))
        quarters = [k for k in range(4) if np.allclose(y, np.rot90(np.asarray(x), k, axes=(0, 1)), atol=1e-6)]
        assert len(quarters) == 1, (seed, quarters)
        seen.append(quarters[0])
        if seed < 8:
            z, moved = tfm.apply((tfm.turn90(),), rect, seed, 0, ctx, boxes=box)
            np.testing.assert_allclose(_tight(z), np.asarray(moved)[0], atol=1e-4)
    assert set(seen) == {0, 1, 2, 3}, seen
    keys = [tfm.view_key(np.uint32(seed), t, view) for seed in range(50) for t in range(4) for view in range(2)]
    sines = np.asarray([tfm._turn90_matrix(tfm.turn90(), k)[1, 0] for k in keys])
    cosines = np.asarray([tfm._turn90_matrix(tfm.turn90(), k)[0, 0] for k in keys])
    counts = [int(np.sum((cosines == c) & (sines == s))) for c, s in ((1, 0), (0, 1), (-1, 0), (0, -1))]
    assert sum(counts) == 400 and min(counts) >= 70 and max(counts) <= 130, counts  # 100 each, std 8.7
    seed, t = np.uint32(3), 2
    base = tfm.step_key(seed, t)
    chain = (tfm.rotate(30, wrap=True), tfm.turn90(), tfm.scale(0.8, 1.2, wrap=True))
    matrix = (tfm._rotate_matrix(chain[0], base) @ tfm._turn90_matrix(chain[1], jax.random.fold_in(base, 1))
              @ tfm._scale_matrix(chain[2], jax.random.fold_in(base, 2)))
    np.testing.assert_allclose(np.asarray(tfm.apply(chain, x, seed, t, ctx)),
                               np.asarray(tfm._warp(x, matrix, ctx, wrap=True)), atol=1e-6)
    assert [t.name for t in cli.transforms("turn90(),rotate(20,wrap)")] == ["turn90()", "rotate(20,wrap)"]
    with pytest.raises(tfm.TransformError, match="turn90 turns a square image onto itself"):
        tfm.check((tfm.turn90(),), (12, 16))


def test_a_turn_grows_a_target_box_by_its_share_of_the_turned_rectangles_box():
    """rotate(d, 1) gives the box of the turned rectangle (its pixels' tight box, within a pixel of
    interpolation), rotate(d) keeps a disc's box, rotate(d, g) lies at the share g between the two; after
    zooms in one warp, too; the grow share reads back from its text form and out of [0, 1] is refused."""
    ctx = tfm.Context(steps=10, fill=(0.0, 0.0, 0.0))
    yy, xx = np.mgrid[:96, :96] + 0.5
    rect = ((np.abs(xx - 48) <= 16) & (np.abs(yy - 48) <= 8)).astype(np.float32)
    disc = (np.hypot(xx - 48, yy - 48) <= 14).astype(np.float32)
    rect, disc = (jnp.asarray(np.repeat(a[..., None], 3, -1)) for a in (rect, disc))
    rect_box, disc_box = _tight(rect)[None], _tight(disc)[None]
    def chain(grow):
        return tfm.scale(0.8, 1.25, wrap=True), tfm.rotate(60, grow, wrap=True)

    grown_checked = 0
    for seed in range(6):
        z, grown = tfm.apply(chain(1.0), rect, seed, 0, ctx, boxes=jnp.asarray(rect_box))
        np.testing.assert_allclose(np.asarray(grown)[0], _tight(z), atol=1.5)
        z, box = tfm.apply(chain(0.0), disc, seed, 0, ctx, boxes=jnp.asarray(disc_box))
        np.testing.assert_allclose(np.asarray(box)[0], _tight(z), atol=1.5)
        _, kept = tfm.apply(chain(0.0), rect, seed, 0, ctx, boxes=jnp.asarray(rect_box))
        _, half = tfm.apply(chain(0.3), rect, seed, 0, ctx, boxes=jnp.asarray(rect_box))
        np.testing.assert_allclose(np.asarray(half), 0.7 * np.asarray(kept) + 0.3 * np.asarray(grown), atol=1e-3)
        grown_checked += float(np.abs(np.asarray(grown) - np.asarray(kept)).max()) > 2
    assert grown_checked >= 4  # the turns were large enough for the two rules to differ
    assert [t.name for t in cli.transforms("rotate(180,0.5,wrap),rotate(20)")] == ["rotate(180,0.5,wrap)", "rotate(20)"]
    with pytest.raises(tfm.TransformError, match="how much a target box grows"):
        cli.transforms("rotate(180,2,wrap)")
