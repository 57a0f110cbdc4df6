r"""Class-model visualisation sweeps (Simonyan et al. 2013, section 2): gradient ascent on the image.

  python -m experiments.class_model --model vgg16 --params vgg16.safetensors --categories goose,sorrel \
      --lrs 0.1,1,10 --steps 200 --penalty sq=1 --out runs/x
  python -m experiments.class_model --config experiments/configs/vgg_goose.py --params vgg16.safetensors \
      --out runs/goose

Every setting (jaxvis/settings.py) is a field of the config, experiments/configs/default.py unless
--config names a study, and a flag of its own: ``--steps 50`` and ``--config.steps=50`` do the same;
``--helpfull`` lists them with their help. A study config starts from default.py and changes only
what differs.

The loss is an objective term plus penalties (``--objective score --penalty sq=0.1,1,10`` sweeps the
penalty's weight), or explicit variants on one axis (``--loss score --loss score+sq --loss inv_score``).
Terms: score, log_prob, inv_score, activation (classifiers); biggest_box, box_loc, all_boxes, multibox
(detectors); sq, l2, tv (penalties). Term options: ``--term_options activation:layer=conv5_3_pre``.
Detector target boxes: ``--boxes whole``, ``--boxes centre_quarter`` or ``--boxes "x1,y1,x2,y2;..."`` (in
the network input's pixels), one flag per box set.

Results go to --out chunk by chunk; ``--resume`` continues a run that was stopped (Ctrl-C saves what is
finished). Each chunk file carries its run's digest and range and is checked before a run continues: one
that is unreadable or not this run's is set aside (``chunks/NNNNN.npz.rejected``) and computed again,
with a warning on the terminal and in ``warnings.jsonl``, as are points that diverged. The run directory
gets images.npy, PNGs, a labelled grid, curves, results.jsonl and index.html. Before the first step the
run states its points, chunks, compiled programs and the bytes it will write, and refuses to start when
they exceed the disk's free space (``--nopngs`` writes no PNG, ``--nocheck_space`` starts anyway); a
disk that fills up stops it with the space still needed, its finished chunks kept for ``--resume``. One
process writes a run directory at a time: a second one on the same --out is refused, naming the first
one's PID and host. JAX's and absl's INFO log lines are hidden unless --verbosity is given (--verbosity=0
shows them).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from jaxvis import settings as settings_lib

FLAGS = flags.FLAGS
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py")

if __name__ == "__main__":  # before the config flag is defined: it reads --config.FIELD overrides then
    from experiments import _launch

    _launch.check_config_args(sys.argv, [f.name for f in settings_lib.fields()], DEFAULT_CONFIG)

config_flags.DEFINE_config_file(
    "config", DEFAULT_CONFIG,
    "A config file (experiments/configs/*.py, with :arg for a variant): its fields are the settings listed "
    "below, each also a flag of its own; --config.FIELD=value overrides one (lists as '(a, b)'). A setting "
    "given as a flag overrides the config. Default: experiments/configs/default.py, every setting at its "
    "default.", lock_config=True)


def _define_setting_flags() -> None:
    """One flag per setting of jaxvis.settings.SweepSettings, with its help; the default shown is the
    setting's, and a flag overrides the config only when it is given."""
    for f in settings_lib.fields():
        kind, choices, text = f.metadata["kind"], f.metadata["choices"], f.metadata["help"]
        if choices:
            flags.DEFINE_enum(f.name, f.default, list(choices), text)
        elif kind == "str":
            flags.DEFINE_string(f.name, f.default, text)
        elif kind == "int":
            flags.DEFINE_integer(f.name, f.default, text)
        elif kind == "float":
            flags.DEFINE_float(f.name, f.default, text)
        elif kind == "bool":
            flags.DEFINE_bool(f.name, f.default, text)
        elif kind == "multi":
            flags.DEFINE_multi_string(f.name, list(f.default), text)
        else:  # floats, ints, strs: comma-separated
            flags.DEFINE_list(f.name, [str(v) for v in f.default], text)


_define_setting_flags()
# Process flags: where and how this process runs, not what the run is.
flags.DEFINE_string("out", None, "Run directory.")
flags.DEFINE_bool("resume", False, "Continue the run in --out (same configuration), skipping finished chunks.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_bool("check_space", True, "Refuse to start a run whose outputs exceed the free space of --out's "
                  "disk; --nocheck_space starts it anyway.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, to run one sweep on several processes "
                    "through jax.distributed (each process takes its share of the chunks).")
flags.DEFINE_integer("num_processes", 1, "Number of processes in the jax.distributed run.")
flags.DEFINE_integer("process_id", 0, "This process's index, 0 .. num_processes - 1.")
PROCESS_FLAGS = ("out", "resume", "progress", "check_space", "coordinator_address", "num_processes", "process_id")


def settings_from_flags() -> settings_lib.SweepSettings:
    """The run's settings: the config's fields, overridden by the setting flags given on the command line."""
    from jaxvis import sweeps

    source = config_flags.get_config_filename(FLAGS["config"])
    try:
        config = dict(FLAGS.config)
    except OSError as e:  # ml_collections defers a config file it could not load to the first use
        reason = str(e).strip().splitlines()[-1].strip()
        raise sweeps.UsageError(f"--config {source} could not be loaded ({reason}); give a config file such as "
                                f"{os.path.relpath(DEFAULT_CONFIG)}.") from None
    try:
        settings = settings_lib.SweepSettings.from_mapping(config)
    except settings_lib.SettingsError as e:
        raise sweeps.UsageError(f"--config {source}: {e}") from None
    try:
        given = {f.name: FLAGS[f.name].value for f in settings_lib.fields() if FLAGS[f.name].present}
        return settings.replace(**given)
    except settings_lib.SettingsError as e:
        raise sweeps.UsageError(str(e)) from None


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
        run(settings, FLAGS.out, resume=FLAGS.resume, progress=_launch.progress_bar() if FLAGS.progress else None,
            cluster=cluster,
            check_space=FLAGS.check_space)
    except (UsageError, OutputError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:  # before the first chunk (a run under way says what it kept, sweeps.run)
        _launch.exit_interrupted("interrupted before the sweep started; run the command again (with --resume if "
                                 "--out holds finished chunks).")
    except SystemExit as e:
        if e.code == 130:  # interrupted, and sweeps.run said what it kept
            _launch.exit_interrupted()
        raise
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
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
