"""Image parameterisations: Fourier and decorrelated colour against a NumPy reference of the same
formula, MACO's fixed magnitude for any phase, the statistics script, and the engine reporting the
network-input image whatever the variable."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvis import cli
from jaxvis import engine
from jaxvis import objectives as obj
from jaxvis import parameterizations as par
from tiny import tiny_vgg


@pytest.fixture(scope="module")
def vgg():
    return tiny_vgg(0)


def numpy_fourier(v, size, decay):
    """Lucid's fft_image formula in NumPy: spectrum (re + i im) scaled by sqrt(hw)/max(f, 1/max(h,w))^decay."""
    h, w = size
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    scale = np.sqrt(h * w) / np.maximum(f, 1.0 / max(h, w)) ** decay
    spectrum = (v[..., 0].astype(np.float64) + 1j * v[..., 1]) * scale[..., None]
    return np.fft.irfft2(spectrum, s=(h, w), axes=(0, 1)) / 4.0


def numpy_decorrelate(t, matrix):
    m = np.asarray(matrix, np.float64)
    m = m / np.max(np.sqrt((m ** 2).sum(0)))
    return t.reshape(-1, 3) @ m.T


@pytest.mark.parametrize("size, decay", [((16, 16), 1.0), ((12, 15), 0.5), ((64, 64), 1.7)])
def test_fourier_equals_numpy(size, decay):
    p = par.fourier(decay)
    v = np.random.default_rng(0).standard_normal(p.variable_shape(size)).astype(np.float32)
    got = np.asarray(par.basis_image(p, jnp.asarray(v), size, decay))
    want = numpy_fourier(v, size, decay)
    assert got.shape == (*size, 3)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    # the decay is a per-point number: another decay, same program, the other image
    other = np.asarray(jax.jit(lambda v, d: par.basis_image(p, v, size, d))(jnp.asarray(v), np.float32(decay + 0.5)))
    np.testing.assert_allclose(other, numpy_fourier(v, size, decay + 0.5), rtol=0, atol=1e-5 * np.abs(want).max())


def test_fourier_decorrelated_sigmoid_equals_numpy():
    size = (20, 24)
    p = par.fourier(1.0) + par.decorrelated() + par.sigmoid()
    assert p.name == "fourier+decorrelated+sigmoid" and p.basis == par.Fourier() and p.range == par.Sigmoid()
    assert (par.fourier(1.5) + par.clip()).name == "fourier(1.5)+clip" and cli.parameterization("fourier(1.5)+clip").decay == 1.5
    v = np.random.default_rng(1).standard_normal(p.variable_shape(size)).astype(np.float32) * 0.3
    t = numpy_decorrelate(numpy_fourier(v, size, 1.0), par.IMAGENET_COLOUR_SQRT).reshape(*size, 3)
    want = 1.0 / (1.0 + np.exp(-t))
    got = np.asarray(par.rgb_image(p, jnp.asarray(v), size, 1.0))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_decorrelated_pixels_with_clip_equals_numpy():
    cov = np.array([[1.0, 0.6, 0.3], [0.6, 1.0, 0.5], [0.3, 0.5, 1.0]])
    m = par.covariance_sqrt(cov)
    np.testing.assert_allclose(m @ m.T, cov, atol=1e-12)  # a square root of the covariance
    p = par.pixels() + par.decorrelated(m) + par.clip()
    v = np.random.default_rng(2).standard_normal((8, 9, 3)).astype(np.float32)
    want = np.clip(numpy_decorrelate(v, m).reshape(8, 9, 3) + 0.5, 0, 1)
    np.testing.assert_allclose(np.asarray(par.rgb_image(p, jnp.asarray(v), (8, 9), 1.0)), want, atol=2e-6)


