r"""Benchmark: the jaxvis sweep engine against the PyTorch way of doing the same work, in one run.

  python -m experiments.bench                          # the class-model and saliency workloads, 5 repetitions
  python -m experiments.bench --workloads shapes,vgg16 --reps 3
  python -m experiments.bench --tiny --reps 1 --steps 1 --workloads shapes,vgg16,saliency   # smoke run
  python -m experiments.bench --memory_points 1000     # peak memory of a 1000-point VGG16 sweep
  python -m experiments.bench --device gpu --points 64 --dtypes float32,bfloat16 --workloads vgg16,ssd300
                                                       # on a GPU (experiments/gpu_check.sh runs this)
  python -m experiments.bench --workloads shapes_grid,feature_vis,cams,drise --reps 3 --fv_steps 128 --masks 64 \
      --omp_wait_policy PASSIVE --nofirst_step         # the rows of the newer work, on a shared machine
  python -m experiments.bench --workloads channels --reps 3 --fv_steps 64 --omp_wait_policy PASSIVE --nofirst_step
                                                       # 128 channel objectives: the engine against a Lucent loop

For each workload, interleaved and repeated (medians reported):
  A  the jaxvis engine on a grid of --points points (8: 4 categories x 2 learning rates), in the engine's
     own chunks (--chunk sets them);
  B  a PyTorch eager loop the way the lab did it: one grid point at a time, batch 1, torch.optim.SGD;
  C  PyTorch eager doing the points as one batch, channels_last, each point with its learning rate.
Both sides run on the same device: the CPU, or with ``--device gpu`` (or ``auto`` where jax and PyTorch
see one) the same GPU. ``--dtypes bfloat16`` adds rows with A's network in bfloat16 and the PyTorch
sides under ``torch.autocast`` to bfloat16; the image and the loss stay float32 on every side.
Workloads: vgg16 (224x224, random weights), ssd300 (the MultiBox objective with a whole-image target),
shapes (the shipped shapes classifier), shapes_grid (the shipped classifier on a sweep's grid: its six
classes x 2 learning rates x 6 seeds of the starting noise, the first --grid_points=64 of those 72
points), saliency (maps of 32 VGG16 images: A = jaxvis in one call, B = captum's Saliency on the same
weights, C = torch autograd on the batch), feature_vis (Lucid's recipe, 24 class models of the shipped
classifier: A = the engine, B = Lucent's render_vis one objective at a time, C = Lucent with the 24
objectives in one batch; with the share of each side's images the shipped judge reads as their class),
channels (the same recipe on each of the 64 channels of the classifier's conv5_2 x 2 seeds, 128 points,
each minus the spatial mean of its channel: A = the engine, B = Lucent's objectives.channel one at a time,
C = Lucent with the 128 in one batch; no judge), cams (rows odam, gradcam, gradient: --detections=32 SSD300
detections explained, A = one jaxvis call, B = a PyTorch autograd loop, one backward per detection) and
drise (D-RISE with --masks=4000 masks of one SSD300 detection, A = jaxvis, B = PyTorch batching the masks
as jaxvis does, --mask_chunk at a time). The explanation rows have no C; SSD300 has random weights there
too. The PyTorch sides run with
frozen weights (``requires_grad_(False)``), the fastest way to take input gradients. The loss of A, B, C is
-S_c + mean(x^2) for classifiers. Every side ends by evaluating the loss of its final images (one forward
pass), which the engine's result holds with the final scores. A runs in the workload's process, B and C
in a PyTorch worker process beside it (timed in turn, never at once), so that neither runtime's threads
slow the other's. Each workload runs in a process of its own, so that the peak memory (max RSS) is its
own. GFLOP/s of A come from XLA's cost analysis of one image-step, as a fraction of a matmul peak
measured in the same run (numpy's float32 product on CPUs; XLA's product of the row's dtype on GPUs).
The count is taken on the CPU, on the model's twin with XLA's convolutions: the analysis does not see
into oneDNN's kernels nor into cuDNN's, which do the same arithmetic. ``--first_step`` also times a fresh
process from its start to its first VGG16 engine step, from a converted params file.

Each workload is a ``Workload`` value in ``WORKLOADS``: its model, what its child process measures and its
PyTorch sides, each a function with explicit arguments; a new workload is one more entry.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from absl import app, flags

from experiments.bench_explain import random_model

FLAGS = flags.FLAGS
flags.DEFINE_list("workloads", ["vgg16", "ssd300", "shapes", "shapes_grid", "saliency"],
                  "Workloads to run: these, and feature_vis, channels, cams (the ODAM, Grad-CAM and gradient rows) and "
                  "drise, which take long at their default sizes and are asked for by name.")
flags.DEFINE_integer("fv_steps", 512, "feature_vis, channels: Adam steps of every side (A, Lucent one at a time, "
                     "Lucent batched).")
flags.DEFINE_string("images_out", None, "Internal: where the PyTorch worker saves the images of its last run.")
flags.DEFINE_integer("detections", 32, "cams: SSD300 detections explained (one call on A's side, one backward each "
                     "on B's).")
flags.DEFINE_integer("masks", 4000, "drise: D-RISE masks of one SSD300 detection.")
flags.DEFINE_integer("mask_chunk", 0, "drise: masks per batch on both sides (0: jaxvis's choice for the free memory).")
flags.DEFINE_integer("reps", 5, "Repetitions (medians are reported).")
flags.DEFINE_integer("steps", 5, "Gradient steps per repetition of A, B and C.")
flags.DEFINE_bool("tiny", False, "Shrink the workloads (VGG16 at 64x64, 4 saliency images): a smoke run.")
flags.DEFINE_bool("first_step", True, "Also time process start -> first VGG16 engine step from a params file.")
flags.DEFINE_integer("memory_points", 0, "If > 0, measure the peak memory of a VGG16 sweep of this many points.")
flags.DEFINE_enum("conv_backend", "auto", ["auto", "onednn", "xla"],
                  "Convolutions of A (jaxvis.conv): oneDNN on CPUs where built (auto), or XLA's.")
flags.DEFINE_integer("points", 8, "Grid points of A, B and C in the class-model workloads: points/2 categories x "
                     "2 learning rates (an even number).")
flags.DEFINE_integer("grid_points", 64, "Points of the shapes_grid workload: the first ones of its grid (6 classes x "
                     "2 learning rates x 6 seeds of the starting noise, 72 points).")
flags.DEFINE_integer("chunk", 0, "Points per chunk of A in the class-model workloads (0: the engine's own choice, "
                     "as a user's run gets it: on CPUs at most 16 points, on accelerators what fits the memory).")
flags.DEFINE_enum("loop", "auto", ["auto", "host", "scan"], "The engine's steps loop on A's side (Engine(loop=...)).")
flags.DEFINE_list("dtypes", ["float32"], "Compute dtypes of the class-model workloads, a row each: float32, bfloat16 "
                  "(A's network in bfloat16 through Engine(compute_dtype=...), the PyTorch sides under autocast).")
flags.DEFINE_enum("device", "auto", ["auto", "cpu", "gpu"],
                  "Where A, B and C run: auto = the GPU when jax and PyTorch both see one, else the CPU.")
flags.DEFINE_enum("omp_wait_policy", None, ["ACTIVE", "PASSIVE"],
                  "OMP_WAIT_POLICY of every process of the run (both sides; PyTorch's and oneDNN's OpenMP threads): "
                  "PASSIVE on a machine shared with other work, where spinning threads wait for descheduled ones.")
flags.DEFINE_string("child", None, "Internal: run one workload in this process.")
flags.DEFINE_string("compute_dtype", "float32", "Internal: the compute dtype of the child's row.")
flags.DEFINE_string("torch_device", "cpu", "Internal: the PyTorch worker's device (cpu or cuda).")
flags.DEFINE_string("torch_worker", None, "Internal: serve the PyTorch sides of one workload.")
flags.DEFINE_string("params_file", None, "Internal: params file for the first-step child.")
flags.DEFINE_string("json_out", None, "Also append the JSON lines to this file (each as soon as it is measured).")

LRS, LAM = [0.5, 1.0], 1.0
GRID_SEEDS, GRID_INIT = 6, 0.1  # shapes_grid: seeds of the starting noise, and its standard deviation

# jax takes 75% of a GPU's memory when it starts unless told otherwise; the PyTorch worker shares the GPU.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def categories() -> list[int]:
    """The grid's categories: --points / 2 of them, each with the two learning rates."""
    if FLAGS.points < 2 or FLAGS.points % len(LRS):
        raise app.UsageError(f"--points must be a positive multiple of {len(LRS)}, got {FLAGS.points}")
    return list(range(FLAGS.points // len(LRS)))


def _losses(model):
    from jaxvis import objectives as O

    return [O.multibox()] if model.spec.is_detector else [O.score() + LAM * O.sq()]


def categories_grid(model):
    """(sweep, n): --points/2 categories x the learning rates, from zeros (a detector's target: the whole
    image)."""
    from jaxvis import engine

    h, w = model.spec.input_size
    sweep = engine.Sweep(targets=categories(), lrs=LRS, losses=_losses(model),
                         boxes=[[[0.0, 0.0, float(w), float(h)]]] if model.spec.is_detector else [[]])
    return sweep, sweep.size


def user_grid(model):
    """(sweep, n): a sweep of the shipped classifier as a user runs one: its six classes x the learning rates x
    seeds of the starting noise (std 0.1); the first --grid_points of its 72 points in grid order (classes
    outermost, seeds fastest)."""
    from jaxvis import engine

    sweep = engine.Sweep(targets=range(len(model.spec.labels)), lrs=LRS, losses=_losses(model),
                         init_scales=[GRID_INIT], seeds=range(GRID_SEEDS))
    if not 0 < FLAGS.grid_points <= sweep.size:
        raise app.UsageError(f"--grid_points must lie in 1..{sweep.size}, got {FLAGS.grid_points}")
    return sweep, FLAGS.grid_points


def grid_of(workload: str, model):
    """(sweep, n) of a class-model workload: the engine's grid and how many of its first points run."""
    return workload_named(workload).grid(model)


def grid_points(workload: str, model) -> list[tuple[int, float, float, int]]:
    """(target, learning rate, initial noise std, seed) of each point that A, B and C run, in A's order."""
    sweep, n = grid_of(workload, model)
    return [(p["target"], p["lr"], p["init"], p["seed"]) for p in sweep.point_axes()[:n]]


def matmul_peak(dtype: str = "float32", n: int = 4096, reps: int = 5) -> float:
    """Matmul GFLOP/s of the device jax runs on, median of ``reps``: numpy's float32 product on CPUs (the
    peak that XLA's and oneDNN's kernels are held to), XLA's product of ``dtype`` at default precision on
    accelerators (8192², where float32 may use TF32 tensor cores, as cuDNN's convolutions do)."""
    import jax

    if jax.default_backend() != "cpu":
        import jax.numpy as jnp

        n = 8192
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
        dot = jax.jit(jnp.dot)
        dot(a, b).block_until_ready()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            dot(a, b).block_until_ready()
            times.append(time.perf_counter() - t)
        return 2 * n ** 3 / statistics.median(times) / 1e9
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def xla_flops(fn, *args) -> float:
    """FLOPs of one call of ``fn`` on ``args``, from XLA's cost analysis of the program compiled for the CPU
    (the same arithmetic on every platform; on GPUs the convolutions are cuDNN calls, which the analysis
    does not count)."""
    import jax

    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        cost = jax.jit(fn).lower(*jax.device_put(args, cpu)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))


def max_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# --------------------------------------------------------------------------------------------------
# The same random weights on both sides (bench_explain.random_model).

def convs_in(jitted, *args) -> str:
    """Which convolutions a jitted function runs here: "onednn" if its program calls jaxvis's oneDNN
    kernels, else "xla"."""
    return "onednn" if "jaxvis_conv_" in jitted.lower(*args).as_text() else "xla"


def shipped_classifier(tiny: bool):
    import jaxvis
    from jaxvis import assets

    return jaxvis.load(assets.path("classifier"))


def random_vgg16(tiny: bool):
    from jaxvis import models

    spec = models.arch_spec("vgg16")
    return random_model(spec.replace(input_size=(64, 64)) if tiny else spec)


def random_ssd300(tiny: bool):
    from jaxvis import models

    return random_model(models.arch_spec("ssd300_vgg16"))


def jaxvis_model(workload: str, tiny: bool):
    """The jaxvis model of a workload (the same random weights in every process)."""
    return workload_named(workload).model(tiny)


def torch_twin(model):
    """The PyTorch model with the same weights, in eval mode and with frozen weights: autograd then
    computes the input gradient only, as the engine does, not the weight gradients of training."""
    from converters.torch_models import torch_ssd300, torch_vgg

    tmodel = torch_ssd300(model) if model.spec.is_detector else torch_vgg(model)
    return tmodel.requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# A, B, C for class-model workloads.

def run_in_chunks(eng, points: dict, size: int) -> list:
    """The final images of ``points`` (the engine's point arrays) run in chunks of ``size``, the last one
    padded with its last point, as ``Engine.run`` cuts a grid: one array per chunk."""
    import numpy as np

    n = len(points["target"])
    return [eng.run_points({k: v[np.arange(i, i + size).clip(max=n - 1)] for k, v in points.items()}).images
            for i in range(0, n, size)]


def engine_side(model, steps: int, compute_dtype: str = "float32", workload: str = ""):
    import jax

    from jaxvis import engine

    h, w = model.spec.input_size
    sweep, n = grid_of(workload, model)
    eng = engine.Engine(model, sweep.terms, steps=steps, compute_dtype=compute_dtype,
                        loop=FLAGS.loop)
    points = {k: v[:n] for k, v in sweep.arrays(eng.term_names).items()}
    size = FLAGS.chunk or eng.chunk_size(n)  # the engine's own choice unless --chunk says

    def run():
        return run_in_chunks(eng, points, size)

    # FLOPs of one image-step: value and gradient of the loss for one point, from XLA's cost analysis
    # of the model with XLA's convolutions (the arithmetic is the same).
    arrays = {k: v[:1] for k, v in sweep.arrays(eng.term_names).items()}
    one = {k: v[0] for k, v in arrays.items()}
    import jax.numpy as jnp

    x0 = jnp.zeros((h, w, 3), jnp.float32)
    twin = engine.Engine(model.with_conv_backend("xla"), eng.terms, steps=steps, compute_dtype=compute_dtype)
    grad = jax.jit(jax.grad(lambda x, p: twin.loss(model.params, x, p)[0]))
    used = convs_in(jax.jit(jax.grad(lambda x, p: eng.loss(model.params, x, p)[0])), x0, one)
    return run, xla_flops(grad, x0, one), used, eng.loop, size


def torch_loss(model, tmodel, x, targets, bf16: bool = False):
    """The per-point losses of a batch: -S_c + lam mean(x^2) (classifiers) or the MultiBox loss with a
    whole-image box (SSD, summed over the batch as independent images). ``bf16``: the network runs under
    autocast to bfloat16, the image and the loss stay float32 (as the engine's compute_dtype does)."""
    import torch

    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        if not model.spec.is_detector:
            logits = tmodel(x).float()
        else:
            feats = list(tmodel.backbone(x).values())
            head = {k: v.float() for k, v in tmodel.head(feats).items()}
    if not model.spec.is_detector:
        picked = logits.gather(1, targets[:, None])[:, 0]
        return (-picked + LAM * (x ** 2).mean(dim=(1, 2, 3))).sum()
    from torchvision.models.detection.image_list import ImageList
    from torchvision.ops import box_iou

    h, w = x.shape[-2:]
    anchors = tmodel.anchor_generator(ImageList(x, [(h, w)] * x.shape[0]), feats)
    total = 0
    for i in range(x.shape[0]):  # per image: each point has its own normaliser, as in the engine
        target = [{"boxes": torch.tensor([[0.0, 0.0, float(w), float(h)]], device=x.device),
                   "labels": targets[i:i + 1]}]
        matched = [tmodel.proposal_matcher(box_iou(target[0]["boxes"], anchors[i]))]
        one = {k: v[i:i + 1] for k, v in head.items()}
        losses = tmodel.compute_loss(target, one, anchors[i:i + 1], matched)
        total = total + losses["bbox_regression"] + losses["classification"]
    return total


def _sync(device: str) -> None:
    """Waits for the device's queued work (PyTorch's CUDA calls return before the kernels finish)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _start(h: int, w: int, points, device: str):
    """The starting images (N, 3, H, W) of ``points``: zeros, or the point's noise (its std, its seed)."""
    import torch

    x = torch.zeros(len(points), 3, h, w)
    for i, (_, _, init, seed) in enumerate(points):
        if init > 0:
            x[i] = init * torch.randn(3, h, w, generator=torch.Generator().manual_seed(seed))
    return x.to(device)


def torch_one_at_a_time(model, tmodel, steps: int, device: str = "cpu", bf16: bool = False, points=()):
    import torch

    h, w = model.spec.input_size

    def run():
        for c, lr, init, seed in points:
            x = _start(h, w, [(c, lr, init, seed)], device).requires_grad_(True)
            target = torch.tensor([c], device=device)
            opt = torch.optim.SGD([x], lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                torch_loss(model, tmodel, x, target, bf16).backward()
                opt.step()
            with torch.no_grad():  # the final image's loss, which the engine's result holds too
                torch_loss(model, tmodel, x, target, bf16)
        _sync(device)
    return run


def torch_batched(model, tmodel, steps: int, device: str = "cpu", bf16: bool = False, points=()):
    import torch

    h, w = model.spec.input_size
    targets = torch.tensor([p[0] for p in points], device=device)
    lrs = torch.tensor([p[1] for p in points], device=device).view(-1, 1, 1, 1)
    tmodel = tmodel.to(memory_format=torch.channels_last)

    def run():
        x = _start(h, w, points, device).to(memory_format=torch.channels_last)
        x.requires_grad_(True)
        for _ in range(steps):
            x.grad = None
            torch_loss(model, tmodel, x, targets, bf16).backward()
            with torch.no_grad():
                x -= lrs * x.grad
        with torch.no_grad():  # the final images' losses, which the engine's result holds too
            torch_loss(model, tmodel, x, targets, bf16)
        _sync(device)
    return run


# --------------------------------------------------------------------------------------------------
# Saliency: 32 images (4 when tiny).

def _saliency_inputs(model, n: int):
    import numpy as np

    h, w = model.spec.input_size
    x = np.random.default_rng(0).standard_normal((n, h, w, 3)).astype(np.float32)
    return x, (np.arange(n) % 10).reshape(n, 1)


def saliency_jaxvis_side(model, n: int):
    """(A: the maps of n images in one call, FLOPs of one map by XLA's count, convolutions used)."""
    import jax
    import jax.numpy as jnp

    from jaxvis import saliency as sal

    x, classes = _saliency_inputs(model, n)

    def jaxvis_side():
        return sal.gradient().attribute(model, x, sal.class_score(classes), preprocess=False).reduce()

    h, w = model.spec.input_size
    twin = model.with_conv_backend("xla")  # XLA's cost analysis does not count oneDNN's work
    grad = jax.jit(jax.grad(lambda im: twin.apply(model.params, im[None])[0][0, 0]))
    x0 = jnp.zeros((h, w, 3), jnp.float32)
    used = convs_in(jax.jit(jax.grad(lambda im: model.apply(model.params, im[None])[0][0, 0])), x0)
    return jaxvis_side, xla_flops(grad, x0), used


def saliency_torch_sides(model, tmodel, n: int, device: str = "cpu"):
    """(B: captum's Saliency, C: plain autograd) on the same n images."""
    import torch
    from captum.attr import Saliency

    x, classes = _saliency_inputs(model, n)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), device=device)
    captum = Saliency(tmodel)

    def captum_side():
        out = captum.attribute(xt, target=torch.tensor(classes[:, 0], device=device), abs=True).amax(1)
        _sync(device)
        return out

    def autograd_side():
        xg = xt.clone().requires_grad_(True)
        tmodel(xg).gather(1, torch.tensor(classes, device=device)).sum().backward()
        out = xg.grad.abs().amax(1)
        _sync(device)
        return out

    return captum_side, autograd_side


