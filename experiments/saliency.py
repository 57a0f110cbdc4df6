r"""Image-specific saliency maps (Simonyan et al. 2013, section 3) for classifiers and detections.

  python -m experiments.saliency --model vgg16 --params vgg16.safetensors --image photo.jpg \
      --category goose --out runs/s
  python -m experiments.saliency --params vgg16.safetensors --image a.jpg --image b.jpg --top_k 3 --out runs/s
  python -m experiments.saliency --params ssd300.safetensors --image street.jpg --detection 0,1 --out runs/d
  python -m experiments.saliency --params ssd300_voc.safetensors --image field.jpg \
      --box 40,60,300,280 --category horse --out runs/h
  python -m experiments.saliency --params DET --image a.png --detection 0,1 --method odam --out runs/o
      (--method gradient, grad_x_input, guided_backprop, deconvnet, smoothgrad, integrated, gradcam,
      guided_gradcam, odam, drise, occlusion, feature_ablation, deeplift, deeplift_shap, gradient_shap,
      lrp_epsilon, lrp_alphabeta, shapley_sampling, kernel_shap or lime: jaxvis.cli.METHOD_NAMES)

For each image and target it writes the map (``.npy``, float32, the image's height and width), a PNG
with the heat map over the image and the detection's or the derived box drawn, and a line of
``results.jsonl``: ``image``, ``target``, ``kind``, ``score`` (the target's value; D-RISE: the similarity on
the unmasked image), ``method``, ``map``, ``png``, ``box``, ``derived_box``, ``metrics``, and for detections
``detection`` (its rank), ``label``, ``det_score`` and ``gt_box`` (with --gt_box). ``--localize`` derives a box from the
map (GrabCut on saliency seeds, on at most ``jaxvis.localize.MAX_PIXELS`` pixels and for at most
``jaxvis.localize.TIMEOUT`` seconds: past them the record's ``derived_box_note`` says why there is none);
``--metrics deletion,insertion`` measures the map.

Outputs are named ``<image stem>_<k>_<target>``; a name an earlier output in --out already has gets ``-2``,
``-3`` …, so a second run into the same --out (another method, an image of the same name from another
folder) adds its files and records and never overwrites. One process writes an --out at a time. Every
image's size, the memory its full-resolution maps need (stated when large, refused when it does not fit)
and every image's targets are checked before anything is written.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from jaxvis.cli import METHOD_NAMES

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Architecture expected in --params (checked against the file).")
flags.DEFINE_string("params", None, "jaxvis params file.")
flags.DEFINE_multi_string("image", [], "Image file(s); repeat the flag for several.")
flags.DEFINE_list("category", [], "Class names or indices (classifiers; with --box for detectors).")
flags.DEFINE_integer("top_k", None, "Explain each image's k best classes (classifiers).")
flags.DEFINE_list("detection", [], "Detections to explain, by rank in each image's detections (detectors).")
flags.DEFINE_multi_string("box", [], "x1,y1,x2,y2 in image pixels: explain 'why is there a <category> here' "
                          "(detectors).")
flags.DEFINE_enum("method", "gradient", list(METHOD_NAMES), "Attribution method (see jaxvis.attribution).")
flags.DEFINE_list("layer", [], "gradcam/odam/guided_gradcam: layer name(s) (guided_gradcam: one), or 'sources' for a "
                  "detector's source feature maps "
                  "(default for detectors: Grad-CAM the source maps, ODAM conv4_3 and map0).")
flags.DEFINE_integer("samples", None, "smoothgrad: noisy copies (25); gradient_shap: draws (25); shapley_sampling: "
                     "random orders of the cells (25); kernel_shap, lime: coalitions of cells (500).")
flags.DEFINE_float("noise", 0.15, "smoothgrad: noise std as a fraction of the input's range.")
flags.DEFINE_integer("steps", 64, "integrated, blur_ig, guided_ig, xrai: path steps.")
flags.DEFINE_integer("masks", 1000, "drise: number of masks.")
flags.DEFINE_integer("cell", 16, "drise: mask cell size; feature_ablation, shapley_sampling, kernel_shap, lime: the "
                     "grid's square; in image pixels.")
flags.DEFINE_float("p", 0.5, "drise: probability that a cell is kept.")
flags.DEFINE_integer("window", 16, "occlusion: side of the occluding square in the image's pixels.")
flags.DEFINE_integer("stride", 8, "occlusion: step between the squares' positions.")
flags.DEFINE_float("epsilon", None, "lrp_epsilon: the stabiliser of the epsilon rule (1e-9).")
flags.DEFINE_float("lasso", None, "lime: the L1 penalty of its Lasso (0.01, Captum's default); 0 fits by least "
                   "squares.")
flags.DEFINE_enum("algorithm", "full", ["full", "fast"], "xrai: the greedy ranking of the regions (full), or PAIR's "
                  "fast variant (one order of the segments, overlaps ignored).")
flags.DEFINE_float("alpha", 1.0, "lrp_alphabeta: the weight of the positive contributions (beta = alpha - 1).")
flags.DEFINE_float("beta", 0.0, "lrp_alphabeta: the weight of the negative contributions.")
flags.DEFINE_integer("seed", 0, "Random seed of the random methods (smoothgrad, drise, gradient_shap, shapley_sampling, "
                     "kernel_shap, lime).")
flags.DEFINE_enum("reduce", "max", ["max", "sum", "l2", "signed"], "Channel reduction of the gradient family "
                  "(the paper: max of |grad|).")
flags.DEFINE_enum("score", "logit", ["logit", "prob", "log_prob"], "Which score of the class is differentiated.")
flags.DEFINE_bool("localize", True, "Derive a box from the map (GrabCut from saliency seeds).")
flags.DEFINE_list("metrics", [], "deletion, insertion (and pointing with --gt_box: the pointing game and the "
                  "energy-based pointing game). For detections the deletion/insertion score is the D-RISE "
                  "similarity to the detection.")
flags.DEFINE_string("gt_box", None, "x1,y1,x2,y2 of the object, for the pointing game.")
flags.DEFINE_string("out", None, "Output folder.")


class UsageError(ValueError):
    pass


def _box(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"a box is four numbers x1,y1,x2,y2; got {text!r}") from None
    if len(values) != 4:
        raise UsageError(f"a box is four numbers x1,y1,x2,y2; got {text!r}")
    if not (values[2] > values[0] and values[3] > values[1]):
        raise UsageError(f"box {text} has zero or negative area; expected x1 < x2 and y1 < y2.")
    return values


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from experiments import _launch

    _launch.start(FLAGS.out)  # quiet JAX logs; a --out that cannot be written ends here in one line
    from jaxvis.fileio import OutputError
    from jaxvis.images import ImageError
    from jaxvis.labels import CategoryError
    from jaxvis.params import ParamsFileError
    from jaxvis.saliency import SaliencyError

    try:
        run()
    except (UsageError, ImageError, CategoryError, ParamsFileError, SaliencyError, OutputError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        _launch.exit_interrupted(f"interrupted: the images finished so far are in {FLAGS.out}/results.jsonl; run "
                                 "the command again for the others (new outputs never overwrite earlier ones).")


def _targets(model, image, path: str):
    """The targets the flags ask for in one image: (kind, Target, names, per-target detection fields, boxes to
    draw with their labels)."""
    import jax
    import numpy as np

    from jaxvis import cli
    from jaxvis import labels as lab
    from jaxvis import saliency as sal

    h, w = image.shape[:2]
    batch = image[None]
    if not model.spec.is_detector:
        if FLAGS.detection or FLAGS.box:
            raise UsageError(f"{model.spec.arch} is a classifier: --detection and --box are for detectors.")
        if FLAGS.top_k:
            classes = sal.top_k_classes(model, batch, FLAGS.top_k)
        elif FLAGS.category:
            classes = np.asarray([lab.resolve(FLAGS.category, model.spec.labels)])
        else:
            raise UsageError("give --category or --top_k.")
        return ("class", sal.class_score(classes, cli.attribution_score(FLAGS.score)),
                [model.spec.labels[c] for c in classes[0]], [], [])
    if FLAGS.top_k:
        raise UsageError(f"{model.spec.arch} is a detector: use --detection or --box with --category.")
    th, tw = model.spec.input_size
    scale = np.array([tw / w, th / h, tw / w, th / h])
    if FLAGS.box:
        if not FLAGS.category:
            raise UsageError("--box needs --category: the label whose presence in the box is explained.")
        cats = lab.resolve(FLAGS.category, model.spec.labels)
        if len(cats) not in (1, len(FLAGS.box)):
            raise UsageError("give one --category for all boxes, or one per box.")
        boxes = [_box(b) for b in FLAGS.box]
        for b in boxes:
            if b[0] < 0 or b[1] < 0 or b[2] > w or b[3] > h:
                raise UsageError(f"box {b} lies outside the {w}x{h} image.")
        cats = cats * len(boxes) if len(cats) == 1 else cats
        target = sal.box_label(np.asarray([[np.asarray(b) * scale for b in boxes]], np.float32), np.asarray([cats]))
        names = [f"{model.spec.labels[c]} in box" for c in cats]
        return "box_label", target, names, [], list(zip(boxes, [model.spec.labels[c] for c in cats]))
    try:
        ranks = [int(r) for r in (FLAGS.detection or ["0"])]
    except ValueError:
        raise UsageError(f"--detection takes ranks in each image's detections, whole numbers from 0 (0,1 for the "
                         f"two best); got {','.join(FLAGS.detection)!r}.") from None
    det = jax.device_get(jax.jit(model.detect)(model.params, batch))
    n_valid = int(det["valid"][0].sum())
    bad = [r for r in ranks if not 0 <= r < n_valid]
    if bad:
        raise UsageError(f"{os.path.basename(path)} has {n_valid} detection(s); --detection {bad[0]} "
                         f"does not exist (ranks start at 0).")
    names = [f"{model.spec.labels[det['labels'][0, r]]} #{r} ({det['scores'][0, r]:.2f})" for r in ranks]
    det_info = [{"detection": r, "label": model.spec.labels[det["labels"][0, r]],
                 "det_score": float(det["scores"][0, r])} for r in ranks]
    return ("detection", sal.detections(det, np.asarray([ranks]), cli.attribution_score(FLAGS.score)), names, det_info,
            list(zip([det["boxes"][0, r] for r in ranks], names)))


def _check_flags() -> None:
    if not FLAGS.params:
        raise UsageError("--params is required: a jaxvis params file.")
    if not FLAGS.image:
        raise UsageError("--image is required (repeat it for several images).")
    if not FLAGS.out:
        raise UsageError("--out is required: the output folder.")
    unknown = sorted(set(FLAGS.metrics) - {"deletion", "insertion", "pointing"})
    if unknown:
        raise UsageError(f"--metrics takes deletion, insertion, pointing; got {unknown}")
    if "pointing" in FLAGS.metrics and not FLAGS.gt_box:
        raise UsageError("the pointing game needs --gt_box x1,y1,x2,y2.")
    if FLAGS.top_k is not None and FLAGS.category:
        raise UsageError("give --category or --top_k, not both: --top_k explains each image's k best classes.")
    # numbers that only one method reads: given with another, they would do nothing
    from jaxvis.cli import METHOD_OPTIONS

    reads = METHOD_OPTIONS.get(FLAGS.method, ())
    readers = {n: sorted(m for m, names in METHOD_OPTIONS.items() if n in names) for names in METHOD_OPTIONS.values()
               for n in names}
    unread = [f"--{name}" for name in readers if FLAGS[name].present and name not in reads]
    if unread:
        it, methods = ("it" if len(unread) == 1 else "them"), sorted({m for n in unread for m in readers[n[2:]]})
        raise UsageError(f"{', '.join(unread)} {'is' if len(unread) == 1 else 'are'} not read by --method "
                         f"{FLAGS.method}, so {'it' if len(unread) == 1 else 'they'} would do nothing: drop {it}, or "
                         f"choose the method that reads {it} ({', '.join(methods)}).")


def run() -> str:
    import jaxvis
    from jaxvis import cli, fileio
    from jaxvis import images as image_io
    from jaxvis import saliency as sal

    _check_flags()
    for note in sal.check_image_memory(FLAGS.image, [image_io.image_size(p) for p in FLAGS.image]):
        print(f"note: {note}")
    model = jaxvis.load(FLAGS.params, arch=FLAGS.model or None)
    notes: list[str] = []
    images = [image_io.load_image(p, notes=notes) for p in FLAGS.image]
    for note in notes:
        print(f"note: {note}")
    method = cli.attribution_method(FLAGS.method, samples=FLAGS.samples, noise=FLAGS.noise, steps=FLAGS.steps,
                                    window=FLAGS.window, stride=FLAGS.stride,
                                    layer=FLAGS.layer or None, masks=FLAGS.masks, cell=FLAGS.cell, p=FLAGS.p,
                                    epsilon=FLAGS.epsilon, alpha=FLAGS.alpha, beta=FLAGS.beta, lasso=FLAGS.lasso,
                                    algorithm=FLAGS.algorithm)
    # every image's targets are found (and refused) before anything is written
    planned = [(path, image, *_targets(model, image, path)) for path, image in zip(FLAGS.image, images)]
    lock = fileio.DirLock(FLAGS.out)  # one writer per --out
    finished = False
    try:
        out = _explain(model, method, planned)
        finished = True
    finally:
        lock.release(remove=not finished)
    print(f"Open {jaxvis.report.write_saliency(FLAGS.out)}")
    return out


def _explain(model, method, planned) -> str:
    """Explains each planned image, writing its maps, pictures and records (appended to results.jsonl as each
    image finishes) under names no earlier output in --out has."""
    import numpy as np

    from jaxvis import cli, fileio
    from jaxvis import images as image_io
    from jaxvis import localize as loc
    from jaxvis import metrics as met
    from jaxvis import preprocess as pre
    from jaxvis import render

    taken: set[str] = set()
    curves = [m for m in ("deletion", "insertion") if m in FLAGS.metrics]
    out = os.path.join(FLAGS.out, "results.jsonl")
    for path, image, kind, target, names, det_info, shown in planned:
        lines = []
        explanation = method.attribute(model, image[None], target, seed=FLAGS.seed)
        maps = explanation.reduce(cli.channel_reduction(FLAGS.reduce))
        stem = image_io.file_stem(path)
        x = np.asarray(pre.preprocess(model.spec, image[None]))[0]
        input_maps = (method.attribute(model, x[None], target, preprocess=False, seed=FLAGS.seed).reduce()
                      if curves else None)
        for k, name in enumerate(names):
            m = maps[0, k].astype(np.float32)
            # a name no earlier output in --out has (another run, an image of the same name elsewhere)
            base = fileio.unused_name(FLAGS.out, f"{stem}_{k}_{render.safe_name(name)}", (".npy", ".png"), taken)
            taken.add(base)
            np.save(os.path.join(FLAGS.out, base + ".npy"), m)
            record = {"image": path, "target": name, "kind": kind, "score": float(explanation.scores[0, k]),
                      "method": FLAGS.method, "map": base + ".npy", **(det_info[k] if k < len(det_info) else {})}
            if FLAGS.gt_box:
                record["gt_box"] = _box(FLAGS.gt_box)
            drawn, colours, texts = [], [], []
            if k < len(shown):
                drawn.append(shown[k][0]), colours.append((0, 255, 0)), texts.append(shown[k][1])
                record["box"] = [float(v) for v in shown[k][0]]
            if FLAGS.localize:
                found = loc.localize(image, m)
                record["derived_box"] = list(found.box) if found.box else None
                if found.note:
                    record["derived_box_note"] = found.note
                    print(f"warning: {os.path.basename(path)} / {name}: {found.note}.")
                if found.box:
                    drawn.append(found.box), colours.append((0, 200, 255)), texts.append("derived")
            metrics = {f"{mode}_auc": curve.auc
                       for mode, curve in met.curves(model, x, input_maps[0, k], target.column(k),
                                                     "deletion" in curves, "insertion" in curves).items()
                       } if curves else {}
            if "pointing" in FLAGS.metrics:
                metrics["pointing_hit"] = met.pointing_hit(m, _box(FLAGS.gt_box))
                metrics["energy_pointing"] = met.energy_pointing(m, _box(FLAGS.gt_box))
            if metrics:
                record["metrics"] = metrics
            picture = render.draw_boxes(render.overlay(image, m), drawn, colours, texts)
            render.save_png(os.path.join(FLAGS.out, base + ".png"), picture)
            record["png"] = base + ".png"
            lines.append(record)
            print(f"{os.path.basename(path)} / {name}: score {record['score']:.4g}"
                  + (f", derived box {[round(v) for v in record['derived_box']]}" if record.get("derived_box") else "")
                  + (f", {json.dumps(metrics)}" if metrics else ""))
        with open(out, "a") as f:
            f.write("".join(json.dumps(record) + "\n" for record in lines))
    return out


if __name__ == "__main__":
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
