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
