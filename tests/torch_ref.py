"""Reference networks built with torchvision (weights=None) and randomised so that a port that drops
or swaps biases, BatchNorm parameters or running statistics cannot pass."""

from __future__ import annotations

import numpy as np
import torch


def randomise_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Replaces the constant initial values torchvision uses (zero biases, unit BN scale, zero/one running
    statistics) with random ones, in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=g))
                module.bias.copy_(0.1 * torch.randn(c, generator=g))
                module.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                module.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return model.eval()


def torchvision_vgg(arch: str, seed: int = 0) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(seed)
    return randomise_(getattr(torchvision.models, arch)(weights=None), seed + 1)


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def torchvision_ssd(seed: int = 0) -> torch.nn.Module:
    """ssd300_vgg16 with random weights, biases and L2Norm scale, and a classification head tuned so that
    real detections appear: weights scaled down (scores neither saturate nor tie), background favoured,
    a few classes raised so that some boxes pass the 0.01 threshold with varied scores."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None)
    randomise_(model, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        model.backbone.scale_weight.copy_(20.0 + 2.0 * torch.randn(512, generator=g))
        for conv in model.head.classification_head.module_list:
            conv.weight.mul_(0.2)
            bias = conv.bias.view(-1, 91)  # (anchors, classes)
            bias[:, 0] += 4.0
            bias[:, (1, 3, 18, 19, 62)] += torch.linspace(0.0, 3.0, 5)
        for conv in model.head.regression_head.module_list:
            conv.weight.mul_(0.1)
    return model.eval()


def torch_model_from(spec, variables):
    """A torch twin of a jaxvis VGG (weights through the inverse converter remap), in eval mode."""
    import jaxvis
    from converters.torch_models import torch_vgg

    return torch_vgg(jaxvis.from_spec(spec, variables))


class TorchSSD(torch.nn.Module):
    """A torch twin of a jaxvis SSD of any config (tests/tiny.py's, the shipped detector's), laid out as
    torchvision's ``ssd300_vgg16`` (``backbone.features``, ``backbone.extra``, ``backbone.scale_weight``,
    ``head.classification_head.module_list``, ``head.regression_head.module_list``), so that the converter's
    inverse remap loads it. ``backbone(x)`` gives the source feature maps, ``head(maps)`` the head outputs."""

    def __init__(self, config):
        super().__init__()
        nn = torch.nn
        blocks, cin = config["blocks"], 3
        layers = []
        for b, widths in enumerate(blocks[:4], start=1):
            for w in widths:
                layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU()]
                cin = w
            if b < 4:
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=b == 3))
        conv5 = [nn.MaxPool2d(2, 2)]
        c4 = cin
        for w in blocks[4]:
            conv5 += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU()]
            cin = w
        d, fc = config["fc_dilation"], config["fc_width"]
        conv5.append(nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, fc, 3, padding=d, dilation=d), nn.ReLU(),
                                   nn.Conv2d(fc, fc, 1), nn.ReLU()))
        extra, cin, channels = [nn.Sequential(*conv5)], fc, [c4, fc]
        for mid, out, stride, pad in config["extras"]:
            extra.append(nn.Sequential(nn.Conv2d(cin, mid, 1), nn.ReLU(), nn.Conv2d(mid, out, 3, stride, pad), nn.ReLU()))
            cin = out
            channels.append(out)
        self.backbone = _Backbone(nn.Sequential(*layers), nn.ModuleList(extra), c4)
        k, per = config["num_classes"], config["anchors_per_location"]
        self.head = _Head([nn.Conv2d(c, a * k, 3, padding=1) for c, a in zip(channels, per)],
                          [nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(channels, per)], k)


class _Backbone(torch.nn.Module):
    def __init__(self, features, extra, channels):
        super().__init__()
        self.features, self.extra = features, extra
        self.scale_weight = torch.nn.Parameter(torch.ones(channels))

    def forward(self, x):
        x = self.features(x)
        maps = [self.scale_weight.view(1, -1, 1, 1) * torch.nn.functional.normalize(x)]
        for block in self.extra:
            x = block(x)
            maps.append(x)
        return {str(i): m for i, m in enumerate(maps)}


class _Head(torch.nn.Module):
    def __init__(self, cls, box, num_classes):
        super().__init__()
        self.classification_head = torch.nn.Module()
        self.classification_head.module_list = torch.nn.ModuleList(cls)
        self.regression_head = torch.nn.Module()
        self.regression_head.module_list = torch.nn.ModuleList(box)
        self.num_classes = num_classes

    def forward(self, maps):
        def rows(convs, k):
            out = []
            for conv, m in zip(convs, maps):
                r = conv(m)
                n, _, h, w = r.shape
                out.append(r.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k))
            return torch.cat(out, 1)

        return {"cls_logits": rows(self.classification_head.module_list, self.num_classes),
                "bbox_regression": rows(self.regression_head.module_list, 4)}


def torch_ssd(model) -> TorchSSD:
    """The torch twin of a jaxvis SSD ``model`` with its weights, in eval mode."""
    from converters import ssd as ssd_remap

    net = TorchSSD(model.spec.config)
    state = {k: torch.tensor(np.asarray(v)) for k, v in
             ssd_remap.to_torch(model.params, model.spec, layout="torchvision").items()}
    net.load_state_dict(state, strict=True)
    return net.eval()


def place_on_grid(cam: torch.Tensor, size, cell) -> torch.Tensor:
    """Bilinear resampling of an (h, w) map onto ``size`` with cell (i, j)'s centre at output pixel coordinates
    ((i + 0.5) * cell[0], (j + 0.5) * cell[1]) and the border cells' values beyond them (torch's
    ``grid_sample``, ``align_corners=False``, border padding)."""
    h, w = cam.shape
    ys = (torch.arange(size[0], dtype=cam.dtype) + 0.5) / cell[0]   # cell coordinates, cell i spans [i, i + 1)
    xs = (torch.arange(size[1], dtype=cam.dtype) + 0.5) / cell[1]
    gy, gx = torch.meshgrid(2 * ys / h - 1, 2 * xs / w - 1, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None]
    return torch.nn.functional.grid_sample(cam[None, None], grid, mode="bilinear", padding_mode="border",
                                           align_corners=False)[0, 0]


def torch_cams(tmodel, x, targets, size, steps, input_size, backbone=False) -> list[dict[tuple[str, str], np.ndarray]]:
    """Grad-CAM and ODAM of class-``c`` logits of default boxes ``a`` (``targets``: (a, c) pairs) with torch
    autograd, for a torchvision SSD or a ``TorchSSD`` (float64 weights): dS/dA of each source feature map A
    (the total derivative, read by retain_grad), per map ReLU(sum_k mean(dS/dA_k) A_k) (Grad-CAM) or
    ReLU(sum_k dS/dA_k * A_k) (ODAM), each placed on the ``size`` grid with its cells on the default boxes'
    centres ((i + 0.5) * step input pixels), then summed as they are (``"sum"``) or each divided by its
    maximum first (``"normalised_sum"``); a map within 64 epsilons of its largest term is zero.
    ``backbone``: instead of the source maps, the activation ``backbone.features`` ends with (conv4_3 after
    its ReLU, which the L2 norm and the extra layers both read; cells at (i + 0.5) * 8 input pixels) and the
    first source map. ``x``: one network input, (H, W, 3) numpy. Per target, a dict
    keyed by (method, combine)."""
    xt = torch.tensor(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
    net = tmodel.backbone
    conv4_3 = net.features(xt)
    feats = [net.scale_weight.view(1, -1, 1, 1) * torch.nn.functional.normalize(conv4_3)]
    h = conv4_3
    for block in net.extra:
        h = block(h)
        feats.append(h)
    read, strides = ([conv4_3, feats[0]], [8, steps[0]]) if backbone else (feats, steps)
    for f in read:
        f.retain_grad()
    logits = tmodel.head(feats)["cls_logits"]
    out = []
    for anchor, cls in targets:
        for f in read:
            f.grad = None
        logits[0, anchor, cls].backward(retain_graph=True)
        maps = {}
        for method in ("gradcam", "odam"):
            total = {"sum": torch.zeros(size, dtype=torch.float64), "normalised_sum": torch.zeros(size, dtype=torch.float64)}
            for f, step in zip(read, strides):
                g, a = f.grad[0], f[0].detach()
                terms = g.mean((1, 2))[:, None, None] * a if method == "gradcam" else g * a
                cam = torch.relu(terms.sum(0))
                if cam.max() <= 64 * torch.finfo(cam.dtype).eps * terms.abs().sum(0).max():
                    cam = torch.zeros_like(cam)  # rounding error: conv4_3 for a first-head detection
                cam = place_on_grid(cam, size, (step * size[0] / input_size[0], step * size[1] / input_size[1]))
                total["sum"] += cam
                total["normalised_sum"] += cam / cam.max() if cam.max() > 0 else cam
            maps.update({(method, how): m.numpy() for how, m in total.items()})
        out.append(maps)
    return out
