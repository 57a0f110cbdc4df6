r"""Converts a torchvision checkpoint to a jaxvis params file (safetensors with the model spec).

  python -m converters.torchvision --arch vgg16 --checkpoint vgg16-397923af.pth --out vgg16.safetensors
  python -m converters.torchvision --arch ssd300_vgg16 --checkpoint ssd300_vgg16_coco-b556d3b4.pth \
      --out ssd300.safetensors
  python -m converters.torchvision --arch ssd300_vgg16_voc --checkpoint ssd300_mAP_77.43_v2.pth \
      --out ssd300_voc.safetensors     # amdegroot/ssd.pytorch's VOC model

Without --checkpoint the file is looked up under torchvision's name in torch hub's cache
($TORCH_HOME/hub/checkpoints), then downloaded from download.pytorch.org; when neither works the error
says which file to fetch and where to put it. The checkpoint is read with weights_only=True, its keys
and shapes are checked against the architecture, and the written file is loaded back and checked.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

from converters import checkpoint as ckpt
from converters import ssd as ssd_remap
from converters import vgg as vgg_remap
from experiments._launch import exit_interrupted, quiet_logs
from jaxvis.models import ARCHS as _ARCHS
from jaxvis.params import ParamsFileError

REMAPS = {"vgg": vgg_remap, "ssd": ssd_remap}

FLAGS = flags.FLAGS
flags.DEFINE_enum("arch", None, _ARCHS, "Architecture the checkpoint was saved from.")
flags.DEFINE_string("checkpoint", None, "Path of the .pth state_dict (or .safetensors); default: torchvision's "
                    "file in torch hub's cache, downloaded if missing.")
flags.DEFINE_string("out", None, "Where to write the jaxvis params file (.safetensors).")
flags.DEFINE_bool("download", True, "Download torchvision's checkpoint when it is not in the cache.")
flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
flags.DEFINE_enum("channel_order", None, ["RGB", "BGR"], "Channel order the network was trained on, when it is "
                  "not the architecture's usual one (amdegroot's converted-Caffe ssd_300_VOC0712.pth takes BGR).")


def convert(arch: str, checkpoint: str | None, out: str, *, allow_download: bool = True,
            overwrite: bool = False, channel_order: str | None = None, log=print) -> str:
    """Converts and writes ``out``; returns its path. Raises CheckpointError with a clear message."""
    from jaxvis import models, params as params_io

    check_out(out, overwrite)  # before any reading or converting: a refused --out costs nothing
    spec = models.arch_spec(arch)
    path = ckpt.locate(arch, checkpoint, allow_download=allow_download)
    if os.path.exists(out) and os.path.samefile(out, path):
        raise ckpt.CheckpointError(f"--out {out!r} is the checkpoint being converted; writing it would destroy the "
                                   f"input: give --out another path, e.g. {os.path.splitext(out)[0] + '.safetensors'!r}.")
    digest = ckpt.sha256(path)
    name = os.path.basename(path)
    prefix = ckpt.hash_prefix(name)
    if prefix and name == ckpt.TORCHVISION_FILES.get(arch) and not digest.startswith(prefix):
        log(f"warning: {name} carries torchvision's hash prefix {prefix} but its sha256 starts with "
            f"{digest[:8]}; it is not torchvision's file.")
    state = ckpt.read_state_dict(path)
    remap = REMAPS[spec.family]
    expected, optional = remap.expected_keys(spec)
    try:
        ckpt.check_keys(state, expected, optional, what=_describe(arch))
    except ckpt.CheckpointError as e:
        fits = [a for a in _ARCHS if a != arch and _fits(state, a)]
        hint = f"\n  it fits {_describe(fits[0])}: pass --arch {fits[0]}." if fits else ""
        raise ckpt.CheckpointError(f"{e}{hint}") from None
    ckpt.check_finite(state, path)
    variables = remap.from_torch(state, spec)
    spec = spec.replace(source=name, source_sha256=digest)
    if channel_order and channel_order != spec.channel_order:
        # mean and std are stored in the network's channel order.
        spec = spec.replace(channel_order=channel_order, mean=spec.mean[::-1], std=spec.std[::-1])
    try:
        params_io.save(out, variables, spec)
    except OSError as e:
        raise ckpt.CheckpointError(f"could not write {out!r}: {e.strerror or e}; give --out a path on a disk with "
                                   "room that you can write.") from None
    _verify(out, arch)
    n = sum(int(v.size) for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    log(f"wrote {out}: {arch}, {n:,} parameters from {name} (sha256 {digest[:12]}…)")
    return out


def check_out(out: str, overwrite: bool = False) -> None:
    """Raises CheckpointError (one line) unless ``out`` can be written as a file: not a directory, not an
    existing file without ``overwrite``, in a folder (made if missing) on a writable file system that this
    user may write."""
    if not out:
        raise ckpt.CheckpointError("--out is required: the path of the params file to write (.safetensors).")
    if os.path.isdir(out):
        raise ckpt.CheckpointError(f"--out {out!r} is a directory; give the path of the file to write, e.g. "
                                   f"{os.path.join(out, 'model.safetensors')!r}.")
    if os.path.exists(out) and not overwrite:
        raise ckpt.CheckpointError(f"{out!r} exists; pass --overwrite to replace it.")
    folder = os.path.dirname(os.path.abspath(out))
    base = folder
    while not os.path.exists(base):
        base = os.path.dirname(base)
    if not os.path.isdir(base):
        raise ckpt.CheckpointError(f"--out {out!r} lies under {base!r}, which is a file, not a folder; give "
                                   "another path.")
    if os.statvfs(base).f_flag & os.ST_RDONLY:
        raise ckpt.CheckpointError(f"--out {out!r} is on a read-only file system ({base!r} cannot be written); "
                                   "give a path on a writable disk.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ckpt.CheckpointError(f"--out {out!r} cannot be written: the folder {base!r} is not writable by this "
                                   "user; give a path in a folder you can write, or change its permissions.")


def _describe(arch: str) -> str:
    return f"amdegroot/ssd.pytorch's {arch}" if arch in ckpt.OTHER_FILES else f"torchvision's {arch}"


def _fits(state, arch: str) -> bool:
    from jaxvis import models

    spec = models.arch_spec(arch)
    expected, optional = REMAPS[spec.family].expected_keys(spec)
    try:
        ckpt.check_keys(state, expected, optional)
    except ckpt.CheckpointError:
        return False
    return True


def _verify(out: str, arch: str) -> None:
    """Reads the written file back through jaxvis.load (names, shapes, finiteness)."""
    import jaxvis

    jaxvis.load(out, arch=arch)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    quiet_logs()  # JAX's backend-probe INFO lines stay hidden, as in the launchers (--verbosity=0 shows them)
    start = time.time()
    try:
        convert(FLAGS.arch, FLAGS.checkpoint, FLAGS.out, allow_download=FLAGS.download,
                overwrite=FLAGS.overwrite, channel_order=FLAGS.channel_order)
    except (ckpt.CheckpointError, ParamsFileError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        exit_interrupted(f"interrupted: {FLAGS.out} was not written (it is written whole or not at all); "
                                 "run the command again.")
    print(f"done in {time.time() - start:.1f} s")


if __name__ == "__main__":
    flags.mark_flags_as_required(["arch", "out"])
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
