r"""The lab report's VGG study: class models of "goose" (Simonyan et al., figure 1 of the lab report).

Three losses on one axis: -score alone (unbounded: the image grows and the result turns to chaos),
-score + mean(x^2) (the lab's "sq" penalty, which keeps pixel values small), and 1/score (flat once the
score is large, so it stops pushing); learning rates from too low through 1 to too high; snapshots after
10, 50 and 200 iterations for the iteration study.

  python -m experiments.class_model --config experiments/configs/vgg_goose.py \
      --params vgg16.safetensors --out runs/vgg_goose

15 grid points x 200 steps of VGG16 at 224x224: about 3,000 image-steps, ~35 minutes on a 2-core CPU
(~1.4 image-steps/s) and about a minute on one GPU. On the shipped shapes classifier use
``--config experiments/configs/vgg_goose.py:shapes`` (category "star"; seconds on a CPU).
Expected: with the sq penalty, lr 1 gives a recognisable class model at 200 iterations; lr 100 diverges
or saturates; -score alone drifts to large, noisy values.
"""

from ml_collections import ConfigDict

from experiments.configs import default


def get_config(arg: str = "vgg16") -> ConfigDict:
    c = default.get_config()
    c.model = "" if arg == "shapes" else arg
    c.categories = ("star",) if arg == "shapes" else ("goose",)
    c.loss = ("score", "score+sq", "inv_score")
    c.lrs = (0.01, 0.1, 1.0, 10.0, 100.0)
    c.snapshots = (10, 50, 200)
    return c
