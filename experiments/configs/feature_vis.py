r"""Feature-visualisation recipes: Lucid's parts (an image parameterisation, random transforms, Adam) in
the vmapped engine, and the lab's plain loss to compare them with. Each recipe is one short function
below; what each gives, measured, and the variants tried on the way are in docs/feature_vis_recipes.md.

  python -m experiments.class_model --config experiments/configs/feature_vis.py:shapes --out runs/fv_shapes
  python -m experiments.class_model --config experiments/configs/feature_vis.py:shapes_ssd --out runs/fv_ssd
  python -m experiments.evaluate --run shapes=runs/fv_shapes --out runs/fv_shapes_eval

- ``shapes``: the shipped shapes classifier, every class x 4 seeds; a decorrelated 1/f^1.5 Fourier image
  through a sigmoid, two views a step each jittered, zoomed and turned by any angle (wrapped), 768 Adam
  steps (about 1 min on 2 CPU cores; the judge reads 23 of 24).
- ``shapes_ssd``: the shipped robust shapes detector, MultiBox + 0.5 x opacity at a 40 px box and the
  centred quarter, a one-colour silhouette that starts opaque in the box, one plain and one transformed
  view, 1536 steps (about 6 min).
- ``shapes_ssd_free``, ``shapes_ssd_standard``: the earlier detector recipes; ``shapes_ssd_lab``: the lab's
  three detector objectives with ``shapes_ssd``'s image and transforms.
- ``lab``: -score + mean(x^2) on the pixels, SGD at lr 1, 200 steps. ``maco``: MACO (Fel et al. 2023).
- ``lucid``, ``ssd300``: the recipes for torchvision's VGG16 and SSD300 (give --params and --categories).
"""

from ml_collections import ConfigDict

from experiments.configs import default
from jaxvis import assets

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
# a centred box of the size of the shapes the detector was trained on (40 px of its 128 px input; the
# shapes' boxes measure 28 to 54 px); the lab's centred quarter-size box is "centre_quarter"
TRAINED_BOX = "44,44,84,84"
# every angle, the image repeated outside itself rather than grey
ROBUST = "jitter(8),scale(0.65,1.35,wrap),rotate(180,wrap),jitter(4)"
LUCID = "pad(12),jitter(8),scale(0.9,1.1),rotate(10),jitter(4)"


def _base() -> ConfigDict:
    c = default.get_config()
    c.optimizer, c.lrs, c.init, c.loss = "adam", (0.05,), (0.01,), ("score",)
    return c


def _classifier(c: ConfigDict) -> ConfigDict:
    c.params, c.categories, c.seeds = assets.path("classifier"), SHAPES, (0, 1, 2, 3)
    return c


def shapes(c):
    c = _classifier(c)
    c.parameterization, c.transforms, c.views = "fourier(1.5)+decorrelated+sigmoid", ROBUST, 2
    c.steps, c.snapshots = 768, (64, 768)
    return c


def shapes_ssd(c):
    c.params, c.categories, c.seeds = assets.path("detector_robust"), SHAPES, (0, 1)
    c.loss, c.boxes = ("multibox+0.5*opacity",), (TRAINED_BOX, "centre_quarter")
    c.parameterization = "fourier(1.5)+decorrelated+sigmoid+alpha+solid+boxstart(0.9)"
    c.transforms = "jitter(4),scale(0.65,1.35,wrap),rotate(180,wrap),jitter(2)"
    c.views, c.plain_views, c.steps, c.snapshots = 2, 1, 1536, (64, 1536)
    return c


def shapes_ssd_free(c):
    c = shapes_ssd(c)
    c.parameterization, c.plain_views = "fourier(1.5)+decorrelated+sigmoid+alpha", 0
    c.steps, c.snapshots = 768, (64, 768)
    return c


def shapes_ssd_standard(c):
    c = shapes_ssd(c)
    c.params, c.loss, c.plain_views = assets.path("detector"), ("multibox",), 0
    c.parameterization = "fourier(1.5)+decorrelated+sigmoid"
    c.steps, c.snapshots = 512, (64, 512)
    return c


def shapes_ssd_lab(c):
    c = shapes_ssd(c)
    c.seeds = (0,)
    c.loss = ("biggest_box+box_loc+0.5*opacity", "all_boxes+0.5*opacity", "multibox+0.5*opacity")
    return c


def lab(c):
    c = _classifier(c)
    c.optimizer, c.lrs, c.steps, c.loss, c.snapshots = "sgd", (1.0,), 200, ("score+sq",), (10, 50, 200)
    return c


def maco(c):
    c = _classifier(c)
    c.steps, c.parameterization, c.transforms = 256, "maco+clip", "crop(1.0,0.5),noise(0.02)"
    return c


def lucid(c):
    c.model, c.steps, c.seeds = "vgg16", 512, (0, 1)
    c.parameterization, c.transforms = "fourier+decorrelated+sigmoid", LUCID
    return c


def ssd300(c):
    c.model, c.seeds, c.steps, c.snapshots = "ssd300_vgg16", (0, 1), 512, (64, 512)
    c.loss, c.boxes = ("multibox+0.5*opacity",), ("centre_quarter",)
    c.parameterization, c.transforms, c.views = "fourier+decorrelated+sigmoid+alpha", LUCID, 2
    return c


RECIPES = {f.__name__: f for f in (shapes, shapes_ssd, shapes_ssd_free, shapes_ssd_lab, shapes_ssd_standard, lab,
                                   maco, lucid, ssd300)}


def get_config(arg: str = "shapes") -> ConfigDict:
    if arg not in RECIPES:
        raise ValueError(f"feature_vis recipes: {', '.join(RECIPES)}; got {arg!r}.")
    return RECIPES[arg](_base())
