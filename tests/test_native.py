"""The oneDNN kernel library as a versioned extension (jaxvis.native): where it is built, its stamp,
stale and foreign libraries, the build's exit status and messages, and the injected convolution."""

import logging
import os
import stat
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from conftest import ROOT
from jaxvis import conv, native
from jaxvis.native import build

NHWC = ("NHWC", "HWIO", "NHWC")
PREFIX = native.onednn_prefix() if native.supported_platform() else None
needs_onednn = pytest.mark.skipif(PREFIX is None or not native.onednn_headers(PREFIX),
                                  reason="oneDNN and its headers (the `onednn` extra) are not installed")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty kernel cache of this test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("JAXVIS_NATIVE_DIR", str(folder))
    return folder


def _script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _run_build(env, *args):
    return subprocess.run([sys.executable, "-m", "jaxvis.native.build", *args], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=ROOT, **env), timeout=300)


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXVIS_NATIVE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert native.cache_dir() == tmp_path / "xdg" / "jaxvis" / "native"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert native.cache_dir() == tmp_path / "home" / ".cache" / "jaxvis" / "native"
    monkeypatch.setenv("JAXVIS_NATIVE_DIR", str(tmp_path / "mine"))
    assert native.cache_dir() == tmp_path / "mine"
    # Outside the source tree.
    assert not str(native.cache_dir()).startswith(str(native.SOURCE.parent))


@needs_onednn
def test_key_changes_with_jax_the_source_and_the_flags(monkeypatch, tmp_path):
    import jaxlib

    key = native.key(PREFIX)
    assert f"jax{jax.__version__}" in key and f"jaxlib{jaxlib.__version__}" in key
    assert f"onednn{native.onednn_version(PREFIX)}" in key and native.onednn_version(PREFIX).startswith("3.")
    assert native.library_path(key).name == f"conv_onednn-{key}.so"
    monkeypatch.setattr(jax, "__version__", "0.0.1")
    assert native.key(PREFIX) != key and "jax0.0.1" in native.key(PREFIX)
    monkeypatch.undo()
    edited = tmp_path / "conv_onednn.cc"
    edited.write_bytes(native.SOURCE.read_bytes() + b"\n// an edit\n")
    monkeypatch.setattr(native, "SOURCE", edited)
    assert native.key(PREFIX) != key
    monkeypatch.undo()
    monkeypatch.setattr(native, "FLAGS", (*native.FLAGS, "-g"))
    assert native.key(PREFIX) != key


def test_build_without_a_compiler_says_it_skips_and_exits_zero(tmp_path):
    # PATH holds no compiler and CXX is unset: `make` goes on, the message says XLA's convolutions are used.
    env = {"PATH": str(tmp_path), "CXX": "", "JAXVIS_NATIVE_DIR": str(tmp_path / "cache")}
    proc = _run_build(env)
    assert proc.returncode == 0, proc.stderr
    assert "SKIPPED the oneDNN kernels" in proc.stderr and "through XLA" in proc.stderr
    if PREFIX is not None and native.onednn_headers(PREFIX):
        assert "no C++ compiler: 'g++' is not on PATH" in proc.stderr
    assert not list((tmp_path / "cache").glob("*.so"))


def test_require_turns_the_skip_into_a_failure(cache, monkeypatch, capsys):
    monkeypatch.setenv("CXX", str(cache / "no-such-compiler"))
    assert build.main(["--require"]) == 1
    err = capsys.readouterr().err
    assert "SKIPPED" in err and "XLA" in err
    assert build.main([]) == 0


