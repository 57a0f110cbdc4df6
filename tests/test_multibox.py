"""The matcher and MultiBox loss against torchvision's SSD.compute_loss, its gradient against torch
autograd, and vmap over target boxes."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

import jaxvis
from jaxvis import boxes as bx
from jaxvis import multibox as mb

TARGETS = [  # boxes in the 300x300 input's pixels, COCO labels
    ([[30.0, 40.0, 200.0, 260.0]], [19]),
    ([[0.0, 0.0, 300.0, 300.0], [75.0, 75.0, 225.0, 225.0], [10.0, 200.0, 60.0, 290.0], [150.0, 20.0, 290.0, 120.0]],
     [19, 1, 62, 3]),
    ([], []),
]


@pytest.fixture(scope="module")
def ssd(converted_ssd):
    tmodel, _, path = converted_ssd
    return tmodel, jaxvis.load(path)


def torch_loss(tmodel, head, anchors, targets):
    """What SSD.forward does in training mode once the head has run."""
    matched = []
    for a, t in zip(anchors, targets):
        if t["boxes"].numel() == 0:
            matched.append(torch.full((a.size(0),), -1, dtype=torch.int64))
        else:
            matched.append(tmodel.proposal_matcher(box_iou(t["boxes"], a)))
    return tmodel.compute_loss(targets, head, anchors, matched)


def torch_targets(items, dtype=torch.float32):
    return [{"boxes": torch.tensor(b, dtype=dtype).reshape(-1, 4), "labels": torch.tensor(lab, dtype=torch.int64)}
            for b, lab in items]


@pytest.mark.slow  # SSD300 at full size; the matcher's and the hard negatives' tests below stay
@pytest.mark.parametrize("which", [[0], [1], [2], [0, 1, 2]], ids=["one", "several", "none", "batch"])
def test_loss_equals_torchvision_compute_loss(ssd, which):
    tmodel, model = ssd
    rng = np.random.default_rng(0)
    b = len(which)
    # Head outputs shared by both sides: the loss alone is under test here.
    cls = rng.standard_normal((b, 8732, 91)).astype(np.float32) * 2
    reg = rng.standard_normal((b, 8732, 4)).astype(np.float32)
    items = [TARGETS[i] for i in which]
    anchors = torch.from_numpy(model.anchors)
    want = torch_loss(tmodel, {"cls_logits": torch.from_numpy(cls), "bbox_regression": torch.from_numpy(reg)},
                      [anchors] * b, torch_targets(items))
    gt_boxes, gt_labels, gt_valid = mb.pad_targets([i[0] for i in items], [i[1] for i in items], max_boxes=6)
    got = jax.jit(mb.multibox_loss)(cls, reg, jnp.asarray(model.anchors), gt_boxes, gt_labels, gt_valid)
    for key in ("bbox_regression", "classification"):
        w = want[key].item()
        np.testing.assert_allclose(float(got[key]), w, rtol=1e-5, atol=1e-7, err_msg=key)
    if which == [2]:
        assert float(got["total"]) == 0.0
    else:
        assert float(got["bbox_regression"]) > 0 and float(got["classification"]) > 0


@pytest.mark.slow  # SSD300 at full size in float64
def test_input_gradient_matches_torch_autograd(ssd):
    """d(MultiBox loss)/d(image) through the whole network, against torch autograd. In float64 on both
    sides: a float32 backward pass through max-pools routes the gradient of near-ties by rounding (see
    test_vgg_port), which no implementation controls."""
    tmodel, model = ssd
    x = np.random.default_rng(4).standard_normal((1, 300, 300, 3)) * 60.0
    items = [TARGETS[1]]
    t64 = copy.deepcopy(tmodel).double()
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    feats = list(t64.backbone(xt).values())
    head = t64.head(feats)
    anchors = t64.anchor_generator(ImageList(xt, [(300, 300)]), feats)
    loss = torch_loss(t64, head, anchors, torch_targets(items, torch.float64))
    (loss["bbox_regression"] + loss["classification"]).backward()
    want = xt.grad.numpy().transpose(0, 2, 3, 1)

    gt_boxes, gt_labels, gt_valid = mb.pad_targets([items[0][0]], [items[0][1]])
    with jax.enable_x64(True):
        module = model.module.clone(dtype=jnp.float64)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params)
        # torchvision computes its box sizes in float32 even for a float64 model; take its anchors so that
        # the gradient alone is compared (anchors are compared in test_ssd_port).
        anchors64 = jnp.asarray(anchors[0].detach().numpy())

        def objective(im):
            out, _ = module.apply(params, im)
            terms = mb.multibox_loss(out["cls_logits"], out["bbox_regression"], anchors64,
                                     gt_boxes.astype(jnp.float64), gt_labels, gt_valid)
            return terms["total"]

        value, grad = jax.jit(jax.value_and_grad(objective))(jnp.asarray(x))
        grad = np.asarray(grad)
    np.testing.assert_allclose(float(value), (loss["bbox_regression"] + loss["classification"]).item(), rtol=1e-9)
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(grad, want, rtol=0, atol=1e-4 * np.abs(want).max())


@pytest.mark.slow  # SSD300 head outputs at full size
def test_vmap_over_target_boxes_equals_separate_calls(ssd):
    _, model = ssd
    x = model.preprocess(np.random.default_rng(5).random((300, 300, 3), dtype=np.float32))[None]
    rng = np.random.default_rng(6)
    corners = rng.uniform(0, 150, (8, 2))
    sizes = rng.uniform(40, 150, (8, 2))
    targets = np.concatenate([corners, corners + sizes], 1).astype(np.float32)[:, None, None, :]  # (8, 1, 1, 4)
    labels = jnp.full((1, 1), 19, jnp.int32)
    valid = jnp.ones((1, 1), bool)

    def total(params, image, box):
        return model.loss(params, image, box, labels, valid)["total"]

    # Params and image are arguments, not closed-over constants, which XLA would try to constant-fold.
    batched = jax.jit(jax.vmap(total, in_axes=(None, None, 0)))(model.params, x, jnp.asarray(targets))
    single = jax.jit(total)
    separate = np.array([float(single(model.params, x, jnp.asarray(t))) for t in targets])
    assert batched.shape == (8,) and len(set(np.round(separate, 4))) == 8
    np.testing.assert_allclose(np.asarray(batched), separate, rtol=1e-5)


def test_matcher_forces_best_anchor_and_later_box_wins():
    anchors = jnp.asarray([[0, 0, 10, 10], [100, 100, 110, 110], [0, 0, 100, 100], [50, 50, 60, 60]], jnp.float32)
    gt = jnp.asarray([[0, 0, 30, 30],        # best IoU 0.11 with anchor 0: forced despite < 0.5
                      [0, 0, 95, 95],        # IoU 0.9 with anchor 2
                      [99, 99, 111, 111],    # best anchor 1
                      [100, 100, 112, 112],  # best anchor 1 too: the later box wins it
                      [0, 0, 1, 1]], jnp.float32)
    valid = jnp.asarray([True, True, True, True, False])
    np.testing.assert_array_equal(np.asarray(mb.match(gt, valid, anchors)), [0, 3, 1, -1])
    assert np.all(np.asarray(mb.match(gt, jnp.zeros(5, bool), anchors)) == -1)


def test_amdegroot_variant_differs_only_where_documented():
    rng = np.random.default_rng(7)
    anchors = jnp.asarray(bx.default_boxes([(4, 4)], (32, 32), [[2]], [0.3, 0.6], None))
    cls = jnp.asarray(rng.standard_normal((1, anchors.shape[0], 3)), jnp.float32)
    reg = jnp.asarray(rng.standard_normal((1, anchors.shape[0], 4)), jnp.float32)
    # A box that matches most anchors: 3 x positives exceeds the negatives, where the variants part.
    big = mb.pad_targets([[[0, 0, 32, 32]]], [[1]])
    small = mb.pad_targets([[[4, 4, 12, 12]]], [[2]])
    tv, am = mb.LossConfig(), mb.LossConfig.amdegroot()
    for target in (small,):
        a, b = mb.multibox_loss(cls, reg, anchors, *target, tv), mb.multibox_loss(cls, reg, anchors, *target, am)
        np.testing.assert_allclose(float(a["total"]), float(b["total"]), rtol=1e-6)
    a, b = mb.multibox_loss(cls, reg, anchors, *big, tv), mb.multibox_loss(cls, reg, anchors, *big, am)
    assert float(a["classification"]) > float(b["classification"])   # torchvision counts positives twice
    none = mb.pad_targets([[]], [[]])
    assert float(mb.multibox_loss(cls, reg, anchors, *none, tv)["total"]) == 0.0
    assert np.isnan(float(mb.multibox_loss(cls, reg, anchors, *none, am)["total"]))  # 0 / 0, as amdegroot


@pytest.mark.parametrize("values", ["random", "ties", "constant"])
def test_hard_negative_selection_is_the_first_k_of_a_stable_descending_sort(values):
    """One sort and a count of ties select what two stable argsorts select, ties by index (a zero image's
    losses tie at every anchor), positives (-inf) last."""
    rng = np.random.default_rng(3)
    v = {"random": rng.standard_normal(500), "ties": np.round(rng.standard_normal(500), 1),
         "constant": np.ones(500)}[values].astype(np.float32)
    v[rng.random(500) < 0.1] = -np.inf
    for k in (0, 1, 7, 120, 499, 500, 900):
        rank = np.argsort(np.argsort(-v, kind="stable"), kind="stable")
        np.testing.assert_array_equal(np.asarray(mb._first_ranks(jnp.asarray(v), k)), rank < k, err_msg=str(k))
