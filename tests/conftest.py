"""Test configuration: float64 and strict promotion, as lineax does."""

import ctypes
import gc

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
    # Compiled XLA:CPU executables stay alive as long as their cache entries: each keeps a few
    # hundred memory mappings (a session compiles thousands of programs and would reach the
    # kernel's per-process limit, vm.max_map_count, 65530 by default) and its code and buffers
    # resident. Clearing after every test would recompile the kernels the tests share, so clear
    # only near the mapping limit or when this worker's resident memory passes RSS_LIMIT (the
    # suite's budget is 3 GB for two workers), and hand the freed heap back to the system.
    yield
    if _mappings() > 30000 or _rss() > RSS_LIMIT:
        jax.clear_caches()
        gc.collect()
        _malloc_trim()


RSS_LIMIT = 1.1 * 2**30


def _mappings() -> int:
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux: no such limit to track
        return 0


def _rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