def _saliency_images() -> int:
    return 4 if FLAGS.tiny else 32


# --------------------------------------------------------------------------------------------------
# Feature visualisation on the shipped classifier: Lucid's recipe (an image in a decorrelated Fourier
# basis through a sigmoid, Lucent's standard random transforms, Adam at 0.05 from noise of std 0.01),
# --fv_steps steps on every side, of what a ``Lucid`` value names: feature_vis = 24 class models (6 classes
# x 4 seeds), channels = every channel of conv5_2 x 2 seeds (128 points). A: the jaxvis engine, in its own
# chunks; B: Lucent's render_vis one objective at a time; C: Lucent with every objective in one batch
# (param.image(batch=n), the sum of the per-image objectives).

FV_LR, FV_INIT = 0.05, 0.01
FV_PARAMETERIZATION = "fourier+decorrelated+sigmoid"
LUCENT_TRANSFORMS = "pad(12),jitter(8),scale(0.9,1.1),rotate(10),jitter(4)"  # Lucent's standard_transforms


def class_logit():
    """The class logit: the point's target is the class."""
    from jaxvis import objectives as O

    return O.score()


def conv5_2_channel():
    """Minus the spatial mean of a channel of conv5_2 (after its ReLU): the point's target is the channel."""
    from jaxvis import objectives as O

    return O.channel("conv5_2")


