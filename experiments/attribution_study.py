r"""Every attribution method on the shipped shapes classifier and detector, ranked by every metric.

  python -m experiments.attribution_study --out docs          # both models; tens of minutes on 2 CPU cores
  python -m experiments.attribution_study --models classifier --images 16 --methods gradient,occlusion --out /tmp/a

Images come from ``jaxvis.data.shapes``: for the classifier, --images labelled images, each explained for
its own class; for the detector, generated scenes, each explained for its best detection that matches a
ground-truth box (score at least --min_score, IoU at least 0.5). Every map is computed in the network's
input (``preprocess=False``), where the metrics perturb it, and reduced to (H, W) (gradient family: the
max over colour channels of |attribution|, the paper's). Per method, the mean over the explained targets of:

- ``pointing``: whether the map's maximum lies in the object's ground-truth box; ``energy``: the share of
  the map's positive mass inside it;
- ``deletion`` / ``insertion``: the AUC of the target's probability (the detector: the D-RISE similarity)
  as pixels are removed (to a blur) or revealed in the map's order (``jaxvis.metrics.curves``);
- ``road_morf`` / ``road_lerf``: ROAD (Rong et al. 2022), the target's probability averaged over removing 10 %
  … 90 % of the pixels, most relevant first (lower is better) or least relevant first (higher is better),
  each removed pixel filled in by noisy linear imputation (``jaxvis.fidelity.road``);
- ``infidelity``: Yeh et al. 2019's infidelity of the raw attributions (with their colour channels where the
  method has them) under Gaussian perturbations of std --infidelity_noise, normalised (Captum's ``normalize``:
  the attributions' best scale), so methods of different units compare (lower is better);
- ``sensitivity``: Yeh et al. 2019's max-sensitivity, the largest relative change of the raw attributions
  when the input moves uniformly within ±--radius, over --sensitivity_samples draws, on the first
  --sensitivity_images images (lower is better);
- ``ms_per_map``: the batched calls' wall time per map, compilation excluded (a warm-up call first).

Writes, to --out, per model the picture ``attribution_study_<model>.png`` (images x methods) and its entry
of ``attribution_study.json`` (a model studied by an earlier run into the same --out keeps its entry), and
the tables of every model there, ``attribution_study.md``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "docs", "Output folder.")
flags.DEFINE_list("models", ["classifier", "detector"], "Shipped shapes models to study: classifier, detector.")
flags.DEFINE_list("methods", [], "Methods by their --method names (default: every one that explains the model).")
flags.DEFINE_integer("images", 48, "Classifier images, and detector scenes generated (those with a matched "
                     "detection are explained).")
flags.DEFINE_integer("seed", 7, "Seed of the generated images.")
flags.DEFINE_float("min_score", 0.5, "Detections explained: score at least this and matched to a ground-truth box.")
flags.DEFINE_integer("batch", 16, "Images per attribution call.")
flags.DEFINE_integer("curve_steps", 16, "Steps of a deletion/insertion curve.")
flags.DEFINE_integer("figure_images", 4, "Images shown in the figure, per model.")
flags.DEFINE_integer("infidelity_samples", 16, "Perturbations per image of the infidelity.")
flags.DEFINE_float("infidelity_noise", 0.02, "Standard deviation of the infidelity's perturbations, in the network "
                   "input's units.")
flags.DEFINE_integer("sensitivity_samples", 4, "Draws per image of the max-sensitivity.")
flags.DEFINE_float("radius", 0.02, "Half-width of the max-sensitivity's uniform draws, in the network input's units.")
flags.DEFINE_integer("sensitivity_images", 8, "Images whose max-sensitivity is measured (it re-runs the method "
                     "per draw).")

# Settings of the methods in the study: the launcher's defaults, cut where a default costs minutes per image
# on a CPU. Layers: the classifier's last convolution; the detector's source maps (the methods' defaults).
SETTINGS = {"samples": 16, "steps": 32, "masks": 500, "window": 16, "stride": 8, "cell": 16}
CLASSIFIER_LAYER = "conv5_2"
DETECTOR_ONLY = ("odam", "drise")


def method_names(model) -> list[str]:
    from jaxvis import cli

    names = list(FLAGS.methods) or list(cli.METHOD_NAMES)
    if not model.spec.is_detector:
        names = [n for n in names if n not in DETECTOR_ONLY]
    return names


def make_method(model, name: str):
    from jaxvis import cli

    layer = None if model.spec.is_detector else CLASSIFIER_LAYER
    options = {k: v for k, v in SETTINGS.items() if k in cli.METHOD_OPTIONS.get(name, ())}
    if "layer" in cli.METHOD_OPTIONS.get(name, ()):
        options["layer"] = layer
    return cli.attribution_method(name, **options)


def classifier_set(model):
    import numpy as np

    from jaxvis import saliency as sal
    from jaxvis.data import shapes

    images, labels, boxes = shapes.classification_set(FLAGS.seed, FLAGS.images)
    return np.asarray(model.preprocess(images)), images, sal.class_score(labels[:, None]), boxes, \
        [model.spec.labels[c] for c in labels]


def detector_set(model):
    import jax
    import numpy as np

    from jaxvis import metrics as met
    from jaxvis import saliency as sal
    from jaxvis.data import shapes

    images, gt_boxes, _, gt_valid = shapes.detection_set(FLAGS.seed, FLAGS.images, size=model.spec.input_size[0])
    det = jax.device_get(jax.jit(model.detect)(model.params, images))
    pairs = met.match_detections(det, gt_boxes, gt_valid, FLAGS.min_score, 4)
    keep = [i for i, p in enumerate(pairs) if p]
    rank = np.array([[pairs[i][0][0]] for i in keep])
    sub = {k: v[keep] for k, v in det.items()}
    boxes = np.array([gt_boxes[i, pairs[i][0][1]] for i in keep])
    names = [f"{model.spec.labels[sub['labels'][j, rank[j, 0]]]} {sub['scores'][j, rank[j, 0]]:.2f}"
             for j in range(len(keep))]
    return np.asarray(model.preprocess(images[keep])), images[keep], sal.detections(sub, rank), boxes, names


def study(model) -> tuple[dict, dict]:
    import numpy as np

    from jaxvis import fidelity as fd
    from jaxvis import metrics as met

    x, images, targets, boxes, names = (detector_set if model.spec.is_detector else classifier_set)(model)
    results, maps_by_method = {}, {}
    for name in method_names(model):
        method = make_method(model, name)
        b = FLAGS.batch
        method.attribute(model, x[:b], targets[:b], preprocess=False)                     # compile
        start, parts, raw = time.perf_counter(), [], []
        for a in range(0, len(x), b):
            e = method.attribute(model, x[a:a + b], targets[a:a + b], preprocess=False)
            parts.append(e.reduce())
            raw.append(e.attributions)
        elapsed = time.perf_counter() - start
        maps = np.concatenate(parts)[:, 0]
        raw = np.concatenate(raw)
        maps_by_method[name] = maps
        rows = {"pointing": [], "energy": [], "deletion": [], "insertion": []}
        for j in range(len(x)):
            rows["pointing"].append(met.pointing_hit(maps[j], boxes[j]))
            rows["energy"].append(met.energy_pointing(maps[j], boxes[j]))
            for mode, curve in met.curves(model, x[j], maps[j], targets[j:j + 1],
                                          steps=FLAGS.curve_steps).items():
                rows[mode].append(curve.auc)
        summary = {key: float(np.mean(v)) for key, v in rows.items()}
        for order in fd.ORDERS:
            summary[f"road_{order}"] = float(np.mean(fd.road(model, x, maps[:, None], targets, order=order,
                                                             preprocess=False).mean))
        summary["infidelity"] = float(np.mean(fd.infidelity(
            model, x, raw, targets, samples=FLAGS.infidelity_samples, noise=FLAGS.infidelity_noise, normalize=True,
            preprocess=False).values))
        m = FLAGS.sensitivity_images
        summary["sensitivity"] = float(np.mean(fd.max_sensitivity(
            method, model, x[:m], targets[:m], samples=FLAGS.sensitivity_samples, radius=FLAGS.radius,
            preprocess=False)))
        summary["ms_per_map"] = 1000 * elapsed / len(x)
        results[name] = summary
        print(model.spec.arch, name, json.dumps({k: round(v, 4) for k, v in summary.items()}), flush=True)
    return {"explained": len(x), "methods": results}, {"images": images, "boxes": boxes, "names": names,
                                                        "maps": maps_by_method}


def figure(model, shown: dict):
    import numpy as np

    from jaxvis import render

    rows = []
    n = min(FLAGS.figure_images, len(shown["images"]))
    for j in range(n):
        image = (np.clip(shown["images"][j], 0, 1) * 255 + 0.5).astype(np.uint8)
        box = [shown["boxes"][j]]
        row = [render.draw_boxes(image, box, [(0, 255, 0)])]
        row += [render.draw_boxes(render.overlay(shown["images"][j], m[j]), box, [(0, 255, 0)])
                for m in shown["maps"].values()]
        rows.append(row)
    what = "its best detection that matches an object" if model.spec.is_detector else "its own class"
    return render.grid(rows, shown["names"][:n], ["image"] + list(shown["maps"]), cell=96,
                       title=f"The shipped shapes {'detector' if model.spec.is_detector else 'classifier'}: each "
                             f"method explaining {what} (green: the object's box)")


COLUMNS = (("pointing", "pointing game ↑"), ("energy", "energy pointing ↑"), ("deletion", "deletion AUC ↓"),
           ("insertion", "insertion AUC ↑"), ("road_morf", "ROAD MoRF ↓"), ("road_lerf", "ROAD LeRF ↑"),
           ("infidelity", "infidelity ↓"), ("sensitivity", "max-sensitivity ↓"))


def markdown(result: dict) -> str:
    lines = []
    for name, part in result["models"].items():
        lines += [f"**{name}**: {part['explained']} targets explained (seed {part['seed']}, "
                  f"`{' '.join(part['command'])}`; settings {json.dumps(part['settings'])}).", "",
                  "| method | " + " | ".join(c[1] for c in COLUMNS) + " | ms / map |",
                  "|---|" + "---|" * (len(COLUMNS) + 1)]
        for method, r in part["methods"].items():
            cells = [f"{r[c]:.3g}" if c in ("infidelity", "sensitivity") else f"{r[c]:.3f}" for c, _ in COLUMNS]
            lines.append(f"| {method} | " + " | ".join(cells + [f"{r['ms_per_map']:.1f}"]) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import jaxvis
    from jaxvis import assets, cli, render

    unknown = sorted(set(FLAGS.methods) - set(cli.METHOD_NAMES))
    if unknown:
        raise app.UsageError(f"unknown --methods {', '.join(unknown)}; methods: {', '.join(cli.METHOD_NAMES)}")
    bad = sorted(set(FLAGS.models) - {"classifier", "detector"})
    if bad or not FLAGS.models:
        raise app.UsageError(f"--models takes classifier and/or detector, got {', '.join(FLAGS.models) or 'none'}")
    os.makedirs(FLAGS.out, exist_ok=True)
    path = os.path.join(FLAGS.out, "attribution_study.json")
    result = {"models": {}}
    if os.path.exists(path):            # a model studied by an earlier run keeps its entry
        with open(path) as f:
            result = json.load(f)
    settings = dict(SETTINGS, curve_steps=FLAGS.curve_steps, infidelity_samples=FLAGS.infidelity_samples,
                    infidelity_noise=FLAGS.infidelity_noise, sensitivity_samples=FLAGS.sensitivity_samples,
                    radius=FLAGS.radius, sensitivity_images=FLAGS.sensitivity_images, images=FLAGS.images)
    for which in FLAGS.models:
        model = jaxvis.load(assets.path(which))
        part, shown = study(model)
        render.save_png(os.path.join(FLAGS.out, f"attribution_study_{which}.png"), figure(model, shown))
        result["models"][which] = dict(part, seed=FLAGS.seed, settings=settings,
                                       command=["python", "-m", "experiments.attribution_study", *sys.argv[1:]])
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(FLAGS.out, "attribution_study.md"), "w") as f:
            f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
