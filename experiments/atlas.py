r"""The atlas of a layer: which of its channels carry each class (or each class of detections), what each of
them responds to, and whether removing the top ones matters.

  python -m experiments.atlas --params jaxvis/assets/shapes_vgg.safetensors --layer conv5_2 --dataset shapes \
      --out runs/atlas_vgg
  python -m experiments.atlas --params ssd300.safetensors --layer conv5_3 \
      --dataset coco:instances_val2017.json:val2017 --images 500 --out runs/atlas_ssd
  (--dataset shapes | DIR (a folder of images) | coco:JSON:DIR | voc:DIR)

The channels of --layer are ranked per class by --rank_by over the dataset's targets (a classifier's images
each explain their own class, a detector's true-positive detections their own score; without labels, the
class the classifier gives, or the detector's own detections): ``ablation``, the mean drop of the target's
probability when the channel alone is zeroed, or ``contribution``, the mean sum over positions of A dS/dA of
the logit (``jaxvis.features``). The ranking is checked on held-out images (shapes: --held_out fresh scenes;
a dataset read from files: its last --held_out images, at most a third of them, are left out of the ranking):
each class's top --k channels zeroed together against --random_sets random sets of as many. With the
objects' masks (shapes, COCO polygons) every channel is dissected (Net Dissection: its top --top share of
activations against each class's masks, labelled when the IoU reaches --min_iou). Every channel gets its
top --patches dataset regions and, with --steps > 0, its feature visualisation for each of --seeds, all
channels and seeds as one compiled sweep.

It writes ``atlas.json`` (per class its channels in order of importance under ``classes``, with the numbers
behind them), ``pictures.npy`` (C, S, H, W, 3) and ``patches.npy`` (C, k, P, P, 3), and the page
``index.html``; atlas.json is written last, so a folder without it holds no atlas.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Architecture expected in --params (checked against the file).")
flags.DEFINE_string("params", None, "jaxvis params file (the shipped models: jaxvis/assets/shapes_vgg.safetensors, "
                    "shapes_ssd.safetensors).")
flags.DEFINE_string("layer", None, "The activation whose channels are mapped (e.g. conv5_2); a convolutional one.")
flags.DEFINE_string("dataset", "shapes", "shapes | DIR (a folder of images) | coco:JSON:DIR | voc:DIR.")
flags.DEFINE_integer("images", 200, "shapes: scenes generated for the ranking; files: at most this many read.")
flags.DEFINE_integer("held_out", 200, "shapes: fresh scenes for the faithfulness check; files: the last images "
                     "left out of the ranking (at most a third); 0: no check.")
flags.DEFINE_integer("seed", 0, "shapes: the scenes' seed (the held-out scenes use seed + 1).")
flags.DEFINE_enum("rank_by", "ablation", ["ablation", "contribution"], "What orders each class's channels.")
flags.DEFINE_integer("k", 8, "Channels zeroed together in the faithfulness check.")
flags.DEFINE_integer("random_sets", 20, "Random sets of --k channels the top ones are compared with.")
flags.DEFINE_float("top", 0.005, "Dissection: the share of each channel's activations over the dataset kept.")
flags.DEFINE_float("min_iou", 0.04, "Dissection: the IoU a channel's best class needs to label it.")
flags.DEFINE_float("min_score", 0.3, "Detectors: the score a detection needs to be a target.")
flags.DEFINE_integer("patches", 6, "Top dataset regions shown per channel.")
flags.DEFINE_list("seeds", ["0", "1"], "Feature visualisations per channel, one per seed.")
flags.DEFINE_integer("steps", 256, "Feature visualisation steps (0: none).")
flags.DEFINE_string("out", None, "Output folder.")


class UsageError(ValueError):
    pass


def _check_flags() -> list[int]:
    if not FLAGS.params:
        raise UsageError("--params is required: a jaxvis params file (the shipped classifier: "
                         "jaxvis/assets/shapes_vgg.safetensors)")
    if not FLAGS.layer:
        raise UsageError("--layer is required: the activation whose channels are mapped, e.g. conv5_2")
    if not FLAGS.out:
        raise UsageError("--out is required: the folder the atlas is written to")
    for name, low in (("images", 1), ("held_out", 0), ("k", 1), ("random_sets", 1), ("patches", 1), ("steps", 0)):
        if getattr(FLAGS, name) < low:
            raise UsageError(f"--{name} is at least {low}; got {getattr(FLAGS, name)}")
    for name in ("top", "min_score"):
        if not 0.0 < getattr(FLAGS, name) < 1.0:
            raise UsageError(f"--{name} is a share in (0, 1); got {getattr(FLAGS, name)}")
    if not 0.0 <= FLAGS.min_iou <= 1.0:
        raise UsageError(f"--min_iou is an IoU in [0, 1]; got {FLAGS.min_iou}")
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise UsageError(f"--seeds are whole numbers, e.g. 0,1; got {','.join(FLAGS.seeds)}") from None
    if not seeds:
        raise UsageError("--seeds needs at least one seed")
    from jaxvis.report import ATLAS_FILE

    for name in (ATLAS_FILE, "axes.json", "results.jsonl"):
        if os.path.exists(os.path.join(FLAGS.out, name)):
            raise UsageError(f"{FLAGS.out} already holds {name} (an earlier run); choose another --out or remove it")
    return seeds


def _datasets(model):
    """(the data the channels are ranked on, the held-out data or None)."""
    from jaxvis import cli

    if FLAGS.dataset == "shapes":
        data = cli.dataset("shapes", model, n=FLAGS.images, seed=FLAGS.seed)
        held = cli.dataset("shapes", model, n=FLAGS.held_out, seed=FLAGS.seed + 1) if FLAGS.held_out else None
        return data, held
    data = cli.dataset(FLAGS.dataset, model, limit=FLAGS.images)
    n_held = min(FLAGS.held_out, len(data) // 3)
    if n_held == 0:
        if FLAGS.held_out:
            print(f"note: {len(data)} image(s) are too few to hold a third out; the ranking is not checked")
        return data, None
    return data[:len(data) - n_held], data[len(data) - n_held:]


def run() -> str:
    import jaxvis
    from jaxvis import features as ft
    from jaxvis import fileio, report

    seeds = _check_flags()
    model = jaxvis.load(FLAGS.params, arch=FLAGS.model or None)
    layers = jaxvis.saliency.activation_shapes(model)
    if FLAGS.layer not in layers or len(layers[FLAGS.layer]) != 4:
        conv = [name for name, shape in layers.items() if len(shape) == 4]
        raise UsageError(f"{model.spec.arch} has no convolutional activation {FLAGS.layer!r}; it has {', '.join(conv)}")
    data, held = _datasets(model)
    for line in data.skipped:
        print(f"skipped: {line}")
    print(f"{len(data)} image(s) for the ranking" + (f", {len(held)} held out" if held is not None else ""))
    atlas = ft.build_atlas(model, data, FLAGS.layer, held_out=held, rank_by=FLAGS.rank_by, k=FLAGS.k,
                           random_sets=FLAGS.random_sets, top=FLAGS.top, min_iou=FLAGS.min_iou, patches=FLAGS.patches,
                           seeds=seeds, steps=FLAGS.steps, min_score=FLAGS.min_score,
                           progress=lambda text: print(f"... {text}", flush=True))
    atlas.doc.update(params=os.path.abspath(FLAGS.params), dataset=FLAGS.dataset)
    os.makedirs(FLAGS.out, exist_ok=True)
    with fileio.DirLock(FLAGS.out):  # one writer per --out
        page = report.write_atlas(FLAGS.out, atlas)
    for name, r in (atlas.doc.get("faithfulness") or {}).get("classes", {}).items():
        if r.get("count"):
            print(f"{name}: top {FLAGS.k} zeroed lower the score by {r['top']:.4g}, random sets by "
                  f"{r['median_random']:.4g} (median): {r['ratio']:.3g}x over {r['count']} targets")
    dis = atlas.doc.get("dissection")
    if dis:
        print(f"dissection: {dis['labelled']} of {atlas.doc['channels']} channels labelled")
    print(f"Open {page}")
    return page


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from experiments import _launch

    _launch.start(FLAGS.out)
    from jaxvis.features import FeatureError
    from jaxvis.fileio import OutputError
    from jaxvis.params import ParamsFileError

    from jaxvis.cli import TextError
    from jaxvis.datasets import DatasetError
    from jaxvis.images import ImageError

    errors = (UsageError, FeatureError, OutputError, ParamsFileError, TextError, DatasetError, ImageError)
    try:
        run()
    except errors as e:
        sys.exit(f"error: {e}")
    except ImportError as e:  # a reader's optional package (pycocotools for COCO)
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        _launch.exit_interrupted(f"interrupted: nothing of the atlas was kept; {FLAGS.out} has no atlas.json")


if __name__ == "__main__":
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