def class_count(model) -> int:
    return len(model.spec.labels)


def conv5_2_channels(model) -> int:
    import jax

    return jax.eval_shape(model.apply, model.params, jax.ShapeDtypeStruct(model.input_shape(1), "float32"))[1][
        "conv5_2"].shape[-1]


@dataclasses.dataclass(frozen=True)
class Lucid:
    """What a Lucid-recipe row visualises, the same on both sides.

    Attributes:
      objective: () -> the jaxvis objective, whose point's target picks the class or channel.
      targets: model -> how many targets (classes, channels); each runs with every seed.
      seeds: seeds of the starting noise per target.
      lucent_layer: Lucent's name of the hook of the same activations in the torch twin (a module's path with
        "_" for "."), read by ``lucent.optvis.objectives.channel(lucent_layer, target)``.
      judged: whether the targets are classes, whose images the shipped judge reads.
    """

    objective: Callable[[], Any]
    targets: Callable[[Any], int]
    seeds: int
    lucent_layer: str
    judged: bool


# The twin's modules: classifier.6 is the logits' Linear, features.19 the ReLU after conv5_2.
CLASS_MODELS = Lucid(class_logit, class_count, seeds=4, lucent_layer="classifier_6", judged=True)
CHANNELS = Lucid(conv5_2_channel, conv5_2_channels, seeds=2, lucent_layer="features_19", judged=False)


