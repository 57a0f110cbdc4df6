import atexit
import importlib.util
import os
import re
import subprocess
import sys

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")

# In the default suite (the slow marker left out), compiled programs are shared between the processes of the
# session (the xdist workers, the launcher runs, the interpreters started afresh) through JAX's persistent
# compilation cache, in a folder made for the session and removed at its end: the same small models' programs
# compile in many tests (7 % of the suite's time). The heavy cases compile full-size programs once each, and
# writing those to the cache costs more than it saves (the GPU check's dry run: 198 s against 134 s), so a run that
# selects them has no cache. A cache the user set in JAX_COMPILATION_CACHE_DIR is used instead, and kept.
CACHE_ENV = "JAXVIS_TEST_COMPILATION_CACHE"


def pytest_configure(config):
    import tempfile

    if "not slow" not in (config.option.markexpr or "") and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        folder = os.environ["JAX_COMPILATION_CACHE_DIR"]
    else:
        if not os.environ.get(CACHE_ENV):  # the session's first process (xdist's controller): it makes the folder
            os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="jaxvis-test-xla-")
            config._jaxvis_cache_owner = True
        folder = os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ[CACHE_ENV]
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_unconfigure(config):
    if getattr(config, "_jaxvis_cache_owner", False):
        import shutil

        shutil.rmtree(os.environ.pop(CACHE_ENV), ignore_errors=True)
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class WarmStart:
    """The client of ``warm_start.py``'s server, one per test process, started at its first run."""

    def __init__(self):
        self.server = None
        self.env = None

    def fits(self, env: dict) -> bool:
        """Whether a run with ``env`` starts as it would in a fresh interpreter (see warm_start.STARTUP)."""
        from warm_start import startup_env

        return os.environ.get("JAXVIS_TEST_COLD") != "1" and (self.env is None or startup_env(env) == self.env)

    def run(self, module: str, args, env: dict, timeout: float) -> subprocess.CompletedProcess:
        import json
        import select
        import signal
        import tempfile

        from warm_start import startup_env

        if self.server is None or self.server.poll() is not None:
            self.env = startup_env(env)
            self.server = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "warm_start.py")],
                                           cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            atexit.register(self.close)
        with tempfile.TemporaryDirectory() as folder:
            out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
            request = {"module": module, "args": list(args), "cwd": ROOT, "env": env, "stdout": out, "stderr": err}
            self.server.stdin.write(json.dumps(request) + "\n")
            self.server.stdin.flush()
            pid = json.loads(self.server.stdout.readline())["pid"]
            ready, _, _ = select.select([self.server.stdout], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                self.server.stdout.readline()
                raise subprocess.TimeoutExpired([module, *args], timeout)
            status = json.loads(self.server.stdout.readline())["status"]
            with open(out) as f_out, open(err) as f_err:
                return subprocess.CompletedProcess([sys.executable, "-m", module, *args], status, f_out.read(),
                                                   f_err.read())

    def close(self):
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait(timeout=60)
            self.server.stdout.close()
            self.server = None


WARM = WarmStart()


def run_module(module: str, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `python -m module args` from the repository root, as a user would: from a warm start
    (``warm_start.py``: a process with the libraries imported forks one child per run) unless the environment
    changes how Python or JAX start, then in a fresh interpreter."""
    full_env = dict(os.environ, **(env or {}))
    if WARM.fits(full_env):
        proc = WARM.run(module, args, full_env, timeout=900)
    else:
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                              env=full_env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def docs_module(name: str):
    """A module of docs/ (``check_site``, ``_ext/jaxvis_sphinx``), which is not a package, loaded from its file."""
    spec = importlib.util.spec_from_file_location(name.split("/")[-1], os.path.join(ROOT, "docs", *name.split("/")) + ".py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_blocks(text: str) -> list[str]:
    """The code of every ```python block of a Markdown text (README, a docstring)."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def run_alone(code: str, folder) -> subprocess.CompletedProcess:
    """``code`` as a reader would paste it: alone in a fresh interpreter, from ``folder``, on the CPU, with
    deprecations as errors."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONWARNINGS": "error::DeprecationWarning"}
    return subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="session")
def converted_vgg(tmp_path_factory):
    """arch -> (randomised torchvision model, path of its .pth, path converted through the CLI).

    The files are made once per arch; the torch model is loaded from its .pth on every call and not kept,
    so that a worker which runs all eight ports holds one full-size model at a time, not eight."""
    import torch
    import torchvision
    from torch_ref import torchvision_vgg

    files = {}
    folder = tmp_path_factory.mktemp("vgg")

    def get(arch):
        if arch in files:
            pth, out = files[arch]
            with torch.device("meta"):
                model = getattr(torchvision.models, arch)(weights=None)
            model.load_state_dict(torch.load(pth, weights_only=True), assign=True)
            return model.eval(), pth, out
        model = torchvision_vgg(arch, seed=sum(map(ord, arch)))
        pth = folder / f"{arch}.pth"
        torch.save(model.state_dict(), pth)
        out = folder / f"{arch}.safetensors"
        run_module("converters.torchvision", "--arch", arch, "--checkpoint", str(pth), "--out", str(out))
        files[arch] = (pth, out)
        return model, pth, out

    return get


@pytest.fixture(scope="session")
def converted_ssd(tmp_path_factory):
    """(randomised torchvision ssd300_vgg16, its .pth, path converted through the CLI)."""
    import torch
    from torch_ref import torchvision_ssd

    folder = tmp_path_factory.mktemp("ssd")
    model = torchvision_ssd(seed=3)
    pth = folder / "ssd300.pth"
    torch.save(model.state_dict(), pth)
    out = folder / "ssd300.safetensors"
    run_module("converters.torchvision", "--arch", "ssd300_vgg16", "--checkpoint", str(pth), "--out", str(out))
    return model, pth, out


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """Params files of the small random VGG and SSD of tests/tiny.py."""
    from jaxvis import params as params_io
    from tiny import tiny_ssd, tiny_vgg

    folder = tmp_path_factory.mktemp("tiny")
    vgg, ssd = tiny_vgg(0), tiny_ssd(0)
    params_io.save(folder / "vgg.safetensors", vgg.params, vgg.spec)
    params_io.save(folder / "ssd.safetensors", ssd.params, ssd.spec)
    return folder / "vgg.safetensors", folder / "ssd.safetensors"
