"""Test configuration: float64 and strict promotion, as lineax does."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def float32_default():
    # The examples are user code for JAX's defaults (float32, standard promotion; optax's adam
    # does not run under strict promotion); the suite enables x64 and strict promotion.
    x64, promotion = jax.config.jax_enable_x64, jax.config.jax_numpy_dtype_promotion
    jax.config.update("jax_enable_x64", False)
    jax.config.update("jax_numpy_dtype_promotion", "standard")
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", x64)
        jax.config.update("jax_numpy_dtype_promotion", promotion)


@pytest.fixture(autouse=True)
def _release_executables():
    # Every compiled XLA:CPU executable keeps a few hundred memory mappings alive until its cache
    # entry goes; a test session compiles thousands of programs and would reach the kernel's
    # per-process limit (vm.max_map_count, 65530 by default). Users compile far fewer. Clearing
    # after every test would recompile the kernels the tests share, so clear only near the limit.
    yield
    if _mappings() > 30000:
        jax.clear_caches()


def _mappings() -> int:
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux: no such limit to track
        return 0