def fv_points(model, lucid: Lucid = CLASS_MODELS) -> list[tuple[int, int]]:
    """(target, seed) of the row's points, in the engine's grid order (targets outermost)."""
    return [(c, s) for c in range(lucid.targets(model)) for s in range(lucid.seeds)]


def feature_vis_engine_side(model, lucid: Lucid = CLASS_MODELS):
    """A: the engine on the row's points; returns (run -> RGB images in [0, 1], convolutions used, loop,
    chunk)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import optax

    from jaxvis import cli, engine, evaluate

    sweep = engine.Sweep(targets=range(lucid.targets(model)), lrs=[FV_LR], losses=[lucid.objective()],
                         init_scales=[FV_INIT], seeds=range(lucid.seeds))
    eng = engine.Engine(model, sweep.terms, optimizer=engine.Optimizer(optax.adam), steps=FLAGS.fv_steps,
                        parameterization=cli.parameterization(FV_PARAMETERIZATION, model), transforms=cli.transforms(LUCENT_TRANSFORMS),
                        loop=FLAGS.loop)
    points = sweep.arrays(eng.term_names)
    n = sweep.size
    size = FLAGS.chunk or eng.chunk_size(n)  # the engine's own choice unless --chunk says

    def run():
        return evaluate.pictures(model, np.concatenate(run_in_chunks(eng, points, size))[:n])

    x0 = jnp.zeros(model.input_shape(1), jnp.float32)
    return run, convs_in(jax.jit(jax.grad(lambda x: model.apply(model.params, x)[0].sum())), x0), eng.loop, size


def lucent():
    """Lucent's optvis, importable with the kornia of today: Lucent 0.1.8 calls kornia.get_rotation_matrix2d
    and kornia.warp_affine, which newer kornia keeps in kornia.geometry.transform only."""
    import warnings

    with warnings.catch_warnings():  # their imports warn of torch APIs they use (torch.jit.script)
        warnings.simplefilter("ignore")
        import kornia

        for name in ("get_rotation_matrix2d", "warp_affine"):
            if not hasattr(kornia, name):
                import kornia.geometry.transform as kgt

                setattr(kornia, name, getattr(kgt, name))
        from lucent.optvis import objectives, param, render, transform

    return objectives, param, render, transform


def lucent_sides(model, tmodel, lucid: Lucid = CLASS_MODELS):
    """B and C with Lucent on the torch twin: each returns its RGB images (N, H, W, 3) in [0, 1]."""
    import numpy as np
    import torch

    objectives, param, render, transform = lucent()
    h, w = model.spec.input_size
    spec = model.spec
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (spec.mean, spec.std))
    lo, hi = spec.value_range

    def to_input(x):  # RGB in [0, 1] -> the twin's input, as jaxvis.preprocess.normalize does
        x = lo + x * (hi - lo)
        return ((x.flip(1) if spec.channel_order == "BGR" else x) - mean) / std

    transforms = list(transform.standard_transforms) + [to_input]
    layer = lucid.lucent_layer
    points = fv_points(model, lucid)

    def render_vis(objective, batch):
        return render.render_vis(tmodel, objective, lambda: param.image(w, h, sd=FV_INIT, batch=batch, fft=True,
                                                                        decorrelate=True),
                                 optimizer=lambda ps: torch.optim.Adam(ps, lr=FV_LR), transforms=transforms,
                                 thresholds=(FLAGS.fv_steps,), preprocess=False, progress=False, show_image=False,
                                 fixed_image_size=(h, w))[-1]

    def one_at_a_time():
        images = []
        for c, seed in points:
            torch.manual_seed(seed)
            images.append(render_vis(objectives.channel(layer, c), None))
        return np.concatenate(images)

    def batched():
        torch.manual_seed(0)
        objective = functools.reduce(operator.add, [objectives.channel(layer, c, batch=i)
                                                    for i, (c, _) in enumerate(points)])
        return render_vis(objective, len(points))

    return one_at_a_time, batched


def judge_transfer(model, images, classes) -> float:
    """Share of RGB images (N, H, W, 3) in [0, 1] that the shipped judge reads as their class."""
    import numpy as np

    import jaxvis
    from jaxvis import assets, evaluate

    votes, _ = evaluate.judge_read(jaxvis.load(assets.path("judge")), images)
    return float(np.mean(votes == np.asarray(classes)))


# --------------------------------------------------------------------------------------------------
# Detector explanations on SSD300 (random weights, as experiments/bench_explain.py builds it): ODAM,
# Grad-CAM and the input gradient of --detections default boxes of one image (A: one jaxvis call; B: a
# PyTorch autograd loop, one backward per detection), D-RISE with --masks masks (A: jaxvis; B: PyTorch
# batching the masks the same way, --mask_chunk at a time).

CAMS = ("odam", "gradcam", "gradient")


def _explain_inputs(model):
    import numpy as np

    from experiments import bench_explain as bx

    image, anchors, classes = bx.inputs(model, FLAGS.detections)
    return np.asarray(model.preprocess(image)), anchors, classes


def mask_chunk(model) -> int:
    from jaxvis import saliency as sal

    return FLAGS.mask_chunk or sal.chunk_sizes(model, FLAGS.masks, 1, tuple(model.spec.input_size), backward=False)[0]


def drise_jaxvis_sides(model) -> dict:
    """A's side of drise: D-RISE of one detection."""
    from jaxvis import saliency as sal

    x, anchors, classes = _explain_inputs(model)
    one = sal.detection(anchors[:, :1], classes[:, :1])
    method = sal.drise(masks=FLAGS.masks, chunk=mask_chunk(model))
    return {"drise": lambda: method.attribute(model, x, one, preprocess=False).attributions}


