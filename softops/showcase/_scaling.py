"""Showcase section 2: soft rank against the paper's two baselines as n grows.

Time and compiled memory of forward+backward (``jax.grad`` of ``<rank(x), u>``) for softops'
``soft_rank``, an O(n²) all-pairs soft rank, and an optimal-transport (Sinkhorn) soft rank with n
anchors (Cuturi, Teboul, Vert, NeurIPS 2019), as in Blondel et al. 2020, Section 7.

Memory is XLA's compiled temporary memory (``memory_analysis().temp_size_in_bytes``). On CPU
every program is compiled with XLA's YNNPACK fusions switched off: a YNNPACK fusion allocates its
own intermediates at run time, outside XLA's buffer assignment, so ``memory_analysis`` reported
0 bytes for the all-pairs baseline at n = 10⁴ (its 400 MB n×n matrix lived inside such a fusion),
and at n = 10⁵ the fusion's 40 GB allocation failed at run time instead of being caught by the
budget. With them off, every buffer is counted, and a method over the budget is not run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from softops.projection import soft_rank
from softops.showcase.results import markdown, table

PLOT = "soft_rank_scaling.png"
# XLA:CPU debug option: no YNNPACK fusions (their scratch memory is invisible to memory_analysis).
_CPU_OPTIONS: dict[str, str | bool] = {"xla_cpu_experimental_ynn_fusion_type": ""}


def all_pairs_soft_rank(x, eps):
    """O(n²) baseline: rank_i = 1/2 + sum_j sigmoid((x_i - x_j) / eps)."""
    return 0.5 + jnp.sum(jax.nn.sigmoid((x[:, :, None] - x[:, None, :]) / eps), axis=-1)


def sinkhorn_soft_rank(x, eps, iters=100):
    """OT baseline (Cuturi et al. 2019): transport n squashed inputs to n sorted anchors."""
    n = x.shape[-1]
    z = jax.nn.sigmoid((x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-6))
    anchors = (jnp.arange(n, dtype=x.dtype) + 0.5) / n
    cost = (z[:, :, None] - anchors[None, None, :]) ** 2
    log_a = jnp.full(x.shape, -jnp.log(n), x.dtype)

    def step(carry, _):
        f, g = carry
        f = eps * log_a - eps * jax.nn.logsumexp((g[:, None, :] - cost) / eps, axis=-1)
        g = eps * log_a - eps * jax.nn.logsumexp((f[:, :, None] - cost) / eps, axis=-2)
        return (f, g), None

    (f, g), _ = jax.lax.scan(step, (jnp.zeros_like(x), jnp.zeros_like(x)), None, length=iters)
    plan = jnp.exp((f[:, :, None] + g[:, None, :] - cost) / eps)
    return n * jnp.sum(plan * jnp.arange(1, n + 1, dtype=x.dtype)[None, None, :], axis=-1)


METHODS: dict[str, Callable] = {
    "softops soft_rank": lambda x: soft_rank(x, regularization_strength=0.1),
    "all-pairs O(n²)": lambda x: all_pairs_soft_rank(x, 0.1),
    "Sinkhorn OT, n anchors, 100 iterations": lambda x: sinkhorn_soft_rank(x, 0.01),
}


def compile_fwd_bwd(f: Callable, x, u):
    """The compiled ``jax.grad`` of ``<f(x), u>`` (on CPU without YNNPACK fusions)."""
    lowered = jax.jit(jax.grad(lambda x: jnp.sum(f(x) * u))).lower(x)
    if jax.default_backend() == "cpu":
        try:
            return lowered.compile(compiler_options=_CPU_OPTIONS)
        except Exception:  # a jaxlib without the option has no YNNPACK fusions either
            pass
    return lowered.compile()


def temp_bytes(compiled) -> int:
    """XLA's compiled temporary memory of ``compiled`` (bytes)."""
    stats = compiled.memory_analysis()
    if stats is None:  # a backend that does not report it
        return 0
    return int(stats.temp_size_in_bytes)


def _is_out_of_memory(err: Exception) -> bool:
    text = str(err).lower()
    return any(s in text for s in ("resource_exhausted", "out of memory", "allocat", "oom"))


