r"""Compares recipe variants over many seeds: each variant is a list of launcher flags over a study config,
run by ``experiments.class_model`` in a process of its own (several at once: on a GPU their compilations
overlap and their chunks share the device), then judged by ``experiments.evaluate``.

  python -m experiments.recipe_search --variants variants.json --out runs/search --jobs 8

``variants.json`` maps a name to its flags, e.g.
``{"plain": ["--plain_views", "1"], "solid": ["--parameterization", "fourier(1.5)+decorrelated+sigmoid+solid"]}``;
``--flags`` are added to every variant (the axes they share: ``--flags='--seeds 0,1,2,3,4,5,6,7 --lrs 0.05,0.1'``).
Axes given as flags (losses, learning rates, seeds, boxes) are per-point values, so one variant's process
compiles one program for all of them; what differs between variants (parameterisation, transforms, views,
steps) needs programs of its own.

Each group of a variant (the points with equal values of the axes other than target and seed, as
``experiments.evaluate`` groups them) is summarised per block of ``--block`` seeds (seeds 0-1, 2-3, ... for
2): classes whose every image reaches p >= ``--threshold`` ("sure") / classes the judge reads on at least
half their images ("read"), starred where both reach ``--min_sure`` and ``--min_read``, and how many blocks
do. A block is what one run of a recipe with that many seeds shows, so the share of starred blocks
estimates how often that run meets the target. Writes ``summary.txt`` into --out beside the variants'
run directories, evaluations and logs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from absl import app, flags

from jaxvis import evaluate as ev

FLAGS = flags.FLAGS
flags.DEFINE_string("variants", None, "JSON file: variant name -> list of launcher flags.")
flags.DEFINE_string("config", "experiments/configs/feature_vis.py:shapes_ssd", "The study config every variant "
                    "starts from.")
flags.DEFINE_string("flags", "", "Launcher flags added to every variant, as on a command line: "
                    "--flags='--seeds 0,1,2,3 --lrs 0.05,0.1'.")
flags.DEFINE_string("out", None, "Output folder.")
flags.DEFINE_integer("jobs", 2, "Variants run at once.")
flags.DEFINE_integer("timeout", 3600, "Seconds a variant's run may take before it is stopped.")
flags.DEFINE_integer("block", 2, "Seeds per block of the summary.")
flags.DEFINE_float("threshold", 0.9, "Own probability counted as sure.")
flags.DEFINE_integer("min_sure", 5, "Sure classes a block needs to be starred.")
flags.DEFINE_integer("min_read", 4, "Classes read a block needs to be starred.")


def run_variant(out: str, name: str, variant_flags: list[str], env: dict) -> tuple[str, int, float]:
    """Runs and evaluates one variant: (name, exit status, seconds of the run)."""
    folder = os.path.join(out, name)
    start = time.time()
    with open(os.path.join(out, f"{name}.log"), "w") as log:
        run = ["timeout", str(FLAGS.timeout), sys.executable, "-m", "experiments.class_model", "--config", FLAGS.config,
               *shlex.split(FLAGS.flags), *variant_flags, "--out", folder, "--noprogress", "--nopngs",
               "--nocheck_space"]
        rc = subprocess.call(run, stdout=log, stderr=subprocess.STDOUT, env=env)
        seconds = time.time() - start
        if rc == 0:
            rc = subprocess.call([sys.executable, "-m", "experiments.evaluate", "--run", f"{name}={folder}", "--out",
                                  folder + "_eval", "--threshold", str(FLAGS.threshold), "--seeds_shown", "2",
                                  "--cell", "64"], stdout=log, stderr=subprocess.STDOUT, env=env)
    return name, rc, seconds


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.variants or not FLAGS.out:
        raise app.UsageError("--variants (a JSON file: name -> list of flags) and --out are required.")
    with open(FLAGS.variants) as f:
        variants = json.load(f)
    if not isinstance(variants, dict) or not all(isinstance(v, list) for v in variants.values()):
        raise app.UsageError(f"{FLAGS.variants} must map each variant's name to a list of launcher flags.")
    os.makedirs(FLAGS.out, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.time()
    with ThreadPoolExecutor(FLAGS.jobs) as pool:
        done = list(pool.map(lambda item: run_variant(FLAGS.out, item[0], item[1], env), variants.items()))
    text = [f"# {len(done)} variants of {FLAGS.config} in {time.time() - start:.0f} s; common flags: {FLAGS.flags}"]
    for name, rc, seconds in done:
        text.append(f"## {name}: exit {rc}, run {seconds:.0f} s; flags: {' '.join(variants[name])}")
        path = os.path.join(FLAGS.out, name + "_eval", "verdicts.jsonl")
        if rc != 0 or not os.path.exists(path):
            text.append(f"no verdicts: see {os.path.join(FLAGS.out, name + '.log')}")
            continue
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        text += ev.seed_blocks(lines, FLAGS.block, FLAGS.threshold, FLAGS.min_sure, FLAGS.min_read)
    with open(os.path.join(FLAGS.out, "summary.txt"), "w") as f:
        f.write("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