def cams_jaxvis_sides(model) -> dict:
    """A's side of cams: a callable per method, every detection in one call."""
    from jaxvis import saliency as sal

    x, anchors, classes = _explain_inputs(model)
    target = sal.detection(anchors, classes)
    # both sides read the six source maps (the PyTorch loop retains their gradients)
    methods = {"odam": sal.odam("sources"), "gradcam": sal.gradcam(), "gradient": sal.gradient()}
    return {name: (lambda m: lambda: m.attribute(model, x, target, preprocess=False).attributions)(m)
            for name, m in methods.items()}


def _explain_torch_inputs(model, device: str):
    """The PyTorch twin on ``device``, the input (as a torch tensor, NCHW), the anchors and the classes of the
    explanation workloads."""
    import torch

    x, anchors, classes = _explain_inputs(model)
    return torch_twin(model).to(device), torch.tensor(x.transpose(0, 3, 1, 2).copy(), device=device), anchors, classes


def drise_torch_sides(model, device: str = "cpu") -> dict:
    """B's side of drise: PyTorch's D-RISE, the masks batched as jaxvis batches them."""
    from experiments import bench_explain as bx

    tmodel, xt, anchors, classes = _explain_torch_inputs(model, device)
    chunk = mask_chunk(model)
    return {"drise": lambda: bx.torch_drise(tmodel, model, xt, int(anchors[0, 0]), int(classes[0, 0]), FLAGS.masks,
                                            chunk)}


def cams_torch_sides(model, device: str = "cpu") -> dict:
    """B's side of cams: the PyTorch autograd loop per method, one backward per detection."""
    from experiments import bench_explain as bx

    tmodel, xt, anchors, classes = _explain_torch_inputs(model, device)
    a, c = anchors[0].tolist(), classes[0].tolist()
    return {name: (lambda name: lambda: bx.torch_cams(tmodel, xt, a, c, (name,)))(name) for name in CAMS}


def feature_vis_child(workload: "Workload") -> dict:
    """A Lucid-recipe row (feature_vis, channels): A here, B and C (Lucent) in a PyTorch worker, interleaved;
    for class models, with the share of each side's images that the shipped judge reads as their class (of
    the last repetition)."""
    lucid = workload.lucid
    model = workload.model(FLAGS.tiny).with_conv_backend(FLAGS.conv_backend)
    a, used, loop, chunk = feature_vis_engine_side(model, lucid)
    folder = tempfile.mkdtemp(prefix="jaxvis-bench-")
    worker = TorchWorker(workload.name, "cpu", [f"--fv_steps={FLAGS.fv_steps}",
                                                f"--images_out={os.path.join(folder, 'images.npy')}"])
    times = {"A": [], "B": [], "C": []}
    try:
        t = time.perf_counter()
        images = a()  # compile
        compile_s = time.perf_counter() - t
        for _ in range(FLAGS.reps):
            t = time.perf_counter()
            images = a()
            times["A"].append(time.perf_counter() - t)
            times["B"].append(worker.time("B"))
            times["C"].append(worker.time("C"))
        lucent_images = {side: worker.images(side) for side in ("B", "C")} if lucid.judged else {}
    finally:
        worker.close()
        shutil.rmtree(folder, ignore_errors=True)
    targets = [c for c, _ in fv_points(model, lucid)]
    n = len(targets)
    rate = {k: n * FLAGS.fv_steps / statistics.median(v) for k, v in times.items()}
    row = {"workload": workload.name, "unit": "image-steps/s", "A": rate["A"], "B": rate["B"], "C": rate["C"],
           "A/B": rate["A"] / rate["B"], "A/C": rate["A"] / rate["C"], "gflop_per_image_step": None,
           "A_gflops": None, "matmul_peak_gflops": None, "A_fraction_of_peak": None, "A_compile_s": compile_s,
           "peak_rss_gb": max_rss_gb(), "reps": FLAGS.reps, "steps": FLAGS.fv_steps, "points": n,
           "dtype": "float32", "conv": used, "loop": loop, "chunk": chunk, "tiny": FLAGS.tiny, "device": "cpu",
           **{f"{k}_s": statistics.median(v) for k, v in times.items()}}
    if lucid.judged:
        row.update({"judge_A": judge_transfer(model, images, targets),
                    **{f"judge_{side}": judge_transfer(model, lucent_images[side], targets) for side in ("B", "C")}})
    return row


