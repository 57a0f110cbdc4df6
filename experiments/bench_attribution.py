r"""Speed of the attribution methods: jaxvis against Captum doing the same work on the model's torch twin.

  python -m experiments.bench_attribution --model classifier --reps 3       # 32 images x 4 classes, every method
  python -m experiments.bench_attribution --model vgg16 --methods gradient,integrated,occlusion --reps 3
  python -m experiments.bench_attribution --tiny --model classifier --methods gradient,deeplift,occlusion --reps 1
                                                                            # smoke run (2 images x 2 classes)

Models: ``classifier``, the shipped shapes classifier (64x64, six classes), and ``vgg16``, torchvision's VGG16
layout with random weights (224x224, as experiments/bench.py builds it). The torch twin is
``converters.torch_models.torch_vgg`` of the same weights, float32 on both sides, its rectifiers not in place
(Captum hooks them) and its weights frozen. --images random images in [0, 1], preprocessed once: both sides
attribute the network input (jaxvis with ``preprocess=False``), so references, baselines and noise are in
network-input units on both. Each image is explained for --targets classes at once.

Each row is one method of ``jaxvis.cli.METHOD_NAMES``, made by ``jaxvis.cli.attribution_method`` with this
script's numbers, against its Captum counterpart given the same work:

- gradient: Saliency(abs=False); grad_x_input: InputXGradient; guided_backprop: GuidedBackprop; deconvnet:
  Deconvolution; lrp_epsilon: LRP (its default epsilon rule, as jaxvis's);
- smoothgrad: NoiseTunnel(Saliency) "smoothgrad" with the same --samples and stdevs = --noise x the batch's
  range (jaxvis: each image's range);
- integrated: IntegratedGradients, --steps, "riemann_middle", zero baseline;
- guided_gradcam: GuidedGradCam on the rectifier after the last convolution (conv5_2 / conv5_3);
- deeplift: DeepLift against the zero input; deeplift_shap: DeepLiftShap against the black and the white image
  (preprocessed); gradient_shap: GradientShap against the same two with --samples draws and no noise (jaxvis's
  default). The DeepLift twins read a copy of the input at each max-pool, so that Captum keeps the pool's rule
  (see tests/test_deeplift.py);
- occlusion: Occlusion with a --window square at --stride; feature_ablation: FeatureAblation;
  shapley_sampling: ShapleyValueSampling (--samples orders); kernel_shap: KernelShap and lime: Lime as it comes
  (sklearn's Lasso(alpha=0.01), as jaxvis's default, and the cosine kernel of width 1) (--surrogate_samples
  coalitions): all with a grid of --cell squares as features and baseline 0.

jaxvis computes every target of every image in one call. Captum runs as its users run it: ``batched`` rows one
call per target column with the images as a batch and a target per image; ``per image`` rows (kernel_shap,
lime, whose Captum API takes one example per call) one call per image and target. Times are medians of --reps
runs after a warm-up call (jaxvis's compiles); torch keeps its default thread count. On vgg16, --torch_batch
bounds Captum's points per pass (integrated's internal batch, smoothgrad's samples per batch, the images per
call of gradient_shap and deeplift_shap); jaxvis sizes its chunks to the free memory itself. ``agreement`` is
max|jaxvis - Captum| / max|Captum| over the first image's targets, in float32 (``zero map`` where Captum's
maps of it are all zero; the JSON's ``agreement_p99`` is the 99th percentile of the pixels' differences: on
the random VGG16 a few pixels differ by ~1e-2 of the maximum where a rectifier or max-pool switch flips
between the two float32 convolutions, the logits agreeing to ~3e-6); ``random`` where the two
draw different noise, orders or coalitions (smoothgrad, gradient_shap, shapley_sampling, kernel_shap, lime;
tests/test_deeplift.py and tests/test_surrogates.py check those with Captum's own draws).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
import warnings

from absl import app, flags

FLAGS = flags.FLAGS

METHODS = ("gradient", "grad_x_input", "smoothgrad", "integrated", "guided_backprop", "deconvnet", "guided_gradcam",
           "deeplift", "deeplift_shap", "gradient_shap", "lrp_epsilon", "occlusion", "feature_ablation",
           "shapley_sampling", "kernel_shap", "lime")
RANDOM = ("smoothgrad", "gradient_shap", "shapley_sampling", "kernel_shap", "lime")
PER_IMAGE = ("kernel_shap", "lime")
TINY = {"images": 2, "targets": 2, "samples": 2, "steps": 2, "surrogate_samples": 4, "cell": 32, "window": 32,
        "stride": 32}


def define_flags() -> None:
    flags.DEFINE_enum("model", "classifier", ["classifier", "vgg16"], "The model explained.")
    flags.DEFINE_list("methods", list(METHODS), "Methods to time (jaxvis.cli.METHOD_NAMES).")
    flags.DEFINE_integer("images", 32, "Images explained.")
    flags.DEFINE_integer("targets", 4, "Classes explained per image.")
    flags.DEFINE_integer("reps", 3, "Timed repetitions (medians reported).")
    flags.DEFINE_integer("samples", 16, "smoothgrad and gradient_shap samples, shapley_sampling orders.")
    flags.DEFINE_float("noise", 0.15, "smoothgrad noise, a fraction of the input's range.")
    flags.DEFINE_integer("steps", 16, "integrated steps.")
    flags.DEFINE_integer("surrogate_samples", 64, "kernel_shap and lime coalitions.")
    flags.DEFINE_integer("cell", 0, "Feature grid cell in pixels (0: a quarter of the input side).")
    flags.DEFINE_integer("window", 0, "Occlusion window in pixels (0: a quarter of the input side).")
    flags.DEFINE_integer("stride", 0, "Occlusion stride in pixels (0: half the window).")
    flags.DEFINE_integer("torch_batch", 0, "Captum's points per forward pass: integrated's and smoothgrad's "
                                           "batch sizes; gradient_shap and deeplift_shap, whose Captum API has "
                                           "none, get the images in groups that fit (0: all at once on the "
                                           "classifier, 32 on vgg16).")
    flags.DEFINE_bool("tiny", False, "Smoke run: 2 images x 2 targets and tiny numbers (flags given still count).")
    flags.DEFINE_string("json_out", None, "Also append the JSON lines to this file.")


def settings() -> dict:
    """The run's numbers: the flags, with --tiny's values where the flag was not given, and the sizes that
    default to the input side filled in."""
    names = ("images", "targets", "reps", "samples", "noise", "steps", "surrogate_samples", "cell", "window",
             "stride", "torch_batch")
    s = {n: FLAGS[n].value for n in names}
    if FLAGS.tiny:
        s.update({n: v for n, v in TINY.items() if not FLAGS[n].present})
    side = 64 if FLAGS.model == "classifier" else 224
    s["cell"] = s["cell"] or side // 4
    s["window"] = s["window"] or side // 4
    s["stride"] = s["stride"] or max(1, s["window"] // 2)
    s["torch_batch"] = s["torch_batch"] or (1 << 30 if FLAGS.model == "classifier" else 32)
    s["side"] = side
    return s


def random_vgg16():
    """VGG16 at 224x224 with the benchmarks' random weights (``bench_explain.random_model``)."""
    from experiments import bench_explain
    from jaxvis import models

    return bench_explain.random_model(models.arch_spec("vgg16"))


