"""Launcher runs from a warm start: a process that has imported what every launcher imports forks one child per
run, and the child runs the launcher as ``python -m`` would (``runpy`` as ``__main__``, ``sys.argv``, the working
directory, the environment, stdout and stderr to files, the exit status of ``SystemExit``).

A launcher run through ``python -m`` spends seconds importing JAX, Flax and jaxvis before it reads its first
flag; the tests run a hundred of them. ``conftest.run_module`` sends its runs here (one server per test
process), and to a fresh interpreter where the warm start would differ from one (an environment that changes
how JAX or Python start; ``JAXVIS_TEST_COLD=1`` for every run). Nothing that starts threads is imported before
the fork: JAX's backends start in the child, as in a fresh interpreter.

Protocol, one JSON line each way: the client sends {"module", "args", "cwd", "env", "stdout", "stderr"}; the
server answers {"pid"} when the child starts and {"status"} (``subprocess``'s return code: negative for a
signal) when it ends.
"""

import importlib
import json
import os
import pkgutil
import runpy
import sys
import traceback

# Imported once by the server: the libraries every launcher imports and every module of jaxvis, not the
# launchers themselves (their flags are defined when the child imports them, as in a fresh interpreter), nor
# OpenCV, whose import starts a thread.
PRELOAD = ("numpy", "scipy", "PIL.Image", "jax", "jax.numpy", "flax.linen", "optax", "absl.app", "absl.flags",
           "ml_collections", "jaxvis")

# Environment variables read when Python or JAX start: a run that sets them otherwise needs a fresh interpreter.
STARTUP = ("PYTHON", "JAX_", "XLA_", "TF_", "OMP_", "MKL_", "OPENBLAS_", "CUDA_", "TPU_", "LD_")


def startup_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(STARTUP)}


def _child(request: dict) -> None:
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        sys.argv = [request["module"], *request["args"]]
        sys.path[0] = request["cwd"]
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: B036 - reported as the interpreter would, exit status 1
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> None:
    sys.path.insert(0, os.getcwd())
    for name in PRELOAD:
        importlib.import_module(name)
    import jaxvis

    for module in pkgutil.walk_packages(jaxvis.__path__, "jaxvis."):
        importlib.import_module(module.name)
    replies = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        replies.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