@pytest.mark.parametrize("size", [(64, 64), (16, 15), (9, 12)])
def test_maco_amplitude_is_the_given_magnitude_for_any_phase(size):
    rng = np.random.default_rng(3)
    if size == (64, 64):
        magnitude = par.load_stats("shapes")["spectrum_64x64"]  # the shipped spectrum of the shapes images
    else:  # the amplitude spectrum of some real image
        magnitude = np.abs(np.fft.rfft2(rng.random((*size, 3)) - 0.5, axes=(0, 1))).astype(np.float32)
    p = par.maco(magnitude)
    for trial in range(4):
        phase = rng.uniform(-20, 20, p.variable_shape(size)).astype(np.float32)  # any phase, not only [-pi, pi)
        image = np.asarray(par.basis_image(p, jnp.asarray(phase), size, 1.0), np.float64)
        amplitude = np.abs(np.fft.rfft2(image, axes=(0, 1)))
        np.testing.assert_allclose(amplitude, magnitude, rtol=0, atol=2e-5 * magnitude.max(), err_msg=str(trial))
    # the phase does change the image
    a = np.asarray(par.basis_image(p, jnp.zeros(p.variable_shape(size)), size, 1.0))
    assert not np.allclose(a, image)


def test_statistics_script_formula_and_shipped_file():
    rng = np.random.default_rng(4)
    images = {8: rng.random((5, 8, 8, 3)).astype(np.float32)}
    stats = par.image_statistics(images)
    cov = np.cov(images[8].reshape(-1, 3).astype(np.float64), rowvar=False)
    np.testing.assert_allclose(stats["colour_sqrt"] @ stats["colour_sqrt"].T, cov, rtol=1e-5)
    np.testing.assert_allclose(stats["spectrum_8x8"], np.abs(np.fft.rfft2(images[8] - 0.5, axes=(1, 2))).mean(0),
                               rtol=1e-5)
    shipped = par.load_stats("shapes")
    assert shipped["colour_sqrt"].shape == (3, 3)
    assert shipped["spectrum_64x64"].shape == (64, 33, 3) and shipped["spectrum_128x128"].shape == (128, 65, 3)
    # the shapes images' colours are correlated (a grey-ish first component): not the identity
    assert np.all(np.abs(shipped["colour_sqrt"][:, 0]) > 0.1)


def test_engine_reports_the_network_input_image(vgg):
    terms = obj.score().terms
    sweep = engine.Sweep(targets=[1], lrs=[0.05], losses=[obj.score()], init_scales=[0.1], seeds=[0],
                         decays=[0.5, 1.5])
    p = par.fourier() + par.decorrelated() + par.sigmoid()
    result = engine.Engine(vgg, terms, optimizer=engine.Optimizer(optax.adam), steps=6, snapshots=[3],
                           parameterization=p).run(sweep, progress=False)
    lo = (0 - np.asarray(vgg.spec.mean)) / np.asarray(vgg.spec.std)
    hi = (1 - np.asarray(vgg.spec.mean)) / np.asarray(vgg.spec.std)
    for x in (result.images, result.snapshots[0], result.snapshots[3]):
        assert np.all(x > lo) and np.all(x < hi)  # a sigmoid image lies strictly inside the valid range
    # the reported image is what the network is scored on: the final loss is -score of that image
    logits, _ = vgg.apply(vgg.params, result.images)
    np.testing.assert_allclose(result.final_loss, -np.asarray(logits)[:, 1], rtol=1e-5)
    # the starting image is the parameterisation of the seed's starting variable
    v0 = p.init(jax.random.key(0), (64, 64), np.float32(0.1))
    x0 = par.render(p, v0, (64, 64), par.InputMap.of(vgg.spec), np.float32(0.5))
    np.testing.assert_allclose(result.snapshots[0][0], np.asarray(x0), atol=1e-6)
    assert not np.allclose(result.snapshots[0][0], result.snapshots[0][1])  # the decay axis acts
    assert np.all(result.final_loss < result.loss[0])