def explain_child(workload: "Workload") -> list[dict]:
    """Rows of an explanation workload (cams: odam, gradcam, gradient; drise): A here, B in a PyTorch worker,
    interleaved."""
    import jax

    model = workload.model(FLAGS.tiny).with_conv_backend(FLAGS.conv_backend)
    sides = workload.jaxvis_sides(model)
    chunk = workload.chunk(model) if workload.chunk else None
    worker = TorchWorker(workload.name, "cpu", [f"--mask_chunk={chunk or 0}", f"--masks={FLAGS.masks}",
                                           f"--detections={FLAGS.detections}"])
    compile_s, times = {}, {name: {"A": [], "B": []} for name in sides}
    try:
        for name, fn in sides.items():
            t = time.perf_counter()
            fn()
            compile_s[name] = time.perf_counter() - t
        for _ in range(FLAGS.reps):
            for name, fn in sides.items():
                t = time.perf_counter()
                fn()
                times[name]["A"].append(time.perf_counter() - t)
                times[name]["B"].append(worker.time(name))
    finally:
        worker.close()
    work = workload.work()
    rows = []
    for name, ts in times.items():
        a, b = (work / statistics.median(ts[k]) for k in ("A", "B"))
        rows.append({"workload": name, "unit": workload.unit, "A": a, "B": b,
                     "C": None, "A/B": a / b, "A/C": None, "gflop_per_image_step": None, "A_gflops": None,
                     "matmul_peak_gflops": None, "A_fraction_of_peak": None, "A_compile_s": compile_s[name],
                     "peak_rss_gb": max_rss_gb(), "reps": FLAGS.reps, "points": work, "dtype": "float32",
                     "conv": convs_in(jax.jit(lambda im: model.apply(model.params, im)[0]["cls_logits"].sum()),
                                      jax.ShapeDtypeStruct((1, 300, 300, 3), "float32")),
                     "loop": None, "chunk": chunk, "tiny": FLAGS.tiny, "device": "cpu",
                     "A_s": statistics.median(ts["A"]), "B_s": statistics.median(ts["B"])})
    return rows


# --------------------------------------------------------------------------------------------------
# The PyTorch sides run in a worker process of their own: in one process, oneDNN's OpenMP threads
# (started from XLA's threads) make libgomp throttle the spinning of PyTorch's, which slows PyTorch's
# small operations by up to a quarter. Each side thus runs as it would for its own user.

def torch_worker(workload: str) -> None:
    """Builds the workload's PyTorch sides (B and C, or one per explanation method), warms them up, then runs
    the side named on each line of stdin and prints its seconds."""
    import torch

    torch.set_grad_enabled(True)
    w = workload_named(workload)
    sides = w.torch_sides(w.model(FLAGS.tiny), FLAGS.torch_device)
    last = {name: fn() for name, fn in sides.items()}  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        if line.startswith("images "):  # save the images of a side's last run: "images B"
            import numpy as np

            name = line.split()[1]
            np.save(FLAGS.images_out, np.asarray(last[name]))
            print(FLAGS.images_out, flush=True)
            continue
        name = line.strip()
        fn = sides[name]
        t = time.perf_counter()
        last[name] = fn()
        print(time.perf_counter() - t, flush=True)


