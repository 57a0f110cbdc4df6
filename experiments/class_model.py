r"""Class-model visualisation sweeps (Simonyan et al. 2013, section 2): gradient ascent on the image.

  python -m experiments.class_model --model vgg16 --params vgg16.safetensors --categories goose,horse \
      --lrs 0.1,1,10 --steps 200 --penalty sq=1 --out runs/x
  python -m experiments.class_model --config experiments/configs/vgg_goose.py --params vgg16.safetensors \
      --out runs/goose

The loss is an objective term plus penalties (``--objective score --penalty sq=0.1,1,10`` sweeps the
penalty's weight), or explicit variants on one axis (``--loss score --loss score+sq --loss inv_score``).
Terms: score, log_prob, inv_score, activation (classifiers); biggest_box, box_loc, all_boxes, multibox
(detectors); sq, l2, tv (penalties). Term options: ``--term_options activation:layer=conv5_3_pre``.
Detector target boxes: ``--boxes whole``, ``--boxes centre_quarter`` or ``--boxes "x1,y1,x2,y2;..."`` (in
the network input's pixels), one flag per box set.

Results go to --out chunk by chunk; ``--resume`` continues a run that was stopped (Ctrl-C saves what
is finished). The run directory gets images.npy, PNGs, a labelled grid, curves, results.jsonl and
index.html. Before the first step the run states its points, chunks, compiled programs and the bytes it
will write, and refuses to start when they exceed the disk's free space (``--nopngs`` writes no PNG,
``--nocheck_space`` starts anyway); a disk that fills up stops it with the space still needed, its
finished chunks kept for ``--resume``. One process writes a run directory at a time: a second one on
the same --out is refused, naming the first one's PID and host. JAX's and absl's INFO log lines are
hidden unless --verbosity is given (--verbosity=0 shows them).
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from jaxvis.sweeps import SETTINGS

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "A study config (experiments/configs/*.py); flags given on the "
                                "command line override its fields.", lock_config=False)
flags.DEFINE_string("model", None, "Architecture expected in --params (e.g. vgg16); checked against the file.")
flags.DEFINE_string("params", None, "jaxvis params file (.safetensors).")
flags.DEFINE_list("categories", None, "Class names or indices (channel indices for the activation objective).")
flags.DEFINE_list("lrs", ["1"], "Learning rates.")
flags.DEFINE_integer("steps", 200, "Gradient steps.")
flags.DEFINE_string("objective", None, "Objective term (default: score for classifiers, multibox for detectors).")
flags.DEFINE_multi_string("penalty", [], "Penalty term and weight(s): sq=1 or sq=0.1,1,10 (a sweep axis).")
flags.DEFINE_multi_string("loss", [], "A loss variant such as score+sq or score+0.1*sq; repeat for a loss axis.")
flags.DEFINE_multi_string("term_options", [], "Static term options: activation:layer=conv5_3_pre, "
                          "activation:position=3,4, inv_score:eps=0.5, all_boxes:reduce=sum.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "momentum", "adam"], "optax optimiser.")
flags.DEFINE_float("momentum", 0.9, "Momentum for --optimizer momentum.")
flags.DEFINE_integer("jitter", 0, "Shift the image by up to this many pixels at random before each step.")
flags.DEFINE_bool("clip", False, "Keep the image within the values of a real image (black to white).")
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"], "Precision of the network's computation "
                  "(bfloat16 for GPUs and TPUs; the image and the optimiser stay float32).")
flags.DEFINE_enum("conv_backend", "auto", ["auto", "onednn", "xla"], "Convolutions: oneDNN's on CPUs where "
                  "its kernels are built (auto), or XLA's (see jaxvis.conv).")
flags.DEFINE_enum("loop", "auto", ["auto", "scan", "host"], "Steps loop: on the host on CPUs, one lax.scan on "
                  "accelerators (auto), or either.")
flags.DEFINE_list("init", ["0"], "Initialisations: 0 = zeros (the paper), s > 0 = Gaussian noise of std s.")
flags.DEFINE_list("seeds", ["0"], "Noise seeds.")
flags.DEFINE_multi_string("boxes", [], "Target box set: whole, centre_quarter, or x1,y1,x2,y2;... (input pixels).")
flags.DEFINE_list("snapshots", [], "Iterations at which to keep the image (0 is always kept).")
flags.DEFINE_integer("chunk_size", None, "Grid points per compiled chunk (default: what fits in memory).")
flags.DEFINE_enum("display", "stretch", ["stretch", "clip"], "How PNGs show the images.")
flags.DEFINE_bool("pngs", True, "Write PNGs (per point, per snapshot, curves, grids); --nopngs writes only the "
                  "arrays, results.jsonl and index.html, for grids too large to look at point by point.")
flags.DEFINE_bool("check_space", True, "Refuse to start a run whose outputs exceed the free space of --out's "
                  "disk; --nocheck_space starts it anyway.")
flags.DEFINE_string("out", None, "Run directory.")
flags.DEFINE_bool("resume", False, "Continue the run in --out (same configuration), skipping finished chunks.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, to run one sweep on several processes "
                    "through jax.distributed (each process takes its share of the chunks).")
flags.DEFINE_integer("num_processes", 1, "Number of processes in the jax.distributed run.")
flags.DEFINE_integer("process_id", 0, "This process's index, 0 .. num_processes - 1.")



def settings_from_flags() -> dict:
    """The run's settings: the config file's fields, overridden by flags given on the command line."""
    from jaxvis import sweeps

    settings = {name: FLAGS[name].value for name in SETTINGS}
    if FLAGS.config is not None:
        cfg = FLAGS.config.to_dict()
        unknown = sorted(set(cfg) - set(SETTINGS))
        if unknown:
            raise sweeps.UsageError(f"config has unknown fields {unknown}; known: {', '.join(SETTINGS)}")
        for name, value in cfg.items():
            if not FLAGS[name].present:
                settings[name] = value
    return settings


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from experiments import _launch
    from jaxvis.fileio import OutputError
    from jaxvis.sweeps import Cluster, UsageError, run

    _launch.quiet_logs()
    try:
        settings = settings_from_flags()
        cluster = Cluster(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        run(settings, resume=FLAGS.resume, progress=FLAGS.progress, cluster=cluster, check_space=FLAGS.check_space)
    except (UsageError, OutputError) as e:
        sys.exit(f"error: {e}")
    except ValueError as e:  # the library's errors about settings, files and run directories
        from jaxvis.engine import SweepError
        from jaxvis.labels import CategoryError
        from jaxvis.objectives import ObjectiveError
        from jaxvis.params import ParamsFileError
        from jaxvis.rundir import RunDirError

        if isinstance(e, (SweepError, CategoryError, ObjectiveError, ParamsFileError, RunDirError)):
            sys.exit(f"error: {e}")
        raise


if __name__ == "__main__":
    app.run(main)
