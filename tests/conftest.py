"""Test configuration: float64 and strict promotion, as lineax does."""

import ctypes
import fnmatch
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


# The README's fast command (`-m "not slow"`) must run in under 5 minutes on 2 cores. These fast
# tests are moved to the slow pass (CI runs it after the fast one; nothing is skipped): each
# repeats, at a larger cost, what a cheaper fast test already covers (the derivative battery's
# check_grads of every op, one JVP/VJP/jit/vmap and one NaN-row case per family, the l2 variant of
# a kl test, one float32 and one reference-data case). Patterns are fnmatch'd against node ids.
MOVED_TO_SLOW = (
    "tests/test_derivatives_all.py::test_jvp_vjp_jit_vmap_agree[[]*",
    "tests/test_derivatives_all.py::test_nan_row_leaves_other_rows_alone[[]*",
    "tests/test_derivatives_all.py::test_check_grads_fwd_and_rev[[]soft_topk_solve-*",
    "tests/test_derivatives_all.py::test_check_grads_fwd_and_rev[[]soft_topk_mask_solve-*",
    "tests/test_derivatives_all.py::test_check_grads_fwd_and_rev[[]soft_median-*",
    "tests/test_derivatives_all.py::test_check_grads_fwd_and_rev[[]soft_quantile_normalization-*",
    "tests/test_derivatives_all.py::test_check_grads_fwd_and_rev[[]spearman_correlation-*",
    "tests/test_nonfinite.py::test_unconverged_topk_is_nan_not_garbage",
    "tests/test_nonfinite.py::test_unconverged_mask_is_nan",
    "tests/test_nonfinite.py::test_nan_row_does_not_leak_into_topk_gradients[[]*",
    "tests/test_nonfinite.py::test_topk_temperature_minus_inf_has_zero_gradient",
    "tests/test_nonfinite.py::test_empty_lists_and_a_non_finite_permutation_row",
    "tests/test_nonfinite.py::test_topk_with_temperature_never_selects_minus_inf[[]*",
    "tests/test_nonfinite.py::test_bad_entry_gives_nan_row_only[[]*kl*",
    "tests/test_nonfinite.py::test_bad_entry_gives_nan_row_only[[]soft_topk*",
    "tests/test_nonfinite.py::test_loss_with_nan_is_nan[[]soft_topk_mask_loss*",
    "tests/test_nonfinite.py::test_traced_bad_strength_gives_nan_row[[]soft_topk_temp*",
    "tests/test_projection.py::test_derivative_battery[[]*",
    "tests/test_projection.py::test_degenerate_inputs",
    "tests/test_projection.py::test_limits[[]kl*",
    "tests/test_projection.py::test_hessian_runs_and_is_zero_for_l2",
    "tests/test_projection.py::test_low_precision[[]*",
    "tests/test_projection.py::test_invariants[[]kl*",
    "tests/test_projection.py::test_jit_vmap_axis_and_strength_array[[]*",
    "tests/test_projection.py::test_kl_soft_sort_jacobian_in_multi_element_blocks",
    "tests/test_projection.py::test_ties_get_equal_ranks[[]kl*",
    "tests/test_isotonic.py::test_jit_vmap_axis_equivalence[[]kl*",
    "tests/test_isotonic.py::test_derivative_battery[[]*",
    "tests/test_isotonic.py::test_degenerate_inputs",
    "tests/test_isotonic.py::test_solvers_agree[[]*kl*",
    "tests/test_isotonic.py::test_matches_numpy_pav[[]*kl*",
    "tests/test_isotonic.py::test_nan_stays_in_its_row",
    "tests/test_topk_ot.py::test_vmap_and_axis_equivalence",
    "tests/test_topk_ot.py::test_sinkhorn_derivative_battery[[]*",
    "tests/test_topk_ot.py::test_soft_topk_derivative_battery[[]*",
    "tests/test_topk_ot.py::test_compiled_memory_does_not_grow_with_iterations",
    "tests/test_topk_ot.py::test_mask_sinkhorn_solver_agrees_with_newton[[]*",
    "tests/test_topk_ot.py::test_mask_fd_on_batch_with_axis",
    "tests/test_forward_grad.py::test_forward_mode_temp_memory_is_flat_in_depth",
    "tests/test_forward_grad.py::test_dtypes_preserved",
    "tests/test_forward_grad.py::test_deterministic_and_jit_consistent[[]rademacher*",
    "tests/test_forward_grad.py::test_flax_nnx_state_with_rng_leaves",
    "tests/test_refdata.py::test_soft_sort_rank_reference[[]soft_sort*",
    "tests/test_refdata.py::test_soft_sort_rank_reference[[]soft_rank-kl*",
    "tests/test_cancellation.py::test_soft_rank_float32_matches_float64[[]*",
    "tests/test_cancellation.py::test_soft_sort_float32_matches_float64[[]*",
    "tests/test_caching.py::test_new_k_compiles_one_program",
    "tests/test_caching.py::test_eager_loop_matches_jit_cache",
    "tests/test_export.py::test_export_with_symbolic_batch[[]soft_rank-grad*",
    "tests/test_straight_through.py::test_value_is_hard_and_derivative_is_soft[[]soft_rank_desc_kl*",
    "tests/test_straight_through.py::test_value_is_hard_and_derivative_is_soft[[]soft_topk_mask*",
    "tests/test_pav.py::test_dense_solver_matches_pav[[]*",
    "tests/test_pav.py::test_kl_desc_exact_on_nonincreasing_statistics[[]*",
    "tests/test_losses.py::test_quantile_where_equals_compressed[[]kl*",
    "tests/test_losses.py::test_vmap_agrees_with_batched",
    "tests/test_arguments.py::test_float16_ranks_up_to_65504",
    "tests/test_topk_memory.py::*",
    "tests/test_sinkhorn.py::test_marginal_derivative_along_balanced_tangents[[]*",
    "tests/test_docs.py::test_doctests[[]activity_value_and_grad*",
    "tests/test_docs.py::test_doctests[[]local_value_and_grad*",
    "tests/test_transfers.py::test_no_implicit_host_transfer[[]*",
    "tests/test_topk_ot.py::test_float32_sorted_finite_at_small_epsilon",
    "tests/test_topk_ot.py::test_where_gives_exact_zeros",
    "tests/test_straight_through.py::test_sorted_topk_assignment_is_one_hot_of_top_k",
    "tests/test_straight_through.py::test_nan_row_stays_nan_and_others_are_exact",
    "tests/test_straight_through.py::test_value_is_hard_and_derivative_is_soft[[]soft_sort*",
    "tests/test_sinkhorn.py::test_marginal_derivative_along_any_tangent",
    "tests/test_isotonic.py::test_solvers_agree[[]*",
)
# One JVP/VJP/jit/vmap, one NaN-row and one host-transfer case per family stay in the fast pass.
KEPT_FAST = (
    "tests/test_transfers.py::test_no_implicit_host_transfer[soft_rank]",
    "tests/test_transfers.py::test_no_implicit_host_transfer[soft_topk_mask]",
    "tests/test_transfers.py::test_no_implicit_host_transfer[routing.token_choice]",
    "tests/test_derivatives_all.py::test_jvp_vjp_jit_vmap_agree[soft_rank-l2]",
    "tests/test_derivatives_all.py::test_jvp_vjp_jit_vmap_agree[soft_topk_rank_loss-defaults]",
    "tests/test_derivatives_all.py::test_nan_row_leaves_other_rows_alone[soft_rank-l2]",
    "tests/test_derivatives_all.py::test_nan_row_leaves_other_rows_alone[soft_topk_rank_loss-defaults]",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        nodeid = item.nodeid
        if nodeid in KEPT_FAST or "slow" in item.keywords:
            continue
        if any(fnmatch.fnmatchcase(nodeid, pattern) for pattern in MOVED_TO_SLOW):
            item.add_marker(pytest.mark.slow)
