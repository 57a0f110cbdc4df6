r"""The main job on the shipped shapes models: class models, detector objectives and saliency.

  make demo            # = python -m experiments.demo --out runs/demo

1. Class-model images of every class of the shapes classifier under the lab's three losses (-score,
   -score + mean(x^2), 1/score) and learning rates 0.1, 1 and 10, with snapshots after 10, 50 and 200
   steps; then the readable recipe of ``experiments/configs/feature_vis.py:shapes`` (a decorrelated
   Fourier image, random turns and zooms, two views per step, Adam), whose images an independently
   trained judge classifies as their class.
2. The three SSD objectives on the shapes detector (biggest default box + localisation, all default
   boxes, the MultiBox criterion) for the whole image and a centred quarter-size box (Adam, valid pixel
   values).
3. Saliency maps and the boxes derived from them on freshly generated scenes, for the classifier and for
   single detections.
4. The atlases of the classifier's last convolutional layer (conv5_2) and of the detector's last backbone
   convolution (conv5_3): each class's channels ranked by ablation on 200 scenes, checked on 200 others,
   dissected against the shapes' masks, each channel's pictures and top regions (``experiments.atlas``).

Everything lands under --out with an index.html. On a 2-core CPU it takes a few minutes.
"""

from __future__ import annotations

import html
import json
import os
import time

from absl import app, flags

from experiments import _launch

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "runs/demo", "Output folder.")
flags.DEFINE_integer("steps", 200, "Gradient steps of the class-model sweeps.")
flags.DEFINE_integer("detector_steps", 100, "Gradient steps of the detector sweep.")
flags.DEFINE_integer("scenes", 12, "Generated scenes for the saliency part.")
flags.DEFINE_integer("atlas_steps", 256, "Feature-visualisation steps of the atlases' pictures.")
flags.DEFINE_bool("resume", False, "Continue an earlier demo run in --out.")

ATLASES = (("classifier", "conv5_2"), ("detector", "conv5_3"))


def _classifier_settings(steps: int):
    """The lab's study on the shipped classifier: every class, the three losses, three learning rates
    (the other settings at their defaults)."""
    from jaxvis import assets
    from jaxvis.data import shapes
    from jaxvis.settings import SweepSettings

    return SweepSettings.create(model="shapes_vgg", params=assets.path("classifier"), categories=shapes.CLASSES,
                                lrs=(0.1, 1.0, 10.0), steps=steps, loss=("score", "score+sq", "inv_score"),
                                snapshots=(10, 50, steps))


def class_models(out: str, steps: int, resume: bool) -> dict:
    """The lab's losses and learning rates, then the readable recipe (feature_vis.py:shapes) whose
    images another network can read."""
    from experiments.configs import feature_vis
    from jaxvis import sweeps
    from jaxvis.settings import SweepSettings

    lab = _classifier_settings(steps)
    readable = SweepSettings.from_mapping(feature_vis.get_config("shapes"))
    lab_out, readable_out = os.path.join(out, "classifier"), os.path.join(out, READABLE)
    lab_index = sweeps.run(lab, lab_out, resume=resume, progress=_launch.progress_bar())
    readable_index = sweeps.run(readable, readable_out, resume=resume, progress=_launch.progress_bar())
    return {"index": os.path.relpath(lab_index, out), "readable_index": os.path.relpath(readable_index, out),
            "judge": {**judge(lab_out, {"score": 1.0, "sq": 1.0}), **judge(readable_out, None, "shapes recipe ")}}


READABLE = "classifier_readable"


def judge(run: str, loss: dict | None, prefix: str = "") -> dict:
    """The judge's verdict per learning rate: each image of the run (of ``loss`` if given), clipped to a
    valid picture, is classified by the independently trained judge."""
    import numpy as np

    import jaxvis
    from jaxvis import assets, evaluate

    classifier = jaxvis.load(assets.path("classifier"))
    judge_model = jaxvis.load(assets.path("judge"))
    images = np.load(os.path.join(run, "images.npy"), mmap_mode="r")
    records = [json.loads(line) for line in open(os.path.join(run, "results.jsonl"))]
    out = {}
    for lr in sorted({r["lr"] for r in records}):
        rows = [r for r in records if (loss is None or r["loss"] == loss) and r["lr"] == lr]
        pictures = evaluate.pictures(classifier, np.asarray(images[[r["index"] for r in rows]]))
        votes, _ = evaluate.judge_read(judge_model, pictures)
        agree = [int(v == r["target"]) for v, r in zip(votes, rows)]
        out[f"{prefix}lr={lr:g}"] = {"agree": int(sum(agree)), "of": len(rows),
                                     "judge_says": [judge_model.labels[v] for v in votes]}
    return out


