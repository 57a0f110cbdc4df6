import numpy as np
import pytest
import torch

from jaxvis.models.vgg import adaptive_avg_pool, adaptive_bins


@pytest.mark.parametrize("hw", [(7, 7), (1, 1), (6, 8), (10, 10), (13, 9), (3, 20), (14, 14), (30, 7)])
def test_matches_torch_adaptive_avg_pool(hw):
    x = np.random.default_rng(0).standard_normal((2, *hw, 5)).astype(np.float32)
    got = np.asarray(adaptive_avg_pool(x, (7, 7)))
    ref = torch.nn.AdaptiveAvgPool2d((7, 7))(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_bins_overlap_at_odd_sizes():
    assert adaptive_bins(10, 7) == [(0, 2), (1, 3), (2, 5), (4, 6), (5, 8), (7, 9), (8, 10)]
    assert adaptive_bins(1, 7) == [(0, 1)] * 7
