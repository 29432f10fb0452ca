"""Eager calls move nothing from the host: every public op runs under
``jax.transfer_guard("disallow")`` once its inputs live on the device (issue 21: each eager call
used to transfer a Python scalar, a strength or a constant, implicitly)."""

import jax
import pytest

from tests._sharding_check_ops import AUX, OPS, X


@pytest.mark.parametrize("name", sorted(OPS))
def test_no_implicit_host_transfer(name):
    op = OPS[name]
    x, aux = jax.device_put(X), jax.device_put(AUX)
    jax.block_until_ready(op(x, aux))  # compile first: tracing may use host constants
    with jax.transfer_guard("disallow"):
        jax.block_until_ready(op(x, aux))
