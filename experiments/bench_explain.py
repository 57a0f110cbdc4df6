r"""Memory and speed of explaining SSD300 detections: jaxvis against PyTorch doing the same work.

  python -m experiments.bench_explain                      # full size (heavy: D-RISE runs 4000 SSD300 passes)
  python -m experiments.bench_explain --masks 64 --samples 8 --detections 4 --reps 1    # smoke run

Every case runs in a process of its own so that its peak memory (max RSS) is its own. SSD300-VGG16 at
300x300 with random weights (He-initialised, biases made non-zero), on the CPU:

- ``smoothgrad``: peak RSS of SmoothGrad with --samples noisy copies for one detection (samples in chunks
  sized to the free memory, ``jaxvis.saliency.chunk_sizes``);
- ``drise_memory``: peak RSS of D-RISE with --masks masks for one detection;
- ``cams``: ODAM, Grad-CAM and the gradient for --detections default boxes of one image in one call,
  against a PyTorch autograd loop on torchvision's ssd300_vgg16 with the same weights (one forward, one
  backward per detection with the graph retained; the six source maps read with ``retain_grad``);
- ``drise``: D-RISE with --masks masks against a PyTorch implementation batching the masks the same way
  (the same chunk size, masks made with torch's bilinear interpolation and random shifts, pre-NMS
  proposals decoded by torchvision's box coder).

Times are medians of --reps runs after a warm-up (compilation excluded); PyTorch runs in the same process
after jaxvis, with frozen weights.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """This script's flags, defined when it runs as a script only: experiments/bench.py imports its
    functions (cams and D-RISE rows in its table) and has flags of its own."""
    flags.DEFINE_list("cases", ["smoothgrad", "drise_memory", "cams", "drise"], "Cases to run.")
    flags.DEFINE_integer("samples", 64, "SmoothGrad samples.")
    flags.DEFINE_integer("masks", 4000, "D-RISE masks.")
    flags.DEFINE_integer("detections", 32, "Detections explained at once (cams).")
    flags.DEFINE_integer("reps", 3, "Timed repetitions (medians reported).")
    flags.DEFINE_integer("mask_chunk", 0, "D-RISE masks per batch (0: sized to the free memory, as jaxvis does).")
    flags.DEFINE_string("case", None, "Internal: run one case in this process.")
    flags.DEFINE_string("json_out", None, "Also append the JSON lines to this file.")

def max_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def random_model(spec):
    """The model of ``spec`` with the initialiser's weights and random non-zero biases (a zero bias would give a
    zero image a zero gradient): the weights of every benchmark's random VGG16 and SSD300."""
    import jax
    import numpy as np

    import jaxvis
    from jaxvis.train import init_variables

    rng = np.random.default_rng(1)
    variables = init_variables(spec, 0)
    variables = jax.tree_util.tree_map_with_path(
        lambda p, a: a + 0.05 * rng.standard_normal(a.shape).astype(np.float32) if "bias" in jax.tree_util.keystr(p) else a,
        variables)
    return jaxvis.from_spec(spec, variables)


def random_ssd300():
    """SSD300 with random weights (``random_model``)."""
    from jaxvis import models

    return random_model(models.arch_spec("ssd300_vgg16"))


def inputs(model, k: int):
    import numpy as np

    image = np.random.default_rng(0).random((1, 300, 300, 3), dtype=np.float32)
    anchors = np.linspace(0, len(model.anchors) - 1, k).astype(np.int32)[None]
    classes = (1 + np.arange(k) % (model.spec.config["num_classes"] - 1)).astype(np.int32)[None]
    return image, anchors, classes