def test_bad_parameterisations_are_refused(vgg):
    with pytest.raises(par.ParameterizationError, match="unknown parameterisation part 'furier'"):
        cli.parameterization("furier+sigmoid", vgg)
    with pytest.raises(par.ParameterizationError, match="cannot combine two different ranges"):
        par.sigmoid() + par.clip()
    with pytest.raises(par.ParameterizationError, match=r"needs \(64, 33, 3\)"):
        engine.Engine(vgg, obj.score().terms, parameterization=par.maco(np.ones((32, 17, 3))))
    with pytest.raises(engine.SweepError, match="clip projects the pixels parameterisation"):
        engine.Engine(vgg, obj.score().terms, clip=True, parameterization=par.fourier() + par.sigmoid())
    with pytest.raises(par.ParameterizationError, match="maco needs a magnitude spectrum for this model"):
        cli.parameterization("maco+clip", vgg)
    shapes_like = cli.parameterization("maco+clip", vgg, stats=par.__file__.replace("parameterizations.py", "assets/shapes_image_stats.npz"))
    assert isinstance(shapes_like.basis, par.Maco) and shapes_like.basis.spectrum.array.shape == (64, 33, 3)


def test_statistics_come_with_the_model_file_or_from_the_user(tmp_path, vgg):
    """No architecture name picks statistics: a model's spec names them (the shipped files, and copies of
    them, the shapes statistics), ``stats`` overrides, and a model with none gets ImageNet's matrix."""
    import dataclasses
    import shutil

    import jaxvis
    from jaxvis import assets

    shipped = jaxvis.load(assets.path("classifier"))
    shutil.copy(assets.path("classifier"), tmp_path / "copy.safetensors")
    assert shipped.spec.image_stats == "shapes" == jaxvis.load(tmp_path / "copy.safetensors").spec.image_stats
    want = par.decorrelated(par.load_stats("shapes")["colour_sqrt"])
    assert cli.parameterization("fourier+decorrelated+sigmoid", shipped).find(par.Decorrelated) == want.stages[1]
    rng = np.random.default_rng(0)
    stats = par.image_statistics({64: rng.uniform(size=(4, 64, 64, 3)) ** np.array([1.0, 2.0, 0.5])})
    np.savez(tmp_path / "mine.npz", **stats)
    mine = dataclasses.replace(shipped, spec=shipped.spec.replace(image_stats=str(tmp_path / "mine.npz")))
    for model, stats_flag in ((mine, ""), (shipped, str(tmp_path / "mine.npz"))):
        p = cli.parameterization("maco+decorrelated+clip", model, stats_flag)
        assert p.find(par.Decorrelated) == par.decorrelated(stats["colour_sqrt"]).stages[1]
        np.testing.assert_array_equal(p.basis.spectrum.array, stats["spectrum_64x64"])
    assert vgg.spec.image_stats == ""  # a model of no known statistics
    imagenet = par.decorrelated(par.IMAGENET_COLOUR_SQRT).stages[1]
    assert cli.parameterization("fourier+decorrelated+sigmoid", vgg).find(par.Decorrelated) == imagenet
    with pytest.raises(par.ParameterizationError, match="maco needs a magnitude spectrum"):
        cli.parameterization("maco+clip", vgg)