def build(model_name: str):
    """(jaxvis model, its float32 torch twin with rectifiers not in place and frozen weights, last conv's name)."""
    import torch

    import jaxvis
    from converters.torch_models import torch_vgg

    if model_name == "classifier":
        model, layer = jaxvis.load(jaxvis.assets.path("classifier")), "conv5_2"
    else:
        model, layer = random_vgg16(), "conv5_3"
    net = torch_vgg(model).float().requires_grad_(False)
    for m in net.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    return model, net, layer


def pools_read_copies(net):
    """Each max-pool of ``net`` reads a copy of its input, so that Captum's DeepLift keeps the pool's rule (its
    hooks on a rectifier's output and on the pool's input would otherwise share one tensor)."""
    import torch

    for m in net.modules():
        if isinstance(m, torch.nn.MaxPool2d):
            m.register_forward_pre_hook(lambda module, inputs: (inputs[0].clone(),))
    return net


def jaxvis_method(name: str, s: dict, layer: str, refs):
    """The method ``jaxvis.cli`` makes of ``name`` with the run's numbers; the references of deeplift_shap and
    gradient_shap (the black and the white image) replaced by the network inputs they preprocess to."""
    from jaxvis.cli import attribution_method

    numbers = {"samples": s["samples"], "noise": s["noise"], "steps": s["steps"], "cell": s["cell"],
               "window": s["window"], "stride": s["stride"]}
    if name in ("kernel_shap", "lime"):
        numbers["samples"] = s["surrogate_samples"]
    if name == "guided_gradcam":
        numbers["layer"] = layer
    method = attribution_method(name, **numbers)
    if name in ("deeplift_shap", "gradient_shap"):
        method = dataclasses.replace(method, baselines=refs)
    return method