def detector_objectives(out: str, steps: int, resume: bool) -> dict:
    from jaxvis import assets, sweeps
    from jaxvis.settings import SweepSettings

    settings = SweepSettings.create(
        model="shapes_ssd", params=assets.path("detector"), categories=("circle", "star", "cross"), lrs=(0.05,),
        steps=steps, loss=("biggest_box+box_loc", "all_boxes", "multibox"), optimizer="adam", clip=True,
        boxes=("whole", "centre_quarter"), snapshots=(10, steps))
    index = sweeps.run(settings, os.path.join(out, "detector"), resume=resume, progress=_launch.progress_bar())
    return {"index": os.path.relpath(index, out)}


def saliency_part(out: str, scenes: int) -> dict:
    import jax
    import numpy as np

    import jaxvis
    from jaxvis import assets, render
    from jaxvis import localize as loc
    from jaxvis import metrics as met
    from jaxvis import saliency as sal
    from jaxvis.data import shapes

    folder = os.path.join(out, "saliency")
    os.makedirs(folder, exist_ok=True)
    classifier = jaxvis.load(assets.path("classifier"))
    images, labels, boxes = shapes.classification_set(2024, max(scenes, 24))
    maps = sal.gradient().attribute(classifier, images, sal.class_score(labels[:, None])).reduce()[:, 0]
    cells, captions, hits, ious = [], [], 0, []
    for image, label, box, m in zip(images, labels, boxes, maps):
        found = loc.localize(image, m)
        hit = met.pointing_hit(m, box)
        hits += hit
        iou = float(jaxvis.boxes.iou(np.asarray([box]), np.asarray([found.box]))[0, 0]) if found.box else 0.0
        ious.append(iou)
        picture = render.draw_boxes(render.overlay(image, m), [box, found.box], [(0, 255, 0), (0, 200, 255)])
        cells.append([(image * 255).astype(np.uint8), picture])
        captions.append([shapes.CLASSES[label], f"hit={'yes' if hit else 'no'} IoU={iou:.2f}"])
    shown = cells[:scenes]
    grid = render.grid([[c[0] for c in shown], [c[1] for c in shown]], ["image", "saliency"],
                       [str(i) for i in range(len(shown))],
                       captions=[[c[0] for c in captions[:scenes]], [c[1] for c in captions[:scenes]]],
                       title="classifier saliency (green: true box, blue: box derived from the map)", cell=128)
    render.save_png(os.path.join(folder, "classifier.png"), grid)

    detector = jaxvis.load(assets.path("detector"))
    scenes_, _, _, _ = shapes.detection_set(2025, min(scenes, 6))
    det = jax.device_get(jax.jit(detector.detect)(detector.params, scenes_))
    targets = sal.detections(det, np.zeros((len(scenes_), 1), int))
    dmaps = sal.gradient().attribute(detector, scenes_, targets).reduce()[:, 0]
    row_images, row_maps, caps = [], [], []
    for j, (scene, m) in enumerate(zip(scenes_, dmaps)):
        label = detector.labels[det["labels"][j, 0]]
        box = det["boxes"][j, 0]
        found = loc.localize(scene, m)
        row_images.append(render.draw_boxes((scene * 255).astype(np.uint8), [box], [(0, 255, 0)], [label]))
        row_maps.append(render.draw_boxes(render.overlay(scene, m), [box, found.box], [(0, 255, 0), (0, 200, 255)]))
        caps.append(f"{label} {det['scores'][j, 0]:.2f}")
    grid = render.grid([row_images, row_maps], ["detection", "saliency"], caps, cell=192,
                       title="saliency of each scene's top detection (class score of its default box)")
    render.save_png(os.path.join(folder, "detector.png"), grid)
    return {"pointing_game": f"{hits}/{len(images)}", "mean_iou": round(float(np.mean(ious)), 3),
            "images": ["saliency/classifier.png", "saliency/detector.png"], "cells": cells, "captions": captions,
            "labels": [int(v) for v in labels]}


def summary_picture(out: str, saliency: dict) -> str:
    """One picture of the demo: the readable class models of the six classes above saliency maps of
    generated images of the same classes, with true and derived boxes."""
    import numpy as np

    import jaxvis
    from jaxvis import assets, render

    classifier = jaxvis.load(assets.path("classifier"))
    run = os.path.join(out, READABLE)
    records = [json.loads(line) for line in open(os.path.join(run, "results.jsonl"))]
    chosen = [r for r in records if r["seed"] == 0]
    images = np.load(os.path.join(run, "images.npy"), mmap_mode="r")
    models = [render.to_display(classifier.spec, images[r["index"]]) for r in chosen]
    # a generated image of the same class under each class model, where the demo drew one
    first = {label: i for i, label in reversed(list(enumerate(saliency["labels"])))}
    maps = [saliency["cells"][first[r["target"]]][1] if r["target"] in first else None for r in chosen]
    caps = [saliency["captions"][first[r["target"]]][1] if r["target"] in first else "" for r in chosen]
    picture = render.grid([models, maps], ["class model", "saliency"], [r["target_name"] for r in chosen],
                          captions=[[f"p={r['final_prob']:.2f}" for r in chosen], caps], cell=128)
    path = os.path.join(out, "summary.png")
    render.save_png(path, picture)
    return path