def timed(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def memory_case(name: str) -> dict:
    from jaxvis import saliency as sal

    model = random_ssd300()
    image, anchors, classes = inputs(model, 1)
    target = sal.detection(anchors, classes)
    method = sal.smoothgrad(samples=FLAGS.samples) if name == "smoothgrad" else sal.drise(masks=FLAGS.masks)
    points = FLAGS.samples if name == "smoothgrad" else FLAGS.masks
    chunk = sal.chunk_sizes(model, points, 1, (300, 300), backward=name == "smoothgrad")[0]
    t = time.perf_counter()
    e = sal.saliency(model, image, target, method)
    seconds = time.perf_counter() - t
    return {"case": name, "points": points, "chunk": chunk, "peak_rss_gb": max_rss_gb(), "seconds": seconds,
            "finite": bool((e.attributions == e.attributions).all())}


def torch_cams(tmodel, x, anchors, classes, kinds=("odam", "gradcam", "gradient")):
    """ODAM, Grad-CAM and gradient maps for each detection with torch autograd, one backward each."""
    import torch
    import torch.nn.functional as F

    out = {k: [] for k in kinds}
    body = tmodel.backbone
    for kind in out:
        if kind == "gradient":
            xt = x.clone().requires_grad_(True)
            head = tmodel.head(list(body(xt).values()))
        else:  # the backward pass only needs to reach conv4_3, as jaxvis's does
            with torch.no_grad():
                x4 = body.features(x)
            x4.requires_grad_(True)
            feats = [body.scale_weight.view(1, -1, 1, 1) * F.normalize(x4)]
            y = x4
            for block in body.extra:
                y = block(y)
                feats.append(y)
            for f in feats:
                f.retain_grad()
            head = tmodel.head(feats)
        for a, c in zip(anchors, classes):
            if kind == "gradient":
                xt.grad = None
                head["cls_logits"][0, a, c].backward(retain_graph=True)
                out[kind].append(xt.grad[0].abs().amax(0))
                continue
            for f in feats:
                f.grad = None
            head["cls_logits"][0, a, c].backward(retain_graph=True)
            total = 0
            for f in feats:
                g, act = f.grad[0], f[0].detach()
                cam = (g * act).sum(0) if kind == "odam" else (g.mean((1, 2))[:, None, None] * act).sum(0)
                cam = F.interpolate(torch.relu(cam)[None, None], size=x.shape[2:], mode="bilinear",
                                    align_corners=False)[0, 0]
                total = total + (cam / cam.max() if cam.max() > 0 else cam)
            out[kind].append(total)
    return out


def cams_case() -> dict:
    import numpy as np
    import torch

    from converters.torch_models import torch_ssd300
    from jaxvis import saliency as sal

    model = random_ssd300()
    image, anchors, classes = inputs(model, FLAGS.detections)
    target = sal.detection(anchors, classes)
    x = np.asarray(model.preprocess(image))
    row = {"case": "cams", "detections": FLAGS.detections}
    for name, method in (("odam", sal.odam("sources")), ("gradcam", sal.gradcam()), ("gradient", sal.gradient())):
        row[f"jaxvis_{name}_s"] = timed(lambda: sal.saliency(model, x, target, method, preprocess=False), FLAGS.reps)
    tmodel = torch_ssd300(model).requires_grad_(False)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy())
    for name in ("odam", "gradcam", "gradient"):
        row[f"torch_{name}_s"] = timed(lambda: torch_cams(tmodel, xt, anchors[0].tolist(), classes[0].tolist(), (name,)),
                                       FLAGS.reps)
    row["peak_rss_gb"] = max_rss_gb()
    return row


