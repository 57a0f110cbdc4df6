"""PyTorch twins of jaxvis models, for comparisons and benchmarks (torch is imported here, never in jaxvis).

``torch_vgg`` rebuilds any jaxvis VGG config in torchvision's layout (``features`` / ``avgpool`` /
``classifier``, the same module indices) and loads the weights through the inverse converter remap; for
the torchvision architectures it is torchvision's own class. ``torch_ssd300`` is torchvision's
``ssd300_vgg16`` with a jaxvis SSD300's weights.
"""

from __future__ import annotations

import numpy as np
import torch

from converters import ssd as ssd_remap
from converters import vgg as vgg_remap


class TorchVGG(torch.nn.Module):
    """torchvision's VGG layout for any jaxvis VGG config."""

    def __init__(self, config):
        super().__init__()
        layers, cin = [], 3
        for widths in config["blocks"]:
            for w in widths:
                layers.append(torch.nn.Conv2d(cin, w, 3, padding=1))
                if config.get("batch_norm", False):
                    layers.append(torch.nn.BatchNorm2d(w))
                layers.append(torch.nn.ReLU(inplace=True))
                cin = w
            layers.append(torch.nn.MaxPool2d(2, 2))
        self.features = torch.nn.Sequential(*layers)
        ph, pw = config.get("pool_size", (7, 7))
        self.avgpool = torch.nn.AdaptiveAvgPool2d((ph, pw))
        fc = config.get("fc_width", 4096)
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(cin * ph * pw, fc), torch.nn.ReLU(True), torch.nn.Dropout(),
            torch.nn.Linear(fc, fc), torch.nn.ReLU(True), torch.nn.Dropout(),
            torch.nn.Linear(fc, config["num_classes"]))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _load(module: torch.nn.Module, state: dict[str, np.ndarray]) -> torch.nn.Module:
    tensors = {k: torch.tensor(np.asarray(v)) for k, v in state.items()}
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise ValueError(f"torch twin does not fit: missing {missing}, unexpected {unexpected}")
    return module.eval()


def torch_vgg(model) -> torch.nn.Module:
    """A torch VGG with a jaxvis VGG model's weights, in eval mode."""
    return _load(TorchVGG(model.spec.config), vgg_remap.to_torch(model.params, model.spec))


def torch_ssd300(model) -> torch.nn.Module:
    """torchvision's ssd300_vgg16 with a jaxvis SSD300's weights (torchvision layout), in eval mode."""
    import torchvision

    net = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None,
                                                    num_classes=model.spec.config["num_classes"])
    return _load(net, ssd_remap.to_torch(model.params, model.spec, layout="torchvision"))
