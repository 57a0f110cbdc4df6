r"""The lab report's SSD study: class models of "horse" for a detector.

Objectives on one axis: (a) the class score of the biggest default box plus a localisation term pulling
its box onto the target box; (b) the class score averaged over all default boxes; (c) the SSD training
criterion (MultiBox loss) with the target box labelled "horse". Targets: the whole image, and a centred
box of a quarter of the area (half the width and height). (b) ignores the target, so its two entries
coincide.

  python -m experiments.class_model --config experiments/configs/ssd_horse.py \
      --params ssd300_voc.safetensors --out runs/ssd_horse          # amdegroot VOC model ("horse")
  python -m experiments.class_model --config experiments/configs/ssd_horse.py:coco \
      --params ssd300.safetensors --out runs/ssd_horse_coco         # torchvision COCO model

6 grid points x 200 steps of SSD300: 1,200 image-steps, ~25 minutes on a 2-core CPU and under a minute
on one GPU. On the shipped shapes detector use ``:shapes`` (category "circle"; seconds on a CPU).
Expected (lab report): (a) gives poor images that concentrate in one corner; (b) many small horse-like
structures; (c) the clearest horse, similar for the whole-image and the quarter-size target.
"""

from ml_collections import ConfigDict

from experiments.configs import default


def get_config(arg: str = "voc") -> ConfigDict:
    c = default.get_config()
    c.model = {"voc": "ssd300_vgg16_voc", "coco": "ssd300_vgg16"}.get(arg, "")
    c.categories = ("circle",) if arg == "shapes" else ("horse",)
    c.loss = ("biggest_box+box_loc", "all_boxes", "multibox")
    c.boxes = ("whole", "centre_quarter")
    c.snapshots = (10, 50, 200)
    return c
