"""Checks that need an accelerator (a GPU or a TPU): the ports, the engine, saliency and detection give
on it what they give on the CPU (which the other tests hold to torchvision and torch autograd), and the
bfloat16 compute path runs there. Skipped where jax sees only CPUs; ``experiments/gpu_check.sh`` runs
them on a GPU machine (``pytest -m accelerator``).

Accelerators compute float32 convolutions and products with TF32 or bfloat16 passes at jax's default
precision, so the comparisons that hold the accelerator to float32 tolerances run under
``jax.default_matmul_precision("highest")``.
"""

import jax
import numpy as np
import pytest
import torch

import jaxvis
from jaxvis import objectives as O
from jaxvis import assets, engine, saliency as sal
from jaxvis.data import shapes
from torch_ref import nchw

ACCELERATORS = [d for d in jax.devices() if d.platform != "cpu"]
pytestmark = [
    pytest.mark.accelerator,
    pytest.mark.skipif(not ACCELERATORS, reason="needs a GPU or TPU: jax sees only CPU devices here"),
]


def _on(device, fn, *args):
    """``fn(*args)`` jitted and run on ``device``, back as numpy."""
    args = jax.device_put(args, device)
    return jax.device_get(jax.jit(fn)(*args))


def _cpu():
    return jax.devices("cpu")[0]


def test_vgg_logits_on_the_accelerator_match_torchvision(converted_vgg):
    tmodel, _, path = converted_vgg("vgg11_bn")
    model = jaxvis.load(path)
    x = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        logits, _ = _on(ACCELERATORS[0], model.apply, model.params, x)
    with torch.no_grad():
        ref = tmodel(nchw(x)).numpy()
    assert np.abs(logits - ref).max() <= 1e-4 * np.abs(ref).max()


def test_ssd_detections_on_the_accelerator_equal_the_cpu():
    model = jaxvis.load(assets.path("detector"))
    images = shapes.detection_set(7, 4)[0]
    with jax.default_matmul_precision("highest"):
        gpu = _on(ACCELERATORS[0], model.detect, model.params, images)
    cpu = _on(_cpu(), model.detect, model.params, images)
    assert np.array_equal(gpu["valid"], cpu["valid"])
    valid = cpu["valid"]
    assert valid.sum() > 0
    np.testing.assert_array_equal(gpu["labels"][valid], cpu["labels"][valid])
    np.testing.assert_allclose(gpu["scores"][valid], cpu["scores"][valid], atol=1e-4)
    np.testing.assert_allclose(gpu["boxes"][valid], cpu["boxes"][valid], atol=1e-2)


def _class_model_sweep(model, devices, compute_dtype="float32", steps=20, loop="auto"):
    sweep = engine.Sweep(targets=list(range(6)), lrs=[0.1], losses=[O.score() + O.sq()], seeds=[0])
    eng = engine.Engine(model, sweep.terms, steps=steps, devices=devices,
                        compute_dtype=compute_dtype, loop=loop)
    return eng, eng.run(sweep, progress=False)


def test_engine_on_the_accelerator_equals_the_cpu_engine():
    """The scan on the device and the host loop on the CPU give the same class models."""
    model = jaxvis.load(assets.path("classifier"))
    with jax.default_matmul_precision("highest"):
        eng, gpu = _class_model_sweep(model, ACCELERATORS[:1])
    assert eng.loop == "scan"
    cpu_eng, cpu = _class_model_sweep(model, [_cpu()], loop="host")
    assert cpu_eng.loop == "host"
    scale = np.abs(cpu.images).max()
    assert np.abs(gpu.images - cpu.images).max() <= 1e-3 * scale
    np.testing.assert_allclose(gpu.final_prob, cpu.final_prob, atol=1e-3)
    np.testing.assert_allclose(gpu.loss, cpu.loss, rtol=1e-3, atol=1e-4)


def test_bfloat16_compute_on_the_accelerator_follows_float32():
    """bfloat16 runs the network in bfloat16: the same first loss to bfloat16's precision, and every class
    model that float32 brings to its class gets there in bfloat16 too (the trajectories themselves part)."""
    model = jaxvis.load(assets.path("classifier"))
    _, f32 = _class_model_sweep(model, ACCELERATORS[:1], steps=50)
    _, bf16 = _class_model_sweep(model, ACCELERATORS[:1], "bfloat16", steps=50)
    assert np.all(np.isfinite(bf16.images)) and np.all(bf16.diverged_step < 0)
    # Step 0 starts from the same (zero) image: the losses agree to bfloat16's 8 significant bits.
    np.testing.assert_allclose(bf16.loss[0], f32.loss[0], rtol=2e-2, atol=2e-2)
    assert np.all(bf16.loss[-1] < bf16.loss[0])
    reached = f32.final_prob > 0.5
    assert reached.sum() >= 3 and np.all(bf16.final_prob[reached] > 0.5)


def test_saliency_on_the_accelerator_equals_the_cpu():
    model = jaxvis.load(assets.path("classifier"))
    images, labels, _ = shapes.classification_set(11, 6)
    targets = sal.class_score(labels.reshape(6, 1))
    with jax.default_matmul_precision("highest"), jax.default_device(ACCELERATORS[0]):
        gpu = sal.saliency(model, images, targets).reduce()
    with jax.default_device(_cpu()):
        cpu = sal.saliency(model, images, targets).reduce()
    assert np.abs(gpu - cpu).max() <= 1e-3 * np.abs(cpu).max()


@pytest.mark.skipif(len(ACCELERATORS) < 2, reason="needs several accelerators")
def test_sharded_sweep_over_all_accelerators_equals_one():
    model = jaxvis.load(assets.path("classifier"))
    with jax.default_matmul_precision("highest"):
        _, one = _class_model_sweep(model, ACCELERATORS[:1])
        _, all_ = _class_model_sweep(model, ACCELERATORS)
    assert np.abs(one.images - all_.images).max() <= 1e-4 * np.abs(one.images).max()
