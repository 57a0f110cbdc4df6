r"""Trains the shapes models that ship in jaxvis/assets: classifier, judge and detector.

  python -m experiments.train_shapes --which classifier,judge,detector --out jaxvis/assets

Each model is trained with optax on batches drawn on the fly from jaxvis.data.shapes, measured on a
held-out generated set (top-1 accuracy for the classifiers, COCO mAP@0.5 by pycocotools for the
detector) and written as a params file whose metadata carries the spec, the training run and the
measured figures. On a 2-core CPU each model takes at most about ten minutes (``--time_budget`` caps it).

The shipped detector (source maps of 16, 8, 3 and 1 cells; half its scenes hold one larger shape
anywhere) was fine-tuned for 800 steps at lr 1e-3 from the detector that shipped before it (maps of 16, 8,
4 and 2 cells: the same parameter shapes, trained from scratch with the defaults on quadrant scenes only;
``git show 4b24c19:jaxvis/assets/shapes_ssd.safetensors``), whose sha256 its metadata records:

  python -m experiments.train_shapes --which detector --detector_init PREVIOUS.safetensors \
      --detector_steps 800 --detector_lr 1e-3 --out jaxvis/assets

(About 8 minutes here.) Trained from scratch on the current layout, the MultiBox loss sat at about 5.7 for
the 500 steps tried.

The robust detector (``shapes_ssd_robust.safetensors``, ``assets.path("detector_robust")``) is the shipped
detector fine-tuned on adversarial scenes: two stages of 800 steps at lr 1e-3, the first within an
L-infinity budget of 2/255, the second of 4/255 (straight to 4/255, or 8/255, the loss sat at the level of
an untrained detector). Its input gradients follow the shapes' outlines more than the standard detector's,
so its class models draw the shapes (experiments/configs/feature_vis.py:shapes_ssd); its mAP is as high:

  python -m experiments.train_shapes --which detector_robust --out jaxvis/assets   # about 9 minutes

Three variants measured for the detector's class models (experiments/configs/feature_vis.py) and not shipped:
the robust detector fine-tuned further at 6/255 then 8/255, at 4/255 with decoys in half its scenes
(shape-shaped holes in frames of clutter, which are no objects), and for two more stages at 4/255 with 30 % of
its scenes over one flat colour and the pixel noise over the whole scene (mAP@0.5 0.989, over flat
backgrounds 0.9999; the two stages run as two commands, each from the last one's file, give the same weights):

  python -m experiments.train_shapes --which detector_robust --robust_init jaxvis/assets/shapes_ssd_robust.safetensors \
      --robust_budgets 0.02353,0.03137 --out runs/robust8                               # about 19 minutes
  python -m experiments.train_shapes --which detector_robust --robust_init jaxvis/assets/shapes_ssd_robust.safetensors \
      --robust_budgets 0.01569 --decoy_share 0.5 --out runs/decoys
  python -m experiments.train_shapes --which detector_robust --robust_init jaxvis/assets/shapes_ssd_robust.safetensors \
      --robust_budgets 0.01569,0.01569 --flat_share 0.3 --even_noise --time_budget 5000 --out runs/flat  # 55 min
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("which", ["classifier", "judge", "detector"], "Models to train.")
flags.DEFINE_string("out", "jaxvis/assets", "Folder for the params files.")
flags.DEFINE_integer("classifier_steps", 1600, "Training steps of the classifier.")
flags.DEFINE_integer("judge_steps", 1500, "Training steps of the judge.")
flags.DEFINE_integer("detector_steps", 700, "Training steps of the detector.")
flags.DEFINE_string("detector_init", None, "Params file of a detector with the same parameter shapes to start "
                    "from (fine-tuning) instead of He-normal weights.")
flags.DEFINE_float("detector_lr", 2e-3, "Peak learning rate of the detector.")
flags.DEFINE_string("robust_init", None, "Params file of the detector that the robust detector is fine-tuned "
                    "from (default: the detector in --out).")
flags.DEFINE_list("robust_budgets", ["0.00784", "0.01569"], "L-infinity budgets ([0, 1] pixel units) of the robust "
                  "detector's fine-tuning stages on adversarial scenes (jaxvis.train.adversarial_images), one stage "
                  "each, in order; the default is 2/255 then 4/255.")
flags.DEFINE_integer("robust_steps", 800, "Training steps of each stage of the robust detector.")
flags.DEFINE_float("robust_lr", 1e-3, "Peak learning rate of each stage of the robust detector.")
flags.DEFINE_float("detector_free_share", None, "Share of the detector's training scenes with one shape "
                   "anywhere (default: jaxvis.train.DETECTOR_FREE_SHARE).")
flags.DEFINE_float("decoy_share", 0.0, "Share of the robust detector's training scenes whose background holds a "
                   "decoy: a shape-shaped hole in a frame of clutter, which is no object (jaxvis.data.shapes).")
flags.DEFINE_float("flat_share", 0.0, "Share of the detectors' training scenes over one flat colour instead of a "
                   "patterned background (jaxvis.data.shapes).")
flags.DEFINE_bool("even_noise", False, "Lay the detectors' training scenes' pixel noise over the whole scene, "
                  "shapes included, at a level drawn per scene, instead of over the background only "
                  "(jaxvis.data.shapes).")
flags.DEFINE_float("time_budget", 570.0, "Seconds of training per model after which it stops (checked every "
                   "10 steps), so that each model takes at most about ten minutes here.")
flags.DEFINE_integer("eval_images", 2000, "Held-out images for classifier accuracy.")
flags.DEFINE_integer("eval_scenes", 500, "Held-out scenes for detector mAP.")

FILES = {"classifier": "shapes_vgg.safetensors", "judge": "shapes_judge.safetensors", "detector": "shapes_ssd.safetensors",
         "detector_robust": "shapes_ssd_robust.safetensors"}
SEEDS = {"classifier": 0, "judge": 17, "detector": 3, "detector_robust": 3}


def _detector_start(path: str, spec, flag: str):
    """The variables of a shapes detector's params file, checked against the shapes detector's shapes."""
    from jaxvis import params as params_io
    from jaxvis import train

    if not os.path.exists(path):
        raise app.UsageError(f"{flag}: no params file {path!r}; give a shapes detector's file (or train one with "
                             "--which detector first).")
    start = params_io.load(path)[0]
    if jax.tree.map(np.shape, start) != jax.tree.map(np.shape, train.init_variables(spec, 0)):
        raise app.UsageError(f"{flag} {path} holds other parameter shapes than the shapes detector's "
                             "(jaxvis.train.detector_spec); give a shapes detector.")
    return start


def _detector_metrics(model, share: float) -> dict:
    """mAP on held-out quadrant scenes (map50, map), on scenes with the training share of free shapes, and on
    quadrant scenes over flat colours with the pixel noise over the whole scene (its level drawn per scene)."""
    from jaxvis import train

    free = train.detection_map(model, n=FLAGS.eval_scenes, free_share=share)
    flat = train.detection_map(model, n=FLAGS.eval_scenes, flat_share=1.0, even_noise=True)
    return {**train.detection_map(model, n=FLAGS.eval_scenes), "map50_free": free["map50"], "map_free": free["map"],
            "map50_flat": flat["map50"], "map_flat": flat["map"], "free_share": share, "eval_seed": train.EVAL_SEED,
            "eval_scenes": FLAGS.eval_scenes}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from jaxvis import fileio
    from jaxvis import params as params_io
    from jaxvis import train

    unknown = sorted(set(FLAGS.which) - set(FILES))
    if unknown:
        raise app.UsageError(f"--which takes {', '.join(FILES)}; got {unknown}")
    os.makedirs(FLAGS.out, exist_ok=True)
    for which in FLAGS.which:
        seed = SEEDS[which]
        share = train.DETECTOR_FREE_SHARE if FLAGS.detector_free_share is None else FLAGS.detector_free_share
        if which == "detector":
            spec = train.detector_spec()
            init, extra = None, {"lr": FLAGS.detector_lr, "free_share": share}
            if FLAGS.flat_share or FLAGS.even_noise:
                extra.update(flat_share=FLAGS.flat_share, even_noise=FLAGS.even_noise)
            if FLAGS.detector_init:
                extra["init_sha256"] = fileio.sha256(FLAGS.detector_init)
                init = _detector_start(FLAGS.detector_init, spec, "--detector_init")
            model, history = train.train_detector(spec, seed=seed, steps=FLAGS.detector_steps, lr=FLAGS.detector_lr,
                                                  time_budget=FLAGS.time_budget, free_share=share, init=init,
                                                  flat_share=FLAGS.flat_share, even_noise=FLAGS.even_noise)
            metrics = _detector_metrics(model, share)
        elif which == "detector_robust":
            spec = train.detector_spec()
            start_file = FLAGS.robust_init or os.path.join(FLAGS.out, FILES["detector"])
            try:
                budgets = [float(b) for b in FLAGS.robust_budgets]
            except ValueError:
                raise app.UsageError(f"--robust_budgets takes numbers, e.g. 0.00784,0.01569; got "
                                     f"{FLAGS.robust_budgets}")
            if not budgets or any(not 0 < b < 1 for b in budgets):
                raise app.UsageError(f"--robust_budgets takes one or more budgets in (0, 1); got {budgets}")
            params = _detector_start(start_file, spec, "--robust_init")
            seconds = 0.0
            for budget in budgets:  # each stage starts from the last one's weights
                model, history = train.train_detector(spec, seed=seed, steps=FLAGS.robust_steps, lr=FLAGS.robust_lr,
                                                      time_budget=FLAGS.time_budget, free_share=share, init=params,
                                                      adversarial=budget, decoy_share=FLAGS.decoy_share,
                                                      flat_share=FLAGS.flat_share, even_noise=FLAGS.even_noise)
                params, seconds = model.params, seconds + history.seconds
            history = dataclasses.replace(history, seconds=seconds)
            extra = {"lr": FLAGS.robust_lr, "free_share": share, "init_sha256": fileio.sha256(start_file),
                     "adversarial_linf": budgets, "steps_per_stage": FLAGS.robust_steps,
                     "decoy_share": FLAGS.decoy_share, "flat_share": FLAGS.flat_share,
                     "even_noise": FLAGS.even_noise}
            metrics = _detector_metrics(model, share)
        else:
            spec = train.classifier_spec() if which == "classifier" else train.judge_spec()
            steps = FLAGS.classifier_steps if which == "classifier" else FLAGS.judge_steps
            model, history = train.train_classifier(spec, seed=seed, steps=steps, time_budget=FLAGS.time_budget)
            metrics = {"top1": train.classifier_accuracy(model, n=FLAGS.eval_images), "eval_seed": train.EVAL_SEED,
                       "eval_images": FLAGS.eval_images}
            extra = None
        path = os.path.join(FLAGS.out, FILES[which])
        params_io.save(path, model.params, spec, extra_metadata=train.training_metadata(history, metrics, seed, extra))
        print(f"{which}: {json.dumps(metrics)} in {history.seconds:.0f} s -> {path}")


if __name__ == "__main__":
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