def torch_rise_masks(n: int, h: int, w: int, cell: int = 16, p: float = 0.5, generator=None):
    """n RISE masks (n, H, W) with torch: grids kept with probability p, up-sampled bilinearly by ``cell``,
    cropped at random shifts of 0 ... cell-1 pixels."""
    import torch
    import torch.nn.functional as F

    gh, gw = -(-h // cell) + 1, -(-w // cell) + 1
    grid = (torch.rand(n, 1, gh, gw, generator=generator) < p).float()
    up = F.interpolate(grid, size=(gh * cell, gw * cell), mode="bilinear", align_corners=False)
    shifts = torch.randint(0, cell, (n, 2), generator=generator)
    return torch.stack([up[i, 0, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(shifts.tolist())])


def torch_drise(tmodel, model, x, anchor, cls, masks: int, chunk: int, cell: int = 16, p: float = 0.5, seed: int = 0,
                mask_fn=None):
    """D-RISE with torch: masks in batches of ``chunk`` (``torch_rise_masks``, or ``mask_fn(start, n)`` ->
    (n, H, W)), the pre-NMS proposals of each masked input, IoU x cosine x objectness against the target
    detection (its box and foreground probabilities on the clean input). Returns (the target's similarity
    on the clean input, the map (H, W))."""
    import torch
    from torchvision.ops import box_iou

    g = torch.Generator().manual_seed(seed)
    anchors = torch.tensor(model.anchors)
    h, w = x.shape[2:]
    mask_fn = mask_fn or (lambda start, n: torch_rise_masks(n, h, w, cell, p, g))

    def props(inp):
        head = tmodel.head(list(tmodel.backbone(inp).values()))
        boxes = torch.stack([tmodel.box_coder.decode_single(r, anchors) for r in head["bbox_regression"]])
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w),
                             boxes[..., 3].clamp(0, h)], -1)
        return boxes, torch.softmax(head["cls_logits"], -1)

    def similarity(boxes, probs):
        fg = probs[..., 1:] / probs[..., 1:].norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.stack([(box_iou(tb, boxes[i])[0] * (fg[i] @ tv) * (1 - probs[i, :, 0])).max()
                            for i in range(len(boxes))])

    with torch.no_grad():
        boxes, probs = props(x)
        tb, tv = boxes[0, anchor][None], probs[0, anchor, 1:]
        tv = tv / tv.norm().clamp_min(1e-12)
        clean = similarity(boxes, probs)[0]
        total = torch.zeros(h, w)
        for start in range(0, masks, chunk):
            n = min(chunk, masks - start)
            m = mask_fn(start, n)
            s = similarity(*props(x * m[:, None]))
            total += (s[:, None, None] * m).sum(0)
    return clean, total / (masks * p)


def drise_case() -> dict:
    import numpy as np
    import torch

    from converters.torch_models import torch_ssd300
    from jaxvis import saliency as sal

    model = random_ssd300()
    image, anchors, classes = inputs(model, 1)
    x = np.asarray(model.preprocess(image))
    chunk = FLAGS.mask_chunk or sal.chunk_sizes(model, FLAGS.masks, 1, (300, 300), backward=False)[0]
    method = sal.drise(masks=FLAGS.masks, chunk=chunk)
    row = {"case": "drise", "masks": FLAGS.masks, "chunk": chunk}
    row["jaxvis_s"] = timed(lambda: sal.saliency(model, x, sal.detection(anchors, classes), method, preprocess=False),
                            FLAGS.reps)
    tmodel = torch_ssd300(model).requires_grad_(False)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy())
    row["torch_s"] = timed(lambda: torch_drise(tmodel, model, xt, int(anchors[0, 0]), int(classes[0, 0]),
                                               FLAGS.masks, chunk), FLAGS.reps)
    row["peak_rss_gb"] = max_rss_gb()
    return row


def child(case: str) -> dict:
    if case in ("smoothgrad", "drise_memory"):
        return memory_case(case)
    if case == "cams":
        return cams_case()
    if case == "drise":
        return drise_case()
    raise app.UsageError(f"unknown case {case!r}; known: smoothgrad, drise_memory, cams, drise")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.case:
        print(json.dumps(child(FLAGS.case)))
        return
    passed = [f"--samples={FLAGS.samples}", f"--masks={FLAGS.masks}", f"--detections={FLAGS.detections}",
              f"--reps={FLAGS.reps}", f"--mask_chunk={FLAGS.mask_chunk}"]
    rows = []
    for case in FLAGS.cases:
        proc = subprocess.run([sys.executable, "-m", "experiments.bench_explain", f"--case={case}", *passed],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"case {case} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
        if FLAGS.json_out:
            with open(FLAGS.json_out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    define_flags()
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
