"""The engine promises no implicit host-device transfer while a chunk runs: the points and the weights are
placed once, explicitly, the steps loop (on the host or in a scan) keeps everything on the device, and the
results come back in one explicit fetch. jax's transfer guard turns any other transfer into an error."""

import jax
import numpy as np
import pytest

from jaxvis import engine
from jaxvis import objectives as O
from tiny import tiny_vgg


@pytest.fixture(scope="module")
def vgg():
    return tiny_vgg(0)


@pytest.mark.parametrize("loop", ["host", "scan"])
def test_a_sweep_runs_under_a_disallowing_transfer_guard(vgg, loop):
    sweep = engine.Sweep(targets=[1, 2], lrs=[0.5], losses=[O.score() + O.sq()], seeds=[0, 1],
                         init_scales=[0.1])
    eng = engine.Engine(vgg, sweep.terms, steps=4, snapshots=[2], jitter=3, loop=loop)
    warm = eng.run(sweep, chunk_size=4)
    with jax.transfer_guard("disallow"):
        result = eng.run(sweep, chunk_size=4)
    np.testing.assert_array_equal(result.images, warm.images)
    # The guard is on: an implicit transfer in the same block is refused (the check can fail).
    with pytest.raises(Exception, match="Disallowed host-to-device transfer"):
        with jax.transfer_guard("disallow"):
            jax.jit(lambda x: x + 1)(np.ones(3, np.float32))
