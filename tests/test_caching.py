"""Identical eager calls compile once and do not grow memory (issue 9, item 2).

Issue 9 measured ``soft_rank`` recompiling a ``jit(cond)`` on every identical eager call (115-140 ms
each, resident memory from 312 MiB to 2.9 GiB over 1,000 calls; the same for ``isotonic_l2``,
``soft_topk_mask`` and ``soft_topk``). Each public function now validates its arguments in Python
and calls a module-level jitted implementation with its options static. Memory growth is measured
by compile counts, as the issue asks: every XLA compilation is counted (``jax.monitoring``'s
backend-compile event), and the jit caches of every module-level jitted function in softops
(``_cache_size()``) must not grow after the first call.
"""

import contextlib
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import optax  # noqa: F401  (imported by softops.forward_grad; keeps the module list complete)
import pytest

import softops
from softops import losses

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
# jax.monitoring.unregister_event_duration_listener is public from jax 0.8.1; 0.8.0 (the floor)
# has the same function under a private name.
_unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None) or getattr(
    importlib.import_module("jax._src.monitoring"),
    "_unregister_event_duration_listener_by_callback",
)
REPEATS = 5


@contextlib.contextmanager
def _count_compiles():
    """Counts XLA backend compilations inside the block (``counter[0]``)."""
    counter = [0]

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            counter[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counter
    finally:
        _unregister(listener)


def _jitted_impls():
    """Every module-level jitted function of softops (anything with a jit cache), by name."""
    found = {}
    for info in pkgutil.walk_packages(softops.__path__, "softops."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if hasattr(obj, "_cache_size") and getattr(obj, "__module__", None) == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def _cache_sizes():
    return {name: fn._cache_size() for name, fn in _jitted_impls().items()}


# Import every softops module before any test compiles: the showcase's modules import flax, and
# flax (0.12.12) adds JAX configuration states to the jit cache key when imported, so a first
# import between two identical calls would recompile them (measured with jax 0.12.1).
_jitted_impls()


X = jnp.asarray(np.random.default_rng(0).standard_normal((8, 200)), jnp.float32)
LABELS = jnp.arange(8, dtype=jnp.int32)
TARGETS = jnp.asarray(np.random.default_rng(1).standard_normal((8, 200)), jnp.float32)
RELEVANCE = jnp.asarray(np.random.default_rng(2).integers(0, 4, (8, 200)), jnp.float32)
COST = jnp.asarray(np.random.default_rng(3).random((4, 6, 5)), jnp.float32)
MASK = jnp.asarray(np.random.default_rng(4).random((8, 200)) > 0.2)

CALLS = {
    "soft_rank": lambda: softops.soft_rank(X, regularization_strength=0.3),
    "soft_rank_kl_masked": lambda: softops.soft_rank(
        X, regularization="kl", regularization_strength=0.3, where=MASK, descending=True
    ),
    "soft_sort": lambda: softops.soft_sort(X, regularization_strength=0.3),
    "soft_sort_kl": lambda: softops.soft_sort(X, regularization="kl", regularization_strength=2.0),
    "projection_permutahedron": lambda: softops.projection_permutahedron(X),
    "projection_permutahedron_w": lambda: softops.projection_permutahedron(X, TARGETS),
    "isotonic_l2": lambda: softops.isotonic_l2(X, TARGETS),
    "isotonic_kl": lambda: softops.isotonic_kl(X, TARGETS),
    "isotonic_regression": lambda: softops.isotonic_regression(X, increasing=False),
    "soft_topk_mask": lambda: softops.soft_topk_mask(X, 5),
    "soft_topk_mask_traced_k": lambda: softops.soft_topk_mask(X, jnp.float32(5.5)),
    "soft_topk_mask_sinkhorn": lambda: softops.soft_topk_mask(X, 5, solver="sinkhorn"),
    "soft_topk_mask_solve": lambda: softops.soft_topk_mask_solve(X, 5, temperature=0.1),
    "soft_topk": lambda: softops.soft_topk(X, 3, epsilon=0.05),
    "soft_topk_solve": lambda: softops.soft_topk_solve(X, 3, epsilon=0.05),
    "sinkhorn": lambda: softops.sinkhorn(COST, epsilon=0.1),
    "spearman_correlation": lambda: losses.spearman_correlation(X, TARGETS),
    "spearman_loss_hard_targets": lambda: losses.spearman_loss(
        X, TARGETS, target_regularization_strength=0
    ),
    "soft_ndcg": lambda: losses.soft_ndcg(X, RELEVANCE, k=10),
    "soft_topk_rank_loss": lambda: losses.soft_topk_rank_loss(X, LABELS, k=5),
    "soft_topk_mask_loss": lambda: losses.soft_topk_mask_loss(X, LABELS, k=5),
    "soft_quantile": lambda: losses.soft_quantile(X, jnp.array([0.1, 0.5, 0.9], jnp.float32)),
    "soft_median": lambda: losses.soft_median(X, where=MASK),
    "soft_lts_loss": lambda: losses.soft_lts_loss(X, trim=0.25),
}


@pytest.fixture(autouse=True)
def _fresh_caches():
    # The suite keeps compiled programs across tests; these tests count compilations from zero.
    jax.clear_caches()
    yield


FAST = ("soft_rank", "soft_topk_mask", "spearman_loss")  # the rest in CI's slow pass


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(CALLS)]
)
def test_identical_eager_calls_compile_once(name):
    call = CALLS[name]
    with _count_compiles() as first:
        jax.block_until_ready(call())
    assert first[0] >= 1  # the counter sees compilations (the autouse fixture cleared the caches)
    sizes = _cache_sizes()
    assert sum(sizes.values()) >= 1, "no jitted softops implementation was used"
    with _count_compiles() as again:
        for _ in range(REPEATS):
            jax.block_until_ready(call())
    assert again[0] == 0, f"{name}: {again[0]} compilations in {REPEATS} identical calls"
    assert _cache_sizes() == sizes


def test_new_k_compiles_one_program():
    # Issue 9: soft_topk compiled about 83 programs (1.4 s) on every call with a new k. k is
    # static (it sets the output's shape), so a new k compiles the implementation once; the
    # eager helpers around it (broadcasts, casts) are cached from the first k.
    softops.soft_topk(X, 2, epsilon=0.05)
    softops.soft_topk_mask(X, 2)
    with _count_compiles() as count:
        softops.soft_topk(X, 4, epsilon=0.05)
    assert count[0] <= 2, count[0]
    with _count_compiles() as count:
        softops.soft_topk_mask(X, 4)  # an int k of the mask is traced: no new program
    assert count[0] == 0


def test_eager_loop_matches_jit_cache():
    # The eager call and a user's jax.jit of it share the implementation's cache entry: 50 eager
    # calls add no entry after the first.
    softops.soft_rank(X, regularization_strength=0.3)
    sizes = _cache_sizes()
    for _ in range(50):
        softops.soft_rank(X, regularization_strength=0.3)
    assert _cache_sizes() == sizes
    jitted = jax.jit(lambda x: softops.soft_rank(x, regularization_strength=0.3))
    np.testing.assert_array_equal(
        np.asarray(jitted(X)), np.asarray(softops.soft_rank(X, regularization_strength=0.3))
    )