@needs_onednn
def test_a_failing_compiler_fails_the_build_loudly(tmp_path):
    cxx = _script(tmp_path / "broken-c++", "echo 'broken-c++: internal compiler error' >&2\nexit 3\n")
    proc = _run_build({"CXX": str(cxx), "JAXVIS_NATIVE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 1
    assert "FAILED" in proc.stderr and "status 3" in proc.stderr and "internal compiler error" in proc.stderr
    left = [p.name for p in (tmp_path / "cache").iterdir()]
    assert left == [".build.lock"], left  # no library, no temporary file left behind


@needs_onednn
def test_an_unwritable_cache_fails_with_what_to_do(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("JAXVIS_NATIVE_DIR", str(blocker / "native"))
    monkeypatch.setenv("CXX", "true")  # never reached: the cache folder fails first
    assert build.main([]) == 1
    assert "set JAXVIS_NATIVE_DIR to a writable folder" in capsys.readouterr().err


def _foreign(path, stamp):
    """A file under the expected name whose stamp is ``stamp`` (it is never loaded: a stamp that differs
    is caught before, so any bytes serve)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF not really a library " + native.MARKER + stamp.encode() + b"\0 trailing")


@needs_onednn
@pytest.mark.parametrize("stamp", ["stale", "unstamped"])
def test_stale_or_foreign_library_is_refused_without_a_compiler(cache, monkeypatch, caplog, stamp):
    key = native.key(PREFIX)
    path = native.library_path(key)
    if stamp == "stale":  # built for an older jax
        _foreign(path, key.replace(f"jax{jax.__version__}", "jax0.4.30"))
    else:  # e.g. a library built by hand, or the in-tree one of older releases, copied under this name
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\x7fELF no stamp here")
    monkeypatch.setenv("CXX", str(cache / "no-such-compiler"))
    with pytest.raises(native.Unavailable) as err:
        native.load()
    message = str(err.value)
    assert str(path) in message and "python -m jaxvis.native.build" in message and "delete the file" in message
    assert "stale or foreign" in message and "it was not loaded" in message
    assert "no C++ compiler" in message and "XLA's convolutions are used" in message
    if stamp == "stale":
        assert "jax0.4.30" in message
    # jaxvis.conv refuses it the same way, with a warning, and runs XLA's convolutions.
    for name in ("_registered", "_library", "_library_path", "_unavailable"):
        monkeypatch.setattr(conv, name, getattr(conv, name))
    monkeypatch.setattr(conv, "_registered", None)
    with caplog.at_level(logging.WARNING, logger="jaxvis.conv"):
        assert not conv.onednn_available()
    assert any("oneDNN kernels not used" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    assert "stale or foreign" in conv.unavailable_reason()
    with pytest.raises(RuntimeError, match="cannot be used: .*python -m jaxvis.native.build"):
        conv.check_backend("onednn")
    x, w = jnp.ones((1, 8, 8, 4), jnp.float32), jnp.ones((3, 3, 4, 4), jnp.float32)
    lowered = jax.jit(lambda x, w: conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)).lower(x, w)
    assert "jaxvis_conv" not in lowered.as_text()


@needs_onednn
def test_stale_library_is_rebuilt_when_a_compiler_is_there(monkeypatch, tmp_path):
    # The library of this environment (make builds it); a stand-in compiler that checks it is given the
    # key and "compiles" by copying that library, so that the test costs no compilation.
    try:
        _, real = native.load(build=False)
    except native.Unavailable as err:
        pytest.skip(f"the kernel library is not built: {err}")
    monkeypatch.setenv("JAXVIS_NATIVE_DIR", str(tmp_path / "cache"))
    key = native.key(PREFIX)
    args = tmp_path / "args"
    cxx = _script(tmp_path / "c++", textwrap.dedent(f"""\
        printf '%s\\n' "$@" > {args}
        out=""; prev=""
        for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done
        cp {real} "$out"
        """))
    monkeypatch.setenv("CXX", str(cxx))
    path = native.library_path(key)
    _foreign(path, key.replace(f"jax{jax.__version__}", "jax0.4.30"))
    lib, loaded = native.load()
    assert loaded == path and native.read_stamp(path) == key
    assert lib.JaxvisNativeKey().decode() == key
    assert f'-DJAXVIS_NATIVE_KEY="{key}"' in args.read_text().splitlines()
    # Up to date now: a second build runs no compiler.
    args.unlink()
    assert build.build(verbose=False) == path and not args.exists()


@needs_onednn
def test_built_library_carries_its_key():
    try:
        lib, path = native.load(build=False)
    except native.Unavailable as err:
        pytest.skip(f"the kernel library is not built: {err}")
    key = native.key(PREFIX)
    assert path == native.library_path(key) and path.parent == native.cache_dir()
    assert native.read_stamp(path) == key == lib.JaxvisNativeKey().decode()


def test_auto_choice_is_logged_once_per_process(monkeypatch, caplog):
    monkeypatch.setattr(conv, "_auto_logged", False)
    f = conv.Convolution("auto")
    with caplog.at_level(logging.INFO, logger="jaxvis.conv"):
        for size in (8, 9, 10):
            x = jax.ShapeDtypeStruct((1, size, size, 4), jnp.float32)
            w = jax.ShapeDtypeStruct((3, 3, 4, 4), jnp.float32)
            jax.eval_shape(lambda x, w: f(x, w, (1, 1), "SAME", dimension_numbers=NHWC), x, w)
    lines = [r.getMessage() for r in caplog.records if "backend 'auto'" in r.getMessage()]
    assert len(lines) == 1
    assert ("through oneDNN" in lines[0]) == conv.onednn_available()


def test_models_take_the_convolution_as_a_function():
    from tiny import tiny_vgg

    model = tiny_vgg()
    assert "conv_backend" not in {f.name for f in model.module.__dataclass_fields__.values()}
    assert model.module.conv_general_dilated == conv.Convolution("auto") and model.conv_backend == "auto"
    xla = model.with_conv_backend("xla")
    assert xla.module.conv_general_dilated == conv.Convolution("xla") and xla.conv_backend == "xla"
    assert model.module.conv_general_dilated.backend == "auto"  # the original is unchanged
    with pytest.raises(ValueError, match="one of"):
        model.with_conv_backend("mkl")

    # Any function with lax.conv_general_dilated's signature can be injected; it runs every conv layer.
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return lax.conv_general_dilated(*args, **kwargs)

    custom = model.module.clone(conv_general_dilated=counting)
    x = jnp.zeros(model.input_shape(1), jnp.float32)
    got, _ = jax.eval_shape(custom.apply, model.params, x)
    assert len(calls) == 8 and got.shape == (1, 10)  # tiny VGG: 8 conv layers
    assert conv.backend_of(counting) is None and conv.backend_of(lax.conv_general_dilated) == "xla"


@pytest.mark.slow  # two-device engines in a process of their own; test_engine's sharding test stays
def test_sharded_engines_keep_the_models_convolution_on_each_devices_share():
    # The engine maps its step over the devices' shares of the points, so a sharded chunk runs the
    # model's own convolution (oneDNN's kernels where built) on each device, and equals one device's run.
    script = textwrap.dedent("""
        import sys, jax, numpy as np
        sys.path.insert(0, "tests")
        from jaxvis import conv, engine
        from jaxvis import objectives as O
        from tiny import tiny_vgg
        model = tiny_vgg(0)
        sweep = engine.Sweep(targets=[0, 1, 2], lrs=[0.5, 1.0], losses=[O.score() + O.sq()],
                             init_scales=[0.2], seeds=[0])
        terms = sweep.terms
        two, one = jax.devices()[:2], jax.devices()[:1]
        backends = ["auto"] + (["onednn"] if conv.onednn_available() else [])
        for backend in backends:
            m = model.with_conv_backend(backend)
            for loop in ("host", "scan"):
                sharded = engine.Engine(m, terms, steps=4, snapshots=[2], devices=two, loop=loop, step_progress=True)
                assert sharded._module.conv_general_dilated == conv.Convolution(backend)
                if loop == "scan" and backend == "onednn":
                    pts = {k: v[:6] for k, v in sweep.arrays(sharded.term_names).items()}
                    assert "jaxvis_conv_forward" in sharded._fn.lower(m.params, pts).as_text()
                events = []
                a = sharded.run(sweep, chunk_size=6, progress=events.append)
                # Each device calls back from its share; every step is told once, in order.
                assert [e.step for e in events] == [0, 1, 2, 3, 4, 0], [e.step for e in events]
                b = engine.Engine(m, terms, steps=4, snapshots=[2], devices=one, loop=loop).run(
                    sweep, chunk_size=6, progress=None)
                scale = np.abs(b.images).max()
                np.testing.assert_allclose(a.images, b.images, rtol=0, atol=1e-5 * scale)
                np.testing.assert_allclose(a.snapshots[2], b.snapshots[2], rtol=0, atol=1e-5 * scale)
                np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5, atol=1e-6)
        print("ok", backends)
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
