r"""Judges the class models of run directories: transfer to a second network, the model's own
probability, and a picture grid recipe x class.

  python -m experiments.evaluate --run shapes=runs/fv_shapes --run lab=runs/fv_lab --out runs/fv_eval

Each --run is NAME=DIR (or DIR, named by its folder) of a finished ``experiments.class_model`` run. The
model is the shipped one whose file the run was made with (by the sha256 in its config.json), or
--params; the judge is the shipped shapes judge unless --judge names another classifier. For a
detector run the judge reads the crop of each point's target box, resized to its input, and the own
probability is the detector's at that box (``jaxvis.evaluate``).

A run whose points differ in more than target and seed (losses, target boxes, learning rates) is
judged per group of points with equal values of those axes, named after them.

Writes into --out: ``table.md`` (one row per run or group: the judge's reads in all and per class, the lowest own
probability, how many reach --threshold), ``verdicts.jsonl`` (one line per image) and ``grid.png``
(a row per run or group and seed, --seeds_shown seeds of each, a column per class; captions: what the judge read
and the own probability). The table is printed too. Seconds on a CPU for the shapes runs.

An image with NaN or infinite pixels (a diverged point) is not judged: verdicts.jsonl says so in its
``judge_says`` (probabilities null), the table names how many, and a warning on the terminal lists
them. A run whose images.npy and results.jsonl disagree (counts) is refused, with one line, before any
run is judged.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from experiments import _launch

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", [], "NAME=DIR of a finished run (repeat for several); DIR alone is named by "
                          "its folder.")
flags.DEFINE_string("params", None, "The runs' model (jaxvis params file); default: the shipped model whose "
                    "sha256 the run's config.json records.")
flags.DEFINE_string("judge", None, "The judging classifier (jaxvis params file); default: the shipped shapes "
                    "judge.")
flags.DEFINE_float("threshold", 0.9, "Own probability counted as confident.")
flags.DEFINE_integer("seeds_shown", 2, "Seeds of each run shown in the grid (0: all).")
flags.DEFINE_integer("cell", 96, "Grid cell size in pixels.")
flags.DEFINE_string("out", None, "Output folder.")


OUTPUTS = ("table.md", "verdicts.jsonl", "grid.png")
RUN_FILES = ("config.json", "axes.json", "results.jsonl")


def _named(entries):
    runs = {}
    for entry in entries:
        name, sep, folder = entry.partition("=")
        if not sep:
            name, folder = os.path.basename(os.path.normpath(entry)), entry
        if not name or not folder:
            sys.exit(f"error: --run takes NAME=DIR or DIR; got {entry!r}.")
        if name in runs:
            sys.exit(f"error: two runs are named {name!r}; name them with --run NAME=DIR.")
        runs[name] = folder
    return runs


def _model_of(run: str, params: str | None):
    import jaxvis
    from jaxvis import assets
    from jaxvis.evaluate import EvaluationError
    from jaxvis.fileio import sha256

    config_path = os.path.join(run, "config.json")
    if not os.path.exists(config_path):
        raise EvaluationError(f"{run} has no config.json: give a run directory of python -m experiments.class_model.")
    try:
        with open(config_path) as f:
            recorded = json.load(f).get("params_sha256")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise EvaluationError(f"{config_path} is not a JSON object; the file is damaged: run the sweep "
                              "again.") from None
    if params:
        model = jaxvis.load(params)  # a missing or damaged file: ParamsFileError, one line
        if recorded and sha256(params) != recorded:
            raise EvaluationError(f"{run} was made with another params file than {params} (sha256 differs); give "
                                  "the run's own --params.")
        return model
    for name in assets.SHIPPED:
        path = assets.path(name)
        if sha256(path) == recorded:
            return jaxvis.load(path)
    raise EvaluationError(f"{run} was not made with a shipped model; give its params file with --params.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.run:
        raise app.UsageError("--run is required: NAME=DIR of a finished run, repeated for several.")
    if not FLAGS.out:
        raise app.UsageError("--out is required: the folder for table.md, verdicts.jsonl and grid.png.")
    _launch.start(FLAGS.out)
    if not 0.0 < FLAGS.threshold <= 1.0:
        sys.exit(f"error: --threshold is the own probability counted as confident, above 0 and at most 1; got "
                 f"{FLAGS.threshold}.")
    held = [n for n in OUTPUTS + RUN_FILES if os.path.exists(os.path.join(FLAGS.out, n))]
    if held:  # an evaluation never overwrites: not an earlier one's files, not a run's own
        what = "a run directory" if set(held) & set(RUN_FILES) else "an earlier evaluation"
        sys.exit(f"error: --out {FLAGS.out} holds {what} ({', '.join(held)}); give an --out of its own (a new folder).")
    import numpy as np

    import jaxvis
    from jaxvis import assets, render
    from jaxvis import evaluate as ev

    from jaxvis.params import ParamsFileError

    runs = _named(FLAGS.run)
    try:
        judge = jaxvis.load(FLAGS.judge or assets.path("judge"))
        if judge.is_detector:
            raise ev.EvaluationError(f"--judge {FLAGS.judge} is a detector; give a classifier's params file.")
        # every run's model and files are checked before any is judged: a bad run costs no work
        models = {}
        for name, folder in runs.items():
            models[name] = _model_of(folder, FLAGS.params)
            ev.check_run(folder)
    except (ev.EvaluationError, ParamsFileError) as e:
        sys.exit(f"error: {e}")
    os.makedirs(FLAGS.out, exist_ok=True)
    summaries, rows, row_labels, lines, classes = {}, [], [], [], []
    for name, folder in runs.items():
        model = models[name]
        try:
            verdicts, records = ev.run_verdicts(folder, model, judge)
        except ev.EvaluationError as e:
            sys.exit(f"error: {name}: {e}")
        images, _ = ev.check_run(folder)  # memory-mapped: only the pictures shown are read again
        unjudged = [v for v in verdicts if not v.judged]
        if unjudged:
            print(f"warning: {name}: {len(unjudged)} of {len(verdicts)} image(s) have NaN or infinite pixels "
                  f"(diverged points: {', '.join(str(records[v.index]['index']) for v in unjudged[:10])}"
                  f"{', ...' if len(unjudged) > 10 else ''}); they are not judged: verdicts.jsonl marks them "
                  f"\"{ev.NOT_JUDGED}\" and the table counts them as not read.", file=sys.stderr)
        classes += [c for c in dict.fromkeys(v.target for v in verdicts) if c not in classes]
        for label, positions in ev.groups(records):
            group = f"{name} {label}".strip()
            chosen = [verdicts[i] for i in positions]
            summaries[group] = ev.summary(chosen, FLAGS.threshold)
            shown = sorted({v.seed for v in chosen})
            shown = shown[:FLAGS.seeds_shown] if FLAGS.seeds_shown > 0 else shown
            cells = {}
            for i in positions:
                v, r = verdicts[i], records[i]
                lines.append({"run": name, "group": group, "index": r["index"], "target": v.target, "seed": v.seed,
                              "judge_says": v.judge_says,
                              "judge_prob": round(v.judge_prob, 6) if v.judged else None,
                              "own_prob": round(v.own_prob, 6) if v.judged else None, "agrees": v.agrees,
                              **({"box": r["boxes"][0]} if model.is_detector else {})})
                if v.seed in shown and not v.judged:
                    cells[(v.seed, v.target)] = (None, "not judged: NaN/inf")
                elif v.seed in shown:
                    picture = (ev.pictures(model, images[r["index"]][None])[0] * 255).round().astype(np.uint8)
                    if model.is_detector:
                        picture = render.draw_boxes(picture, [r["boxes"][0]], [(255, 255, 255)], width=1)
                    cells[(v.seed, v.target)] = (picture, f"{v.judge_says} p={v.own_prob:.2f}")
            for seed in shown:
                row_labels.append(f"{group} s{seed}")
                rows.append({c: cells.get((seed, c)) for c in classes})
    grid = [[row[c][0] if row.get(c) else None for c in classes] for row in rows]
    caps = [[row[c][1] if row.get(c) else "" for c in classes] for row in rows]
    if any(cell is not None for row in grid for cell in row):
        title = "class models; under each: what the judge reads, the model's own probability"
        render.save_png(os.path.join(FLAGS.out, "grid.png"),
                        render.grid(grid, row_labels, classes, captions=caps, cell=FLAGS.cell, title=title))
    else:
        print("warning: grid.png is not written: no image shown has finite pixels.", file=sys.stderr)
    text = ev.table(summaries)
    with open(os.path.join(FLAGS.out, "table.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(FLAGS.out, "verdicts.jsonl"), "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    print(text)


if __name__ == "__main__":
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
