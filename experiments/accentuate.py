r"""Feature accentuation (Hamblin et al. 2024) on the shipped shapes classifier: start from a real image
of each class and push it towards every class while an L2 pull keeps it near where it started.

  python -m experiments.accentuate --out docs/accentuation

One generated image per class (held-out seed) x six target classes x the pull weights: one vmapped
sweep (``Sweep(starts=...)``) in the shapes recipe's decorrelated Fourier basis, with milder random
transforms than its recipe (the classifier must still read the start image through them). Writes ``NAME.png`` (per pull weight: rows the start images, the first column the image
itself, then one column per target class; under each its classifier probability and what the shipped
judge reads) and ``NAME.md`` / ``NAME.json``: per weight, the classifier's probability of the target
before and after, the judge's agreement with the target, and how far the image moved (RMS, in [0, 1]
pixel units). About half a minute on a 2-core CPU.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "docs/accentuation", "Output path without extension (.png, .md, .json are written).")
flags.DEFINE_integer("steps", 128, "Adam steps.")
flags.DEFINE_list("pulls", ["10", "100"], "Weights of the pull towards the start image (l2_start).")
flags.DEFINE_float("lr", 0.05, "Adam learning rate.")
flags.DEFINE_integer("seed", 7, "Seed of the start images (the shapes generator; training used others).")
flags.DEFINE_string("transforms", "pad(4),jitter(4),scale(0.9,1.1),rotate(10)",
                    "Random transforms at every step (jaxvis.transforms' text form).")


def start_images(model, seed: int):
    """One generated image per class (the first of each in a seeded set), in network-input space."""
    import numpy as np

    from jaxvis.data import shapes

    images, labels, _ = shapes.classification_set(seed, 64, size=model.spec.input_size[0])
    picks = [int(np.flatnonzero(labels == c)[0]) for c in range(len(model.spec.labels))]
    return np.asarray(model.preprocess(images[picks]), np.float32), images[picks]


def run(out: str, steps: int, pulls, lr: float, seed: int, transforms: str) -> dict:
    import jax
    import numpy as np
    import optax

    import jaxvis
    from jaxvis import assets, engine, evaluate, render
    from jaxvis import objectives as obj
    from jaxvis import cli

    model = jaxvis.load(assets.path("classifier"))
    judge = jaxvis.load(assets.path("judge"))
    starts, pictures = start_images(model, seed)
    n = len(model.spec.labels)
    objective = obj.score() + obj.l2_start()
    sweep = engine.Sweep(targets=list(range(n)), lrs=[lr], losses=[objective], weights={obj.l2_start(): list(pulls)},
                         init_scales=[0.0], starts=starts)
    eng = engine.Engine(model, sweep.terms, steps=steps, optimizer=engine.Optimizer(optax.adam),
                        parameterization=cli.parameterization("fourier(1.5)+decorrelated+sigmoid", model),
                        transforms=cli.transforms(transforms))
    result = eng.run(sweep, progress=None)
    points = sweep.point_axes()
    shown = evaluate.pictures(model, result.images)
    start_probs = np.asarray(jax.nn.softmax(model.apply(model.params, starts)[0]))
    votes, _ = evaluate.judge_read(judge, shown)
    moved = np.sqrt(np.mean((shown - pictures[[p["start"] for p in points]]) ** 2, axis=(1, 2, 3)))
    table, cells = {}, {}
    for w in pulls:
        idx = [i for i, p in enumerate(points) if p["w:l2_start"] == w]
        other = [i for i in idx if points[i]["start"] != points[i]["target"]]  # towards another class
        table[f"{w:g}"] = {
            "target_prob_before": float(np.mean([start_probs[points[i]["start"], points[i]["target"]] for i in other])),
            "target_prob_after": float(np.mean(result.final_prob[other])),
            "judge_reads_target": int(sum(votes[i] == points[i]["target"] for i in other)), "of": len(other),
            "rms_moved": float(np.mean(moved[other])),
        }
        cells[w] = idx
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    labels = model.spec.labels
    figures = []
    for w, idx in cells.items():
        rows, captions = [], []
        for s in range(n):
            mine = [i for i in idx if points[i]["start"] == s]
            rows.append([(pictures[s] * 255 + 0.5).astype(np.uint8)] + [(shown[i] * 255 + 0.5).astype(np.uint8)
                                                                        for i in mine])
            captions.append([f"p={start_probs[s, s]:.2f}"] + [f"p={result.final_prob[i]:.2f} {judge.labels[votes[i]]}"
                                                              for i in mine])
        figures.append(render.grid(rows, [f"a {labels[s]}" for s in range(n)], ["start"] + [f"-> {c}" for c in labels],
                                   captions=captions, cell=96,
                                   title=f"feature accentuation, pull {w:g}: classifier p(target), judge's reading"))
    width = max(f.shape[1] for f in figures)
    stacked = np.concatenate([np.pad(f, ((0, 8), (0, width - f.shape[1]), (0, 0)), constant_values=255)
                              for f in figures])
    render.save_png(out + ".png", stacked)
    with open(out + ".json", "w") as f:
        json.dump({"steps": steps, "lr": lr, "seed": seed, "transforms": transforms, "pulls": table}, f, indent=2)
    lines = ["| pull weight | p(target) before | p(target) after | judge reads the target | RMS moved |",
             "|---|---|---|---|---|"]
    for w, row in table.items():
        lines.append(f"| {w} | {row['target_prob_before']:.3f} | {row['target_prob_after']:.3f} | "
                     f"{row['judge_reads_target']}/{row['of']} | {row['rms_moved']:.3f} |")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    return table


def main(argv):
    del argv
    table = run(FLAGS.out, FLAGS.steps, [float(w) for w in FLAGS.pulls], FLAGS.lr, FLAGS.seed, FLAGS.transforms)
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
