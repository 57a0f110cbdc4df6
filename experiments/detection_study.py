r"""Every saliency method on generated scenes of the shipped shapes detector, measured against ground truth.

  python -m experiments.detection_study --out docs       # 200 scenes; about 15 minutes on 2 CPU cores

Scenes come from ``jaxvis.data.shapes`` (one to four shapes, one per quadrant, with tight boxes). A
detection is explained when its score is at least --min_score and it overlaps a ground-truth box with
IoU >= 0.5 (each ground-truth box matched once, best score first). Per explained detection:

- ``pointing``: the map's maximum inside the ground-truth box (no tolerance);
- ``centroid_dx`` / ``centroid_dy``: where the map's positive mass is centred, minus the ground-truth box's
  centre, in pixels (negative: left of / above the centre);
- ``energy``: energy-based pointing game, the share of the map's positive mass inside the ground-truth box;
- ``specificity``: instance specificity, over detections whose scene holds other explained detections:
  the share where the detection's own box holds more of the map than any other explained detection's
  box (``specificity_share``: own / (own + largest other), averaged);
- ``deletion`` / ``insertion``: AUC of the D-RISE similarity to the detection as pixels are removed (to
  the mean image) or revealed (from a blur) in the map's order, on the first --curve_scenes scenes;
- ``randomised``: cascading model randomisation on the first --random_scenes scenes: Spearman correlation
  of the map with the original after randomising the heads, then the extra layers and fc6/fc7, then
  everything (lower means the map depends on the weights, as it should);
- ``ms_per_map``: wall time of the batched calls divided by the number of maps computed, compilation
  excluded (a warm-up call first).

``odam`` is ODAM on its default layers (conv4_3, the last activation every head depends on, and map0 for
the first head's detections); ``odam_sources`` combines the source maps the heads read by the normalised sum
(each divided by its maximum); ``odam_own`` keeps the map of the source feature map whose head predicts the
detection, as the ODAM authors explain a multi-level detector. Grad-CAM runs on the source maps.
Gradient-family maps are reduced by the max over colour channels of |attribution| (the paper's).
Writes ``detection_study.md``, ``detection_study.json`` and ``detection_study.png`` (scenes x methods) to --out.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "docs", "Output folder.")
flags.DEFINE_integer("scenes", 200, "Generated scenes.")
flags.DEFINE_integer("seed", 2024, "Seed of the generated scenes.")
flags.DEFINE_float("min_score", 0.5, "Detections explained: score at least this and matched to a ground-truth box.")
flags.DEFINE_integer("masks", 500, "D-RISE masks.")
flags.DEFINE_integer("samples", 16, "SmoothGrad samples.")
flags.DEFINE_integer("steps", 32, "Integrated Gradients steps.")
flags.DEFINE_integer("curve_scenes", 40, "Scenes whose detections get deletion/insertion curves.")
flags.DEFINE_integer("curve_steps", 20, "Steps of a deletion/insertion curve.")
flags.DEFINE_integer("random_scenes", 8, "Scenes for the cascading randomisation.")
flags.DEFINE_integer("batch", 20, "Scenes per saliency call.")
flags.DEFINE_integer("figure_scenes", 4, "Scenes shown in the figure.")

K = 4  # at most four objects per scene


def methods():
    from jaxvis import saliency as sal

    return {
        "gradient": sal.gradient(),
        "grad_x_input": sal.grad_x_input(),
        "smoothgrad": sal.smoothgrad(samples=FLAGS.samples, noise=0.15),
        "integrated": sal.integrated(steps=FLAGS.steps),
        "gradcam": sal.gradcam(),
        "odam": sal.odam(),
        "odam_sources": sal.odam(layers="sources"),
        "odam_own": sal.odam(combine=sal.own_level),
        "drise": sal.drise(masks=FLAGS.masks, cell=16, p=0.5),
    }


def run() -> dict:
    import jax
    import numpy as np

    import jaxvis
    from jaxvis import assets, metrics as met, render
    from jaxvis import saliency as sal
    from jaxvis.data import shapes

    model = jaxvis.load(assets.path("detector"))
    images, gt_boxes, gt_labels, gt_valid = shapes.detection_set(FLAGS.seed, FLAGS.scenes, size=128)
    det = jax.device_get(jax.jit(model.detect)(model.params, images))
    pairs = met.match_detections(det, gt_boxes, gt_valid, FLAGS.min_score, K)
    keep = [i for i, p in enumerate(pairs) if p]
    # targets padded to K per scene by repeating the first detection (padded maps are computed, not scored)
    ranks = np.array([[p[min(k, len(p) - 1)][0] for k in range(K)] for p in (pairs[i] for i in keep)])
    sub = {k: v[keep] for k, v in det.items()}
    targets = sal.detections(sub, ranks)
    scene_images = images[keep]
    x_inputs = np.asarray(model.preprocess(scene_images))
    n_objects = int(gt_valid.sum())
    n_explained = sum(len(pairs[i]) for i in keep)
    print(f"{FLAGS.scenes} scenes, {n_objects} objects, {n_explained} detections explained")

    results, all_maps = {}, {}
    for name, method in methods().items():
        sal.saliency(model, scene_images[:FLAGS.batch], targets[:FLAGS.batch], method)  # compile
        start, chunks = time.perf_counter(), []
        for a in range(0, len(keep), FLAGS.batch):
            e = sal.saliency(model, scene_images[a:a + FLAGS.batch], targets[a:a + FLAGS.batch], method)
            chunks.append(e.reduce())
        elapsed = time.perf_counter() - start
        maps = np.concatenate(chunks)
        all_maps[name] = maps
        rows = {"pointing": [], "energy": [], "centroid_dx": [], "centroid_dy": [], "specificity": [],
                "specificity_share": [], "deletion": [], "insertion": []}
        for j, i in enumerate(keep):
            own = pairs[i]
            for k, (r, g) in enumerate(own):
                m = maps[j, k]
                rows["pointing"].append(met.pointing_hit(m, gt_boxes[i, g]))
                rows["energy"].append(met.energy_pointing(m, gt_boxes[i, g]))
                dx, dy = met.centroid_offset(m, gt_boxes[i, g])
                if np.isfinite(dx):
                    rows["centroid_dx"].append(dx)
                    rows["centroid_dy"].append(dy)
                others = [det["boxes"][i, r2] for k2, (r2, _) in enumerate(own) if k2 != k]
                if others:
                    s = met.instance_specificity(m, det["boxes"][i, r], others)
                    rows["specificity"].append(s["hit"])
                    rows["specificity_share"].append(s["share"])
                if i < FLAGS.curve_scenes:
                    t = sal.detection([[det["anchor"][i, r]]], [[det["labels"][i, r]]])
                    for mode in ("deletion", "insertion"):
                        curve = met.detection_deletion_insertion(model, x_inputs[j], m, t, insert=mode == "insertion",
                                                                 steps=FLAGS.curve_steps)
                        rows[mode].append(curve.auc)
        summary = {key: float(np.mean(v)) for key, v in rows.items() if v}
        summary["ms_per_map"] = 1000 * elapsed / (len(keep) * K)
        summary["counts"] = {key: len(v) for key, v in rows.items()}
        summary["randomised"] = randomisation(model, scene_images, targets, method, keep)
        results[name] = summary
        print(name, json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}))
    figure(model, scene_images, det, keep, pairs, all_maps, render)
    return {"scenes": FLAGS.scenes, "objects": n_objects, "explained": n_explained, "seed": FLAGS.seed,
            "settings": {"masks": FLAGS.masks, "samples": FLAGS.samples, "steps": FLAGS.steps,
                         "min_score": FLAGS.min_score, "curve_scenes": FLAGS.curve_scenes,
                         "curve_steps": FLAGS.curve_steps, "random_scenes": FLAGS.random_scenes},
            "methods": results}


def randomisation(model, images, targets, method, keep):
    """Spearman correlations after randomising the heads, then the layers above conv5, then everything."""
    from jaxvis import metrics as met

    n = min(FLAGS.random_scenes, len(keep))
    order = met.layer_order(model.params)
    heads = [name for name in order if "head" in name]
    upper = heads + [name for name in order if name.startswith(("conv8", "conv9", "conv10", "conv11", "fc"))]
    return met.staged_randomisation(model, images[:n], targets[:n], method,
                                    {"heads": heads, "heads+extras+fc": upper, "all": order})


def figure(model, images, det, keep, pairs, all_maps, render):
    import numpy as np

    rows, labels = [], []
    for j in range(min(FLAGS.figure_scenes, len(keep))):
        i = keep[j]
        r = pairs[i][0][0]
        box = det["boxes"][i, r]
        name = model.spec.labels[det["labels"][i, r]]
        image = (np.clip(images[j], 0, 1) * 255 + 0.5).astype(np.uint8)
        row = [render.draw_boxes(image, [box], [(0, 255, 0)])]
        row += [render.draw_boxes(render.overlay(images[j], maps[j, 0]), [box], [(0, 255, 0)])
                for maps in all_maps.values()]
        rows.append(row)
        labels.append(f"{name} {det['scores'][i, r]:.2f}")
    picture = render.grid(rows, labels, ["scene"] + list(all_maps), cell=128,
                          title="Explaining one detection (green box) of the shipped shapes detector")
    render.save_png(os.path.join(FLAGS.out, "detection_study.png"), picture)


def markdown(result: dict) -> str:
    cols = [("pointing", "pointing game"), ("energy", "energy pointing"), ("specificity", "instance specificity"),
            ("specificity_share", "own-box share"), ("deletion", "deletion AUC ↓"), ("insertion", "insertion AUC ↑")]
    lines = [f"Shipped shapes detector, {result['scenes']} generated scenes (seed {result['seed']}), "
             f"{result['explained']} detections explained of {result['objects']} objects. "
             "Written by `python -m experiments.detection_study`.", "",
             "| method | " + " | ".join(c[1] for c in cols) + " | centroid dx, dy (px) | ρ heads | ρ +extras,fc | ρ all "
             "| ms / map |",
             "|---|" + "---|" * (len(cols) + 5)]
    for name, r in result["methods"].items():
        cells = [f"{r[c]:.3f}" if c in r else "–" for c, _ in cols]
        cells.append(f"{r['centroid_dx']:+.1f}, {r['centroid_dy']:+.1f}" if "centroid_dx" in r else "–")
        rho = r["randomised"]
        cells += [f"{rho['heads']:.2f}", f"{rho['heads+extras+fc']:.2f}", f"{rho['all']:.2f}", f"{r['ms_per_map']:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = next(iter(result["methods"].values()))["counts"]
    s = result["settings"]
    lines += ["", f"Pointing and energy over {counts['pointing']} detections, instance specificity over "
              f"{counts['specificity']} (those with another explained detection in the scene), deletion/insertion "
              f"over {counts['deletion']} ({s['curve_steps']} steps, the D-RISE similarity as the score), "
              f"randomisation over {s['random_scenes']} scenes (Spearman ρ with the original map). Centroid: the "
              f"map's positive-mass centre minus the ground-truth box centre, mean over detections. D-RISE "
              f"{s['masks']} masks, SmoothGrad {s['samples']} samples, Integrated Gradients {s['steps']} steps."]
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    os.makedirs(FLAGS.out, exist_ok=True)
    result = run()
    with open(os.path.join(FLAGS.out, "detection_study.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(FLAGS.out, "detection_study.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