@pytest.mark.slow
def test_shipped_statistics_are_what_the_script_writes(tmp_path):
    """The shipped shapes statistics are reproduced by their documented command (about 40 s on 2 cores)."""
    from conftest import run_module

    out = tmp_path / "stats.npz"
    run_module("experiments.image_statistics", "--shapes", "2048", "--sizes", "64,128", "--out", str(out))
    fresh, shipped = par.load_stats(str(out)), par.load_stats("shapes")
    assert sorted(fresh) == sorted(shipped)
    for k in fresh:
        np.testing.assert_allclose(fresh[k], shipped[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("text", ["pixels", "fourier", "fourier(1.5)+sigmoid", "fourier+decorrelated+sigmoid",
                                  "pixels+decorrelated+clip", "decorrelated+sigmoid"])
@pytest.mark.parametrize("bgr", [False, True])
def test_variable_for_an_image_renders_that_image(vgg, text, bgr):
    # Feature accentuation starts from a real image: the variable found for it renders it back.
    size = (12, 14)
    p = cli.parameterization(text)
    to_input = par.InputMap((-2.0, -1.5, -1.8), (2.2, 2.6, 2.4), (2, 1, 0) if bgr else (0, 1, 2))
    rgb = np.random.default_rng(3).uniform(0.05, 0.95, (*size, 3)).astype(np.float32)
    x = np.asarray(to_input(jnp.asarray(rgb)))
    np.testing.assert_allclose(np.asarray(par.from_input(to_input, jnp.asarray(x))), rgb, rtol=0, atol=1e-6)
    v = par.variable_for(p, jnp.asarray(x), size, to_input, decay=p.decay)
    assert v.shape == p.variable_shape(size)
    back = np.asarray(par.render(p, v, size, to_input, p.decay))
    np.testing.assert_allclose(back, x, rtol=0, atol=2e-5 * np.abs(x).max())


def test_variable_for_keeps_the_images_phase_under_macos_magnitude():
    size = (16, 16)
    magnitude = np.random.default_rng(4).uniform(0.5, 2.0, (16, 9, 3)).astype(np.float32)
    p = par.maco(magnitude) + par.clip()
    to_input = par.InputMap((0.0,) * 3, (1.0,) * 3, (0, 1, 2))
    rgb = np.random.default_rng(5).uniform(0.2, 0.8, (*size, 3)).astype(np.float32)
    v = par.variable_for(p, jnp.asarray(rgb), size, to_input)
    want = np.angle(np.fft.rfft2(rgb.astype(np.float64) - 0.5, axes=(0, 1)))
    basis = np.asarray(par.basis_image(p, v, size, 1.0), np.float64)
    got = np.angle(np.fft.rfft2(basis, axes=(0, 1)))
    # Away from the self-mirrored columns (where the phase is made odd) the phase is the image's.
    diff = np.angle(np.exp(1j * (got - want)))[:, 1:8]
    np.testing.assert_allclose(diff, 0.0, atol=1e-4)


def test_alpha_adds_an_opacity_channel_and_composites_by_formula():
    size, decay = (20, 24), 1.5
    p = cli.parameterization("fourier(1.5)+decorrelated+sigmoid+alpha")
    assert p.find(par.Alpha) == par.Alpha() and p.channels == 4 and p.name == "fourier(1.5)+decorrelated+sigmoid+alpha"
    assert p.variable_shape(size) == (20, 13, 4, 2)
    v = np.random.default_rng(5).standard_normal(p.variable_shape(size)).astype(np.float32) * 0.3
    four = numpy_fourier(v, size, decay)  # the basis acts on every channel alike
    colour = numpy_decorrelate(four[..., :3], par.IMAGENET_COLOUR_SQRT).reshape(*size, 3)
    want = 1.0 / (1.0 + np.exp(-np.concatenate([colour, four[..., 3:]], -1)))  # opacity: not decorrelated
    got = np.asarray(par.rgb_image(p, jnp.asarray(v), size, decay))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    to_input = par.InputMap((-2.0, -1.5, -1.8), (2.2, 2.6, 2.4), (2, 1, 0))
    x = np.asarray(par.render(p, jnp.asarray(v), size, to_input, decay))
    assert x.shape == (*size, 4)
    np.testing.assert_allclose(x[..., :3], np.asarray(to_input(jnp.asarray(want[..., :3]))), atol=1e-5)
    np.testing.assert_array_equal(x[..., 3], got[..., 3])
    background = np.random.default_rng(6).standard_normal((*size, 3)).astype(np.float32)
    a = x[..., 3:]
    np.testing.assert_allclose(np.asarray(par.composite(jnp.asarray(x), jnp.asarray(background))),
                               x[..., :3] * a + background * (1 - a), atol=1e-6)
    grey = np.asarray(to_input(jnp.full((3,), 0.5, jnp.float32)))
    np.testing.assert_allclose(np.asarray(par.over_grey(jnp.asarray(x), to_input)), x[..., :3] * a + grey * (1 - a),
                               atol=1e-6)
    # an image of three channels passes unchanged
    np.testing.assert_array_equal(np.asarray(par.composite(jnp.asarray(background), jnp.zeros(3))), background)


@pytest.mark.slow  # a second alpha parameterisation; the alpha image's own test stays
def test_solid_makes_one_colour_under_the_alpha_images_opacity(vgg):
    size, decay = (20, 24), 1.5
    p = cli.parameterization("fourier(1.5)+decorrelated+sigmoid+solid")
    assert p.find(par.Alpha) and p.find(par.Solid) and p.name == "fourier(1.5)+decorrelated+sigmoid+alpha+solid"
    assert cli.parameterization(p.name) == p and p.variable_shape(size) == (20, 13, 4, 2)
    v = np.random.default_rng(7).standard_normal(p.variable_shape(size)).astype(np.float32) * 0.3
    with_alpha = cli.parameterization("fourier(1.5)+decorrelated+sigmoid+alpha")
    free = np.asarray(par.rgb_image(with_alpha, jnp.asarray(v), size, decay))
    got = np.asarray(par.rgb_image(p, jnp.asarray(v), size, decay))
    # the colour of every pixel is the mean colour of the free image; the opacity is the free image's
    np.testing.assert_allclose(got[..., :3], np.broadcast_to(free[..., :3].mean((0, 1)), (*size, 3)), atol=1e-6)
    np.testing.assert_array_equal(got[..., 3], free[..., 3])
    assert free[..., :3].std((0, 1)).min() > 0.01  # so the test above is not trivially met
    # the views' backgrounds stay textured: solid is the object's colour, not theirs
    to_input = par.InputMap.of(vgg.spec)
    back = np.asarray(par.background(p, jax.random.key(1), (64, 64), to_input, contrast=1.0))
    np.testing.assert_array_equal(back, np.asarray(par.background(with_alpha, jax.random.key(1), (64, 64), to_input,
                                                                   contrast=1.0)))
    # solid brings the opacity it works on, and keeps another's backdrop
    assert par.solid().find(par.Alpha) == par.Alpha() and (par.alpha(0.3) + par.solid()).find(par.Alpha).backdrop == 0.3
    # it starts from a colour of its own seed, the same in either basis, and not mid grey
    starts = []
    for basis in ("pixels", "fourier(1.5)"):
        q = cli.parameterization(f"{basis}+sigmoid+solid")
        t = np.stack([np.asarray(par.basis_image(q, q.init(jax.random.key(k), size, 0.0, 1.5), size, 1.5))
                      for k in range(64)])
        np.testing.assert_allclose(t, np.broadcast_to(t[:, :1, :1], t.shape), atol=1e-5)  # flat, opacity 0.5
        starts.append(t[:, 0, 0])
    np.testing.assert_allclose(starts[0], starts[1], atol=1e-4)
    assert np.all(starts[0][:, 3] == 0) and 1.0 < starts[0][:, :3].std() < 2.0
    assert np.abs(starts[0][:, :3]).max(1).min() > 0.1  # no seed starts near grey in every channel
    # the colour still learns: 20 steps raise the score of a solid image
    eng = engine.Engine(vgg, obj.score().terms, optimizer=engine.Optimizer(optax.adam), steps=20,
                        parameterization=par.fourier() + par.sigmoid() + par.solid())
    result = eng.run(engine.Sweep(targets=[1], lrs=[0.2], losses=[obj.score()], init_scales=[0.1], seeds=[0]),
                     progress=False)
    start, _ = vgg.apply(vgg.params, jnp.asarray(result.snapshots[0]))
    end, _ = vgg.apply(vgg.params, jnp.asarray(result.images))
    assert float(end[0, 1]) > float(start[0, 1]) + 0.5, (start[0, 1], end[0, 1])
    image = np.asarray(par.from_input(to_input, jnp.asarray(result.images[0])))
    assert 0.02 < image.std() and np.isfinite(image).all()  # something is drawn over the grey


def numpy_box_start(size, boxes, lift):
    """boxstart's opacity lift by its formula: ``lift`` times a smoothstep of (1 - r) / BOX_START_EDGE, r
    the radius relative to the ellipse inscribed in each box, the largest over the boxes."""
    ys, xs = np.mgrid[0:size[0], 0:size[1]] + 0.5
    out = np.zeros(size)
    for x1, y1, x2, y2 in boxes:
        r = np.hypot((xs - (x1 + x2) / 2) / ((x2 - x1) / 2), (ys - (y1 + y2) / 2) / ((y2 - y1) / 2))
        u = np.clip((1 - r) / par.BOX_START_EDGE, 0, 1)
        out = np.maximum(out, u * u * (3 - 2 * u))
    return lift * out


def test_box_start_makes_the_start_opaque_in_the_target_boxes_and_nowhere_else():
    size, decay = (40, 48), 1.5
    p = cli.parameterization("fourier(1.5)+decorrelated+sigmoid+alpha+solid+boxstart(0.9)")
    assert p.find(par.Alpha) and p.find(par.BoxStart).opacity_at_start == 0.9 and cli.parameterization(p.name) == p and "boxstart(0.9)" in p.name
    boxes = np.asarray([[4, 6, 24, 30], [30, 10, 46, 20], [0, 0, 8, 8]], np.float32)
    valid = np.asarray([True, True, False])  # the third is padding: it adds nothing
    lift = np.asarray(par.opacity_start(p, boxes, valid, size, decay))
    assert lift.shape == p.variable_shape(size)
    basis = np.asarray(par.basis_image(p, jnp.asarray(lift), size, decay))
    np.testing.assert_allclose(basis[..., :3], 0.0, atol=1e-5)  # the colours are left alone
    np.testing.assert_allclose(basis[..., 3], numpy_box_start(size, boxes[:2], np.log(9.0)), atol=1e-4)
    alpha = np.asarray(par.rgb_image(p, jnp.asarray(lift), size, decay))[..., 3]
    assert abs(alpha[18, 14] - 0.9) < 1e-4 and abs(alpha[15, 38] - 0.9) < 1e-4  # the boxes' centres
    assert abs(alpha[38, 2] - 0.5) < 1e-4 and abs(alpha[3, 3] - 0.5) < 1e-4  # outside, and the padding box
    # in pixels with a clip range the lift is the opacity's own difference
    q = cli.parameterization("pixels+clip+alpha+boxstart(0.7)")
    got = np.asarray(par.opacity_start(q, boxes, valid, size))
    np.testing.assert_allclose(got[..., 3], numpy_box_start(size, boxes[:2], 0.2), atol=1e-6)
    assert not got[..., :3].any()
    # without it nothing is added
    assert not np.asarray(par.opacity_start(cli.parameterization("fourier+sigmoid+alpha"), boxes, valid, size)).any()
    for text, match in [("fourier+sigmoid+boxstart(1)", r"in \(0, 1\)"),
                        ("fourier+sigmoid+boxstart(0)", r"in \(0, 1\)"),
                        ("fourier+sigmoid+boxstart(x)", "not a number")]:
        with pytest.raises(par.ParameterizationError, match=match):
            cli.parameterization(text)


@pytest.mark.slow  # a tiny SSD300 sweep; test_box_start_makes_the_start_opaque_... checks the start itself
def test_the_engine_starts_a_box_start_image_opaque_at_each_points_target_box():
    from jaxvis.engine import core
    from tiny import tiny_ssd

    ssd = tiny_ssd(0)
    p = par.fourier(1.5) + par.sigmoid() + par.box_start(0.9)
    terms = [obj.multibox().terms[0], obj.opacity().terms[0]]
    eng = engine.Engine(ssd, terms, optimizer=engine.Optimizer(optax.adam), steps=2, parameterization=p)
    boxes = [[[75, 75, 225, 225]], [[0, 150, 100, 300], [200, 0, 300, 60]]]
    sweep = engine.Sweep(targets=[1], lrs=[0.05], losses=[obj.multibox() + 0.5 * obj.opacity()], init_scales=[0.0],
                         seeds=[0], boxes=boxes)
    pts = jax.tree.map(jnp.asarray, sweep.arrays(eng.term_names))
    v = core.init_chunk(eng.config, pts)[0]
    for i, sets in enumerate(boxes):
        pi = jax.tree.map(lambda a: a[i], pts)
        alpha = np.asarray(core.render(eng.config, v[i], pi))[..., 3]
        want = 1 / (1 + np.exp(-numpy_box_start((300, 300), sets, np.log(9.0))))
        np.testing.assert_allclose(alpha, want, atol=1e-4)
    result = eng.run(sweep, progress=False)
    assert result.images.shape == (2, 300, 300, 3) and np.all(result.diverged_step == -1)


def test_random_backgrounds_are_keyed_valid_and_range_from_flat_to_textured():
    size = (32, 32)
    p = cli.parameterization("fourier(1.5)+decorrelated+sigmoid+alpha")
    to_input = par.InputMap((-2.0, -1.5, -1.8), (2.2, 2.6, 2.4), (0, 1, 2))
    draw = jax.jit(lambda k: par.background(p, k, size, to_input))
    keys = [jax.random.key(i) for i in range(40)]
    backgrounds = np.stack([np.asarray(draw(k)) for k in keys])
    np.testing.assert_array_equal(backgrounds[3], np.asarray(draw(jax.random.key(3))))  # the key decides
    rgb = np.asarray(par.from_input(to_input, jnp.asarray(backgrounds)))
    assert backgrounds.shape == (40, *size, 3) and np.all(rgb > 0) and np.all(rgb < 1)
    spread = rgb.std(axis=(1, 2, 3))
    assert spread.min() < 0.03 and spread.max() > 0.2  # from near-flat grey to strong texture
    # a 1/f^1.5 spectrum: neighbouring pixels are close, unlike white noise's
    textured = rgb[np.argmax(spread)]
    assert np.abs(np.diff(textured, axis=0)).mean() < 0.5 * textured.std()


def test_alpha_is_refused_where_it_cannot_work(vgg):
    with pytest.raises(par.ParameterizationError, match="alpha needs a free magnitude"):
        par.maco(np.ones((64, 33, 3))) + par.alpha()
    with pytest.raises(par.ParameterizationError, match="add a range map"):
        engine.Engine(vgg, obj.score().terms, parameterization=par.fourier() + par.alpha())
    with pytest.raises(obj.ObjectiveError, match="add alpha to the parameterisation"):
        engine.Engine(vgg, (obj.score() + obj.opacity()).terms,
                      parameterization=par.fourier() + par.sigmoid()).run(
            engine.Sweep(targets=[1], lrs=[0.05], losses=[obj.score() + obj.opacity()], init_scales=[0.1],
                         seeds=[0]), progress=False)


def test_alpha_image_is_reported_over_grey_and_seen_over_random_backgrounds(vgg):
    from jaxvis import transforms as tfm
    from jaxvis.engine import core

    p = par.fourier() + par.decorrelated() + par.sigmoid() + par.alpha()
    terms = (obj.score() + obj.opacity()).terms
    eng = engine.Engine(vgg, terms, optimizer=engine.Optimizer(optax.adam), steps=8, snapshots=[4], parameterization=p,
                        transforms=[tfm.jitter(2)], views=2)
    sweep = engine.Sweep(targets=[1], lrs=[0.05], losses=[obj.score() + 0.5 * obj.opacity()], init_scales=[0.1],
                         seeds=[2])
    result = eng.run(sweep, progress=False)
    to_input = par.InputMap.of(vgg.spec)
    x0 = par.render(p, p.init(jax.random.key(2), (64, 64), np.float32(0.1)), (64, 64), to_input)
    assert x0.shape == (64, 64, 4)
    assert result.images.shape == (1, 64, 64, 3) and result.snapshots[4].shape == (1, 64, 64, 3)
    np.testing.assert_allclose(result.snapshots[0][0], np.asarray(par.over_grey(x0, to_input)), atol=1e-6)
    # the final loss is -score of the reported picture plus the weighted opacity, a mean in (0, 1)
    logits, _ = vgg.apply(vgg.params, result.images)
    opacity = (result.final_loss + np.asarray(logits)[:, 1]) / 0.5
    assert 0.05 < opacity[0] < 0.95 and np.all(result.final_loss < result.loss[0])
    assert 0 < result.terms[0, 0, 1] < 1
    # at a step, each view is the transformed image over a background of its own, keyed by the view
    cfg = eng.config
    pts = jax.tree.map(lambda a: jnp.asarray(a)[0], sweep.arrays(eng.term_names))
    ctx = tfm.Context(steps=8, fill=tuple((a + b) / 2 for a, b in zip(cfg.lo, cfg.hi)) + (0.0,))
    seen = []
    for k in range(2):
        seen.append(np.asarray(core.seen(cfg, x0, pts, 3, k)))
        moved = tfm.apply(cfg.view_transforms[k], x0, pts["seed"], 3, ctx, k)
        back = par.background(p, jax.random.fold_in(tfm.view_key(pts["seed"], 3, k), par.BACKGROUND_KEY), (64, 64),
                              to_input)
        np.testing.assert_allclose(seen[k], np.asarray(par.composite(moved, back)), atol=1e-6)
    assert seen[0].shape == (64, 64, 3) and not np.allclose(seen[0], seen[1])


def test_a_backdrop_reports_the_image_over_the_points_own_background(vgg):
    p = cli.parameterization("fourier(1.5)+decorrelated+sigmoid+alpha(0.5)")
    assert p.find(par.Alpha).backdrop == 0.5 and p.name == "fourier(1.5)+decorrelated+sigmoid+alpha(0.5)"
    for bad in ("alpha(1.5)", "alpha(x)"):
        with pytest.raises(par.ParameterizationError, match="alpha"):
            cli.parameterization(f"fourier+sigmoid+{bad}")
    with pytest.raises(par.ParameterizationError, match="reported over"):
        par.alpha(-0.5)
    to_input = par.InputMap.of(vgg.spec)
    grey = np.asarray(par.report_background(par.alpha(), 3, (64, 64), to_input))
    np.testing.assert_allclose(grey, np.broadcast_to(np.asarray(to_input(jnp.full((3,), 0.5))), (64, 64, 3)))
    back = np.asarray(par.report_background(p, 3, (64, 64), to_input))
    np.testing.assert_array_equal(back, np.asarray(par.background(
        p, jax.random.fold_in(jax.random.key(3), par.REPORT_KEY), (64, 64), to_input, contrast=0.5)))
    assert not np.allclose(back, np.asarray(par.report_background(p, 4, (64, 64), to_input)))  # the seed's own
    eng = engine.Engine(vgg, obj.score().terms, optimizer=engine.Optimizer(optax.adam), steps=4,
                        snapshots=[2], parameterization=p)
    sweep = engine.Sweep(targets=[1], lrs=[0.05], losses=[obj.score()], init_scales=[0.1], seeds=[3])
    result = eng.run(sweep, progress=False)
    x0 = par.render(p, p.init(jax.random.key(3), (64, 64), np.float32(0.1)), (64, 64), to_input)
    np.testing.assert_allclose(result.snapshots[0][0], np.asarray(par.composite(x0, back)), atol=1e-6)
    # the reported probability is the network's on the reported image
    logits, _ = vgg.apply(vgg.params, result.images)
    np.testing.assert_allclose(result.final_score, np.asarray(logits)[:, 1], rtol=1e-4)