def atlases(out: str, steps: int, resume: bool) -> list[dict]:
    """The atlas of each model's layer in ``ATLASES`` (kept when ``resume`` finds it written)."""
    import jaxvis
    from jaxvis import assets, features as ft, report

    made = []
    for name, layer in ATLASES:
        folder = os.path.join(out, f"atlas_{name}")
        if not (resume and os.path.exists(os.path.join(folder, report.ATLAS_FILE))):
            model = jaxvis.load(assets.path(name))
            atlas = ft.build_atlas(model, ft.shapes_dataset(model, 200, 0), layer,
                                   held_out=ft.shapes_dataset(model, 200, 1), steps=steps,
                                   progress=lambda text: print(f"    {name} {layer}: {text}", flush=True))
            report.write_atlas(folder, atlas)
        doc = report.read_atlas(folder)
        ratios = [v["ratio"] for v in doc["faithfulness"]["classes"].values() if v.get("count")]
        made.append({"name": name, "layer": layer, "index": f"atlas_{name}/index.html", "min_ratio": min(ratios),
                     "labelled": doc.get("dissection", {}).get("labelled"), "channels": doc["channels"]})
    return made


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from jaxvis import render

    _launch.start(FLAGS.out)
    start = time.time()
    out = FLAGS.out
    os.makedirs(out, exist_ok=True)
    print("1/4 class models of the shapes classifier")
    cls = class_models(out, FLAGS.steps, FLAGS.resume)
    verdict = ", ".join(f"{k}: {v['agree']}/{v['of']}" for k, v in cls["judge"].items())
    print(f"    judge on the lab-loss images: {verdict}")
    print("2/4 the three SSD objectives on the shapes detector")
    det = detector_objectives(out, FLAGS.detector_steps, FLAGS.resume)
    print("3/4 saliency maps and derived boxes on generated scenes")
    sm = saliency_part(out, FLAGS.scenes)
    print(f"    pointing game {sm['pointing_game']}, mean IoU of derived boxes {sm['mean_iou']}")
    summary_picture(out, sm)
    print("4/4 the atlases of the last convolutional layers")
    maps = atlases(out, FLAGS.atlas_steps, FLAGS.resume)
    for a in maps:
        print(f"    {a['name']} {a['layer']}: top 8 channels zeroed lower each class's score at least {a['min_ratio']:.3g}x "
              f"as much as random sets of 8; {a['labelled']} of {a['channels']} channels labelled")
    judge_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['agree']}/{v['of']}</td><td>{html.escape(', '.join(v['judge_says']))}</td></tr>"
        for k, v in cls["judge"].items())
    sections = [
        ("Summary", "<img class=grid src='summary.png'>"),
        ("Class models (classifier)",
         f"<p><a href='{cls['index']}'>the lab's sweep</a>: 6 classes x 3 losses (-score, -score + sq, 1/score) x 3 "
         f"learning rates; below, -score + sq. <a href='{cls['readable_index']}'>The readable recipe</a> "
         "(feature_vis.py:shapes): a decorrelated Fourier image, two randomly turned and zoomed views per step, "
         "Adam, four seeds.</p>"
         f"<img class=grid src='classifier/grid_001.png'><img class=grid src='{READABLE}/grid.png'>"
         "<p>Judge (an independently trained classifier) on the images, clipped to valid pictures:</p>"
         f"<table><tr><th>images</th><th>agrees</th><th>judge's labels</th></tr>{judge_rows}</table>"),
        ("Class models (detector)",
         f"<p><a href='{det['index']}'>the whole sweep</a>: biggest box + localisation, all boxes, MultiBox; whole "
         "image (below) and centred quarter box.</p><img class=grid src='detector/grid_000.png'>"),
        ("Saliency", f"<p>Pointing game {sm['pointing_game']}, mean IoU of derived boxes {sm['mean_iou']}.</p>"
         + "".join(f"<p><img class=grid src='{p}'></p>" for p in sm["images"])),
        ("Atlases of the last convolutional layers", "<ul>" + "".join(
            f"<li><a href='{a['index']}'>the {a['name']}'s {a['layer']}</a>: {a['channels']} channels; each class's "
            f"top 8 zeroed lower its score at least {a['min_ratio']:.3g}x as much as random sets of 8; "
            f"{a['labelled']} channels labelled by dissection</li>" for a in maps) + "</ul>"),
    ]
    with open(os.path.join(out, "index.html"), "w") as f:
        f.write(render.html_page("jaxvis demo: shapes models", sections))
    print(f"done in {time.time() - start:.0f} s. Open {os.path.join(out, 'index.html')}")


if __name__ == "__main__":
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