def grid_mask(side: int, cell: int):
    """Captum's feature mask (1, 1, H, W) of a grid of ``cell`` squares numbered row by row, as jaxvis's."""
    import numpy as np
    import torch

    rows = np.arange(side) // cell
    per_row = -(-side // cell)
    return torch.tensor((rows[:, None] * per_row + rows[None, :])[None, None], dtype=torch.int64)


def images_per_call(name: str, s: dict, n: int) -> int:
    """Captum's images per call of a batched method: all, but for the methods that expand each image to several
    points with no batch size of their own (gradient_shap: its samples; deeplift_shap: the two references, for
    the input and the reference pass), as many as --torch_batch points allow."""
    expand = {"gradient_shap": s["samples"], "deeplift_shap": 4}.get(name, 1)
    return max(1, min(n, s["torch_batch"] // expand))


def captum_side(name: str, s: dict, net, dl_net, x, refs, classes):
    """A function running Captum's counterpart of ``name`` on every image and target; it returns the first
    image's maps (K, H, W, 3) as numpy."""
    import numpy as np
    import torch
    from captum.attr import (LRP, Deconvolution, DeepLift, DeepLiftShap, FeatureAblation, GradientShap,
                             GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, KernelShap, Lime,
                             NoiseTunnel, Occlusion, Saliency, ShapleyValueSampling)

    xt = torch.tensor(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
    rt = torch.tensor(np.ascontiguousarray(np.asarray(refs).transpose(0, 3, 1, 2)))
    n = xt.shape[0]
    mask = grid_mask(s["side"], s["cell"])
    relus = [m for m in net.features if isinstance(m, torch.nn.ReLU)]     # [-1]: after the last convolution
    chunk = max(1, s["torch_batch"] // n)
    group = images_per_call(name, s, n)
    window = (3, s["window"], s["window"])
    strides = (3, s["stride"], s["stride"])
    calls = {
        "gradient": lambda: (Saliency(net), {"abs": False}),
        "grad_x_input": lambda: (InputXGradient(net), {}),
        "smoothgrad": lambda: (NoiseTunnel(Saliency(net)), {
            "nt_type": "smoothgrad", "nt_samples": s["samples"], "nt_samples_batch_size": min(chunk, s["samples"]),
            "stdevs": float(s["noise"] * (xt.max() - xt.min())), "abs": False}),
        "integrated": lambda: (IntegratedGradients(net), {
            "n_steps": s["steps"], "method": "riemann_middle", "internal_batch_size": chunk * n}),
        "guided_backprop": lambda: (GuidedBackprop(net), {}),
        "deconvnet": lambda: (Deconvolution(net), {}),
        "guided_gradcam": lambda: (GuidedGradCam(net, relus[-1]), {}),
        "deeplift": lambda: (DeepLift(dl_net), {}),
        "deeplift_shap": lambda: (DeepLiftShap(dl_net), {"baselines": rt}),
        "gradient_shap": lambda: (GradientShap(net), {"baselines": rt, "n_samples": s["samples"]}),
        "lrp_epsilon": lambda: (LRP(net), {}),
        "occlusion": lambda: (Occlusion(net), {"sliding_window_shapes": window, "strides": strides,
                                               "baselines": 0.0}),
        "feature_ablation": lambda: (FeatureAblation(net), {"feature_mask": mask, "baselines": 0.0}),
        "shapley_sampling": lambda: (ShapleyValueSampling(net), {"feature_mask": mask, "n_samples": s["samples"],
                                                                 "baselines": 0.0}),
        "kernel_shap": lambda: (KernelShap(net), {"feature_mask": mask, "n_samples": s["surrogate_samples"],
                                                  "baselines": 0.0}),
        "lime": lambda: (Lime(net), {
            "feature_mask": mask, "n_samples": s["surrogate_samples"], "baselines": 0.0}),
    }
    grads = name not in ("occlusion", "feature_ablation", "shapley_sampling", "kernel_shap", "lime")

    def run():
        explainer, kwargs = calls[name]()
        first = []
        with warnings.catch_warnings():        # Captum warns that it hooks the rectifiers, which is the point
            warnings.simplefilter("ignore")
            if name in PER_IMAGE:
                for i in range(n):
                    for k in range(classes.shape[1]):
                        a = explainer.attribute(xt[i:i + 1], target=int(classes[i, k]), **kwargs)
                        first += [a[0]] if i == 0 else []
            else:
                for k in range(classes.shape[1]):
                    for i in range(0, n, group):
                        inp = xt[i:i + group].clone().requires_grad_(True) if grads else xt[i:i + group]
                        if name == "lrp_epsilon":
                            explainer = LRP(net)     # Captum's LRP keeps state of its last call
                        a = explainer.attribute(inp, target=[int(c) for c in classes[i:i + group, k]], **kwargs)
                        first += [a[0]] if i == 0 else []
        return torch.stack(first).detach().numpy().transpose(0, 2, 3, 1)

    return run


def timed(fn, reps: int):
    """(median seconds of ``reps`` runs after a warm-up run, the warm-up's result)."""
    out = fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench_method(name: str, s: dict, model, net, dl_net, layer: str, x, refs, classes) -> dict:
    import numpy as np

    from jaxvis import saliency as sal

    method = jaxvis_method(name, s, layer, refs)
    targets = sal.class_score(classes)
    jx_s, got = timed(lambda: np.asarray(method.attribute(model, x, targets, preprocess=False).attributions),
                      s["reps"])
    cap_s, want = timed(captum_side(name, s, net, dl_net, x, refs, classes), s["reps"])
    maps = classes.size
    agreement_p99 = None
    if name in RANDOM:
        agreement = "random"
    else:
        diff = np.abs(got[0].astype(np.float32) - want) / max(float(np.abs(want).max()), 1e-30)
        agreement = float(diff.max()) if np.abs(want).max() > 0 else "zero map"
        agreement_p99 = float(np.quantile(diff, 0.99))
    return {"model": FLAGS.model, "method": name, "images": int(classes.shape[0]), "targets": int(classes.shape[1]),
            "captum_calls": calls_text(name, s, int(classes.shape[0])),
            "jaxvis_s": jx_s, "captum_s": cap_s, "ratio": cap_s / jx_s, "jaxvis_maps_per_s": maps / jx_s,
            "captum_maps_per_s": maps / cap_s, "agreement": agreement, "agreement_p99": agreement_p99,
            "captum_ref_max": float(np.abs(want).max())}


def calls_text(name: str, s: dict, n: int) -> str:
    if name in PER_IMAGE:
        return "per image"
    group = images_per_call(name, s, n)
    return "batched" if group == n else f"batched by {group}"


def table(rows: list) -> str:
    lines = ["| method | jaxvis s | Captum s | ratio | jaxvis maps/s | Captum maps/s | Captum calls | agreement |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        agree = r["agreement"] if isinstance(r["agreement"], str) else f"{r['agreement']:.1e}"
        lines.append(f"| {r['method']} | {r['jaxvis_s']:.3f} | {r['captum_s']:.3f} | {r['ratio']:.1f} | "
                     f"{r['jaxvis_maps_per_s']:.1f} | {r['captum_maps_per_s']:.1f} | {r['captum_calls']} | {agree} |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from experiments._launch import quiet_logs

    quiet_logs()
    unknown = [m for m in FLAGS.methods if m not in METHODS]
    if unknown:
        raise app.UsageError(f"unknown methods {', '.join(unknown)}; methods: {', '.join(METHODS)}")
    import copy

    import numpy as np

    s = settings()
    model, net, layer = build(FLAGS.model)
    dl_net = pools_read_copies(copy.deepcopy(net))
    rng = np.random.default_rng(0)
    images = rng.random((s["images"], s["side"], s["side"], 3), dtype=np.float32)
    x = np.asarray(model.preprocess(images), np.float32)
    refs = np.asarray(model.preprocess(np.broadcast_to(np.array([0.0, 1.0], np.float32)[:, None, None, None],
                                                       (2, s["side"], s["side"], 3))), np.float32)
    n_classes = model.spec.config["num_classes"]
    # image i explains classes C-1-i, C-2-i, ... (mod C): on noise, the shipped classifier's last-layer Grad-CAM
    # of circle and square (0 and 1) is zero, so the first image starts with classes whose maps are not
    classes = ((n_classes - 1 - np.arange(s["targets"])[None] - np.arange(s["images"])[:, None]) % n_classes)
    classes = classes.astype(np.int32)
    rows = []
    for name in FLAGS.methods:
        row = bench_method(name, s, model, net, dl_net, layer, x, refs, classes)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if FLAGS.json_out:
            with open(FLAGS.json_out, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(f"\n{FLAGS.model}: {s['images']} images x {s['targets']} targets, medians of {s['reps']} runs\n")
    print(table(rows), flush=True)


if __name__ == "__main__":
    define_flags()
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