class TorchWorker:
    """The worker process of one workload, asked to run B or C and answer with the seconds taken."""

    def __init__(self, workload: str, device: str, extra=()):
        cmd = [sys.executable, "-m", "experiments.bench", f"--torch_worker={workload}", f"--steps={FLAGS.steps}", *extra,
               f"--tiny={FLAGS.tiny}", f"--points={FLAGS.points}", f"--compute_dtype={FLAGS.compute_dtype}",
               f"--torch_device={device}", f"--grid_points={FLAGS.grid_points}"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the PyTorch worker for {workload} failed to start (exit {self.proc.wait()})")

    def time(self, side: str) -> float:
        self.proc.stdin.write(side + "\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def images(self, side: str):
        """The images (a numpy array) that the side's last run returned."""
        import numpy as np

        self.proc.stdin.write(f"images {side}\n")
        self.proc.stdin.flush()
        return np.load(self.proc.stdout.readline().strip())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def torch_device_for(platform: str) -> str:
    """PyTorch's device for jax's platform: both sides on the same GPU, or both on the CPU."""
    if platform == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"jax runs on {platform} but PyTorch sees no CUDA device: install PyTorch's CUDA "
                           "build, or pass --device cpu to compare on the CPU.")
    return "cuda"


def _platform() -> str:
    import jax

    platform = jax.default_backend()
    if FLAGS.device == "gpu" and platform != "gpu":
        raise RuntimeError(f"--device gpu, but jax runs on {platform}: install jax's CUDA build "
                           "(pip install -U 'jax[cuda13]').")
    return platform


def _timed(a, worker, reps: int) -> tuple[float, dict]:
    """A's compile time, then ``reps`` interleaved repetitions of A (here) and B and C (in the worker)."""
    t = time.perf_counter()
    a()  # compile
    compile_s = time.perf_counter() - t
    times = {"A": [], "B": [], "C": []}
    try:
        for _ in range(reps):
            t = time.perf_counter()
            a()
            times["A"].append(time.perf_counter() - t)
            times["B"].append(worker.time("B"))
            times["C"].append(worker.time("C"))
    finally:
        worker.close()
    return compile_s, times


def _row(workload: "Workload", work: int, times: dict, compile_s: float, flops: float, peak: float,
         platform: str, **fields) -> dict:
    import jax

    rate = {k: work / statistics.median(v) for k, v in times.items()}
    gflops = rate["A"] * flops / 1e9
    return {
        "workload": workload.name, "unit": workload.unit,
        "A": rate["A"], "B": rate["B"], "C": rate["C"], "A/B": rate["A"] / rate["B"], "A/C": rate["A"] / rate["C"],
        "gflop_per_image_step": flops / 1e9, "A_gflops": gflops, "matmul_peak_gflops": peak,
        "A_fraction_of_peak": gflops / peak, "A_compile_s": compile_s, "peak_rss_gb": max_rss_gb(),
        "reps": FLAGS.reps, "steps": FLAGS.steps, "tiny": FLAGS.tiny, **fields,
        "device": jax.devices()[0].device_kind if platform != "cpu" else "cpu",
        "A_device_peak_gb": (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**30
        if platform != "cpu" else None,
    }


def class_model_child(workload: "Workload") -> dict:
    """A class-model workload: A (the engine) in this process, B and C in a PyTorch worker; medians of
    interleaved repetitions."""
    platform = _platform()
    dtype = FLAGS.compute_dtype
    peak = matmul_peak(dtype)
    worker = TorchWorker(workload.name, torch_device_for(platform))
    model = workload.model(FLAGS.tiny).with_conv_backend(FLAGS.conv_backend)
    a, flops, used, loop, chunk = engine_side(model, FLAGS.steps, dtype, workload.name)
    n = workload.grid(model)[1]
    compile_s, times = _timed(a, worker, FLAGS.reps)
    return _row(workload, n * FLAGS.steps, times, compile_s, flops, peak, platform,  # image-steps
                conv=used, points=n, dtype=dtype, loop=loop, chunk=chunk)


def saliency_child(workload: "Workload") -> dict:
    """The saliency workload: maps of VGG16 images, A (jaxvis, one call) here, B (captum) and C (autograd on
    the batch) in a PyTorch worker."""
    platform = _platform()
    peak = matmul_peak("float32")
    worker = TorchWorker(workload.name, torch_device_for(platform))
    model = workload.model(FLAGS.tiny).with_conv_backend(FLAGS.conv_backend)
    n = _saliency_images()
    a, flops, used = saliency_jaxvis_side(model, n)
    compile_s, times = _timed(a, worker, FLAGS.reps)
    return _row(workload, n, times, compile_s, flops, peak, platform, conv=used, points=n, dtype="float32",
                loop=None, chunk=None)


def class_model_torch_sides(workload: str):
    """B (one point at a time, batch 1) and C (the points as one batch) of a class-model workload."""
    def sides(model, device: str):
        tmodel = torch_twin(model).to(device)
        bf16 = FLAGS.compute_dtype == "bfloat16"
        points = grid_points(workload, model)
        return {"B": torch_one_at_a_time(model, tmodel, FLAGS.steps, device, bf16, points),
                "C": torch_batched(model, tmodel, FLAGS.steps, device, bf16, points)}

    return sides


def saliency_torch_sides_of(model, device: str):
    b, c = saliency_torch_sides(model, torch_twin(model).to(device), _saliency_images(), device)
    return {"B": b, "C": c}


def lucent_sides_of(lucid: Lucid):
    """B (Lucent one objective at a time) and C (Lucent with the objectives in one batch) of a Lucid row."""
    def sides(model, device: str):
        b, c = lucent_sides(model, torch_twin(model).to(device), lucid)
        return {"B": b, "C": c}

    return sides


# --------------------------------------------------------------------------------------------------
# The workloads: each a value naming its model, what its child process measures, and its PyTorch sides.

@dataclasses.dataclass(frozen=True)
class Workload:
    """A benchmark workload.

    Attributes:
      name: its name on the command line and in the table.
      model: tiny -> the jaxvis model (the same random weights in every process).
      child: the workload -> its row (or rows), measured in a process of its own: A there, the PyTorch
        sides in a worker beside it.
      torch_sides: (model, device) -> {side name: a function that runs it}, the worker's sides.
      unit: what the rates count.
      grid: class-model workloads: model -> (sweep, how many of its first points run).
      dtypes: whether --dtypes gives it a row per compute dtype (float32 only otherwise).
      jaxvis_sides, chunk, work: explanation workloads: model -> {method: A's function}; model -> the mask
        chunk (or None); () -> the detections or masks of one call.
      lucid: Lucid-recipe rows (feature_vis, channels): what both sides visualise.
    """

    name: str
    model: Callable[[bool], Any]
    child: Callable[["Workload"], Any]
    torch_sides: Callable[[Any, str], dict]
    unit: str = "image-steps/s"
    grid: Callable[[Any], tuple] | None = None
    dtypes: bool = False
    jaxvis_sides: Callable[[Any], dict] | None = None
    chunk: Callable[[Any], int] | None = None
    work: Callable[[], int] | None = None
    lucid: Lucid | None = None


def _class_model(name: str, model, grid=categories_grid) -> Workload:
    return Workload(name, model, class_model_child, class_model_torch_sides(name), grid=grid, dtypes=True)


def _lucid_row(name: str, lucid: Lucid) -> Workload:
    return Workload(name, shipped_classifier, feature_vis_child, lucent_sides_of(lucid), lucid=lucid)


WORKLOADS = {w.name: w for w in (
    _class_model("vgg16", random_vgg16),
    _class_model("ssd300", random_ssd300),
    _class_model("shapes", shipped_classifier),
    _class_model("shapes_grid", shipped_classifier, grid=user_grid),
    Workload("saliency", random_vgg16, saliency_child, saliency_torch_sides_of, unit="images/s"),
    _lucid_row("feature_vis", CLASS_MODELS),
    _lucid_row("channels", CHANNELS),
    Workload("cams", random_ssd300, explain_child, cams_torch_sides, unit="detections/s",
             jaxvis_sides=cams_jaxvis_sides, work=lambda: FLAGS.detections),
    Workload("drise", random_ssd300, explain_child, drise_torch_sides, unit="masks/s",
             jaxvis_sides=drise_jaxvis_sides, chunk=mask_chunk, work=lambda: FLAGS.masks),
)}


def workload_named(name: str) -> Workload:
    if name not in WORKLOADS:
        raise app.UsageError(f"unknown workload {name!r}; workloads: {', '.join(WORKLOADS)}")
    return WORKLOADS[name]


def first_step_child(path: str) -> dict:
    """From this process's start: load a converted VGG16 and finish its first engine step."""
    import jaxvis
    from jaxvis import engine, objectives as O

    model = jaxvis.load(path)
    sweep = engine.Sweep(targets=[1], lrs=[1.0], losses=[O.score() + LAM * O.sq()])
    engine.Engine(model, sweep.terms, steps=1).run(sweep, chunk_size=1, progress=False)
    return {"first_step_done": time.time()}


def memory_child(points: int) -> dict:
    """A VGG16 sweep of ``points`` points, one step each, through the launcher's run directory."""
    from jaxvis import models, params as params_io, sweeps
    from jaxvis.settings import SweepSettings

    model = random_model(models.arch_spec("vgg16").replace(input_size=(64, 64) if FLAGS.tiny else (224, 224)))
    folder = tempfile.mkdtemp(prefix="jaxvis-bench-")
    path = os.path.join(folder, "vgg16.safetensors")
    params_io.save(path, model.params, model.spec)
    settings = SweepSettings.create(params=path, categories=[str(i % 1000) for i in range(points)], steps=1,
                                    penalty=("sq=1",))
    t = time.time()
    sweeps.run(settings, os.path.join(folder, "run"), progress=False)
    seconds = time.time() - t
    shutil.rmtree(folder, ignore_errors=True)
    return {"workload": f"memory_{points}_points", "peak_rss_gb": max_rss_gb(), "seconds": seconds}


def _spawn(args) -> dict | list[dict]:
    cmd = [sys.executable, "-m", "experiments.bench", *args, f"--reps={FLAGS.reps}", f"--steps={FLAGS.steps}",
           f"--tiny={FLAGS.tiny}", f"--conv_backend={FLAGS.conv_backend}", f"--points={FLAGS.points}",
           f"--device={FLAGS.device}", f"--grid_points={FLAGS.grid_points}", f"--loop={FLAGS.loop}",
           f"--chunk={FLAGS.chunk}", f"--detections={FLAGS.detections}", f"--masks={FLAGS.masks}",
           f"--mask_chunk={FLAGS.mask_chunk}", f"--fv_steps={FLAGS.fv_steps}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu") if FLAGS.device == "cpu" else None
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cell(value, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def table(rows) -> str:
    """The rows as text. For the explanation rows (odam, gradcam, gradient, drise) B is PyTorch's way of
    doing that work (an autograd loop over the detections; D-RISE with masks batched as jaxvis does) and
    there is no C."""
    head = (f"{'workload':<11} {'dtype':<8} {'points':>6} {'unit':<14} {'A jaxvis':>9} {'B torch 1x1':>11} "
            f"{'C torch batch':>13} {'A/B':>6} {'A/C':>6} {'A GFLOP/s':>9} {'of peak':>7} {'compile s':>9} "
            f"{'peak RSS GB':>11} {'A convs':>7} {'loop':>5} {'chunk':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['workload']:<11} {r['dtype']:<8} {r['points']:>6} {r['unit']:<14} {r['A']:>9.3f} "
                     f"{r['B']:>11.3f} {_cell(r['C'], 13, 3)} {r['A/B']:>6.2f} {_cell(r['A/C'], 6, 2)} "
                     f"{_cell(r['A_gflops'], 9, 1)} {_cell(r['A_fraction_of_peak'], 7, 2)} {r['A_compile_s']:>9.1f} "
                     f"{r['peak_rss_gb']:>11.2f} {r['conv']:>7} {r.get('loop') or '-':>5} {r.get('chunk') or '-':>5}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.torch_worker:
        torch_worker(FLAGS.torch_worker)
        return
    if FLAGS.child:
        if FLAGS.child == "first_step":
            print(json.dumps(first_step_child(FLAGS.params_file)))
        elif FLAGS.child.startswith("memory"):
            print(json.dumps(memory_child(FLAGS.memory_points)))
        else:
            workload = workload_named(FLAGS.child)
            print(json.dumps(workload.child(workload)))
        return
    if FLAGS.omp_wait_policy:  # before any OpenMP runtime starts: the children and their workers inherit it
        os.environ["OMP_WAIT_POLICY"] = FLAGS.omp_wait_policy
    bad = sorted(set(FLAGS.dtypes) - {"float32", "bfloat16"})
    if bad:
        raise app.UsageError(f"--dtypes takes float32 and bfloat16, got {bad}")
    categories()  # checks --points
    for name in FLAGS.workloads:
        workload_named(name)
    rows = []
    for workload in FLAGS.workloads:
        for dtype in FLAGS.dtypes if WORKLOADS[workload].dtypes else ["float32"]:
            print(f"running {workload} ({dtype}) ...", file=sys.stderr, flush=True)
            got = _spawn([f"--child={workload}", f"--compute_dtype={dtype}"])
            got = got if isinstance(got, list) else [got]
            rows += got
            _append_json(got)  # row by row, so that a run cut short keeps what it measured
    lines = [json.dumps(r) for r in rows]
    print(table(rows))
    extra = []
    if FLAGS.first_step:
        from jaxvis import models, params as params_io

        spec = models.arch_spec("vgg16").replace(input_size=(64, 64)) if FLAGS.tiny else models.arch_spec("vgg16")
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "vgg16.safetensors")
            params_io.save(path, random_model(spec).params, spec)
            start = time.time()
            done = _spawn(["--child=first_step", f"--params_file={path}"])["first_step_done"]
        extra.append({"workload": "first_step", "seconds_from_process_start": done - start})
        _append_json(extra[-1:])
        print(f"process start -> first VGG16 engine step from a params file: {done - start:.1f} s")
    if FLAGS.memory_points:
        r = _spawn(["--child=memory", f"--memory_points={FLAGS.memory_points}"])
        extra.append(r)
        _append_json([r])
        print(f"{FLAGS.memory_points}-point VGG16 sweep: peak RSS {r['peak_rss_gb']:.2f} GB in {r['seconds']:.0f} s")
    import platform

    machine = {"workload": "machine", "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "python": platform.python_version()}
    lines += [json.dumps(e) for e in extra] + [json.dumps(machine)]
    for line in lines:
        print(line)
    _append_json([machine])


def _append_json(records) -> None:
    if FLAGS.json_out:
        with open(FLAGS.json_out, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))


if __name__ == "__main__":
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
