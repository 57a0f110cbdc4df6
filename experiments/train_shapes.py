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
"""

from __future__ import annotations

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
flags.DEFINE_float("detector_free_share", None, "Share of the detector's training scenes with one shape "
                   "anywhere (default: jaxvis.train.DETECTOR_FREE_SHARE).")
flags.DEFINE_float("time_budget", 570.0, "Seconds of training per model after which it stops (checked every "
                   "10 steps), so that each model takes at most about ten minutes here.")
flags.DEFINE_integer("eval_images", 2000, "Held-out images for classifier accuracy.")
flags.DEFINE_integer("eval_scenes", 500, "Held-out scenes for detector mAP.")

FILES = {"classifier": "shapes_vgg.safetensors", "judge": "shapes_judge.safetensors", "detector": "shapes_ssd.safetensors"}
SEEDS = {"classifier": 0, "judge": 17, "detector": 3}


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
        if which == "detector":
            spec = train.detector_spec()
            share = train.DETECTOR_FREE_SHARE if FLAGS.detector_free_share is None else FLAGS.detector_free_share
            init, extra = None, {"lr": FLAGS.detector_lr, "free_share": share}
            if FLAGS.detector_init:
                extra["init_sha256"] = fileio.sha256(FLAGS.detector_init)
                start = params_io.load(FLAGS.detector_init)[0]
                want = train.init_variables(spec, 0)
                if jax.tree.map(np.shape, start) != jax.tree.map(np.shape, want):
                    raise app.UsageError(f"--detector_init {FLAGS.detector_init} holds other parameter shapes than "
                                         "the shapes detector's (jaxvis.train.detector_spec); give a shapes detector.")
                init = start
            model, history = train.train_detector(spec, seed=seed, steps=FLAGS.detector_steps, lr=FLAGS.detector_lr,
                                                  time_budget=FLAGS.time_budget, free_share=share, init=init)
            # map50/map on quadrant scenes; *_free on scenes with the training share of free shapes
            free = train.detection_map(model, n=FLAGS.eval_scenes, free_share=share)
            metrics = {**train.detection_map(model, n=FLAGS.eval_scenes), "map50_free": free["map50"],
                       "map_free": free["map"], "free_share": share, "eval_seed": train.EVAL_SEED,
                       "eval_scenes": FLAGS.eval_scenes}
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
    app.run(main)