def measure(f: Callable, n: int, *, budget_bytes: int, repeats: int, seed: int = 0):
    """``(status, median seconds or None, temp bytes)``; status is "ok", "over budget", "oom"."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((1, n)), jnp.float32)
    u = jnp.asarray(rng.standard_normal((1, n)), jnp.float32)
    mem = 0
    try:
        compiled = compile_fwd_bwd(f, x, u)
        mem = temp_bytes(compiled)
        if mem > budget_bytes:
            return "over budget", None, mem
        compiled(x).block_until_ready()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            compiled(x).block_until_ready()
            times.append(time.perf_counter() - t0)
    except Exception as err:  # noqa: BLE001 - any run-time failure is reported, not raised
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"  n = {n:,}: run failed ({first})", file=sys.stderr)
        return ("oom" if _is_out_of_memory(err) else "failed"), None, mem
    return "ok", float(np.median(times)), mem


def _mib(b: float) -> str:
    """Bytes in KiB, MiB or GiB, with two or three significant digits."""
    if b < 2**20:
        return f"{b / 2**10:,.0f} KiB"
    if b < 10 * 2**30:
        return f"{b / 2**20:,.1f} MiB" if b < 100 * 2**20 else f"{b / 2**20:,.0f} MiB"
    return f"{b / 2**30:,.0f} GiB"


def _ms(sec: float) -> str:
    ms = sec * 1e3
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:.3g} ms"


def _cell(status: str, sec: float | None, mem: int, n: int, budget: int) -> str:
    if status == "ok" and sec is not None:
        return f"{_ms(sec)}, {_mib(mem)}"
    if status == "over budget":
        return f"out of memory (n={n:,}: needs {_mib(mem)} > {_mib(budget)} budget; not run)"
    if status == "oom":
        return f"out of memory (n={n:,})"
    return f"failed to run (n={n:,}; the error is on stderr)"


def run(out: Path | None, sizes, *, budget_mib: float, repeats: int, progress: bool = True):
    """Measures every method at every size; returns the Markdown, the tables and the raw data.

    With a folder ``out`` it also plots time against n there; ``out=None`` writes nothing.
    """
    budget = int(budget_mib * 2**20)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in METHODS}
    rows = []
    for n in sizes:
        row = [f"{n:,}"]
        for name, f in METHODS.items():
            if progress:
                print(f"  n = {n:,}: {name} ...", file=sys.stderr, flush=True)
            status, sec, mem = measure(f, n, budget_bytes=budget, repeats=repeats)
            results[name].append({"n": n, "status": status, "seconds": sec, "temp_bytes": mem})
            row.append(_cell(status, sec, mem, n, budget))
        rows.append(row)
    if out is not None:
        _plot(out, sizes, results)
    tab = table(["n", *METHODS], rows, align=["r", "r", "r", "r"])
    soft = results["softops soft_rank"]
    speedups = [
        f"{a['seconds'] / s['seconds']:.1f}× at n = {a['n']:,}"
        for a, s in zip(results["all-pairs O(n²)"], soft)
        if a["seconds"] and s["seconds"]
    ]
    md = "\n".join(
        [
            "## 2. Soft rank against the paper's baselines (forward + backward, float32, batch 1)"
            "\n",
            f"Each cell: median time over {repeats} runs, and XLA's compiled temporary memory. "
            f"Budget: {budget_mib:,.0f} MiB of compiled temporary memory; a method over it is "
            "not run. On CPU, XLA's YNNPACK fusions are switched off for every method so that "
            "the compiled memory counts every buffer.\n",
            markdown(tab),
            "",
            "All-pairs time / softops time where both ran: "
            + (", ".join(speedups) if speedups else "none")
            + ".\n",
            *([f"![time against n]({PLOT})\n"] if out is not None else []),
        ]
    )
    values = {"scaling_speedups": ", ".join(speedups)}
    return md, {"scaling": tab}, values, results


def _plot(out: Path, sizes, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 4.0))
    top = max([r["seconds"] for rs in results.values() for r in rs if r["seconds"]] or [1.0])
    for j, (name, rs) in enumerate(results.items()):
        ok = [(r["n"], r["seconds"] * 1e3) for r in rs if r["seconds"]]
        # Every method gets its legend entry, also one that never ran.
        ax.plot(*(zip(*ok) if ok else ([], [])), "o-", color=f"C{j}", label=name)
        for r in rs:
            if r["seconds"] is None:  # not run: mark where it would be, with why
                why = {"over budget": "out of memory", "oom": "out of memory"}.get(
                    r["status"], "failed"
                )
                y = top * 1e3 * 3 ** (j + 1)
                ax.plot([r["n"]], [y], "x", color=f"C{j}", ms=9, mew=2)
                ax.annotate(
                    f"{why}\n(n={r['n']:,}, {_mib(r['temp_bytes'])})",
                    (r["n"], y),
                    textcoords="offset points",
                    xytext=(-8, -4),  # left of the mark: the text stays inside the axes
                    ha="right",
                    fontsize=7,
                    color=f"C{j}",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(min(sizes) / 2, max(sizes) * 4)
    ax.set_xlabel("n (items per row, batch 1)")
    ax.set_ylabel("forward + backward time (ms)")
    ax.set_title("soft rank: softops vs the O(n²) and OT baselines", fontsize=10)
    if any(r["seconds"] is None for rs in results.values() for r in rs):
        ax.plot([], [], "x", color="gray", label="not run (× marks, with the reason)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.set_ylim(top=top * 1e3 * 3 ** (len(results) + 2))
    fig.tight_layout()
    fig.savefig(out / PLOT, dpi=120)
    plt.close(fig)
