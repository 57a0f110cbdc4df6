r"""Image statistics for the decorrelated and MACO parameterisations (jaxvis.parameterizations): the
square root of the images' 3x3 colour covariance and their mean amplitude spectrum at given sizes.

  python -m experiments.image_statistics --shapes 2048 --sizes 64,128 --out jaxvis/assets/shapes_image_stats.npz
  python -m experiments.image_statistics --folder photos/ --sizes 224 --out imagenet_stats.npz

--shapes draws images from the shapes generator (the detection scenes at 128 pixels, the classification images
at any other size); --folder reads every PNG or JPEG in a
folder (resized to each size). The file holds ``colour_sqrt`` (Lucid's U diag(sqrt(s)) of the
covariance's SVD) and ``spectrum_HxW``: the mean over images of |rfft2(image - 0.5)| per channel,
images in [0, 1] RGB. The shipped shapes file was written by the first command (seconds on a CPU).
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

flags.DEFINE_integer("shapes", 0, "Number of images to draw from the shapes generator.")
flags.DEFINE_string("folder", None, "A folder of PNG/JPEG images.")
flags.DEFINE_list("sizes", ["64"], "Square sizes (pixels) of the spectra.")
flags.DEFINE_integer("seed", 2023, "Seed of the shapes generator.")
flags.DEFINE_string("out", None, "Output .npz file.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.out or bool(FLAGS.shapes) == bool(FLAGS.folder):
        raise app.UsageError("give --out and one of --shapes N or --folder DIR.")
    from jaxvis.data import shapes
    from jaxvis.images import ImageError, read_folder
    from jaxvis.parameterizations import image_statistics

    sizes = [int(s) for s in FLAGS.sizes]
    try:
        if FLAGS.shapes:
            images = shapes.statistics_images(FLAGS.shapes, sizes, FLAGS.seed)
        else:
            images = read_folder(FLAGS.folder, sizes)
    except ImageError as e:
        raise app.UsageError(str(e)) from None
    stats = image_statistics(images)
    np.savez(FLAGS.out, **stats)
    print(f"wrote {FLAGS.out}: " + ", ".join(f"{k} {v.shape}" for k, v in stats.items()))


if __name__ == "__main__":
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
