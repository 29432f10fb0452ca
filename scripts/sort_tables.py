"""The soft sort / soft rank speed tables (``benchmarks/bench_sort.py --json``).

Merged into ``update_tables.RENDERERS``: ``bench_sort`` (the whole run, every core the process
has, torchsort at each recorded torch thread count) and ``bench_sort_1core`` (the headline
shapes of a run with ``--cores 1``: both libraries on one core).
"""

from __future__ import annotations

from collections.abc import Callable

COMBOS = (("soft_sort", "l2"), ("soft_sort", "kl"), ("soft_rank", "l2"), ("soft_rank", "kl"))


def _r(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _ratio(num: float, den: float | None) -> float | None:
    return None if den is None else num / den


def _shape(row: dict) -> str:
    return f"{row['batch']} × {row['n']}"


def _worst(rows: list[dict], key: Callable[[dict], float | None]) -> str:
    vals = [(key(r), r) for r in rows if key(r) is not None]
    if not vals:
        return "n/a"
    v, r = max(vals, key=lambda t: t[0])
    return f"{v:.2f} ({r['op']} {r['reg']} at {_shape(r)}, {r['dtype']})"


def _count(rows: list[dict], key: Callable[[dict], float | None]) -> str:
    vals = [key(r) for r in rows if key(r) is not None]
    if not vals:
        return "n/a"
    return f"{sum(v <= 1.0 for v in vals)} of {len(vals)}"


def _threads(meta: dict) -> list[str]:
    """The torch thread counts torchsort was timed at (none without torchsort)."""
    return [str(t) for t in meta["torch_threads_all"]] if meta.get("torchsort") else []


def _vs_torch(threads: str) -> Callable[[dict], float | None]:
    """Softops-over-torchsort forward+backward at ``threads`` torch threads (or None)."""

    def key(r: dict) -> float | None:
        return _ratio(r["grad_s"], r["torchsort_by_threads"].get(threads))

    return key


def _vs_argsort(r: dict) -> float:
    return r["grad_s"] / r["argsort_s"]


def _thread_label(t: str) -> str:
    return f"{t} torch thread" + ("" if t == "1" else "s")


def render_bench_sort(data: dict) -> str:
    """Markdown for ``benchmarks/bench_sort.py --json`` output."""
    meta, rows = data["meta"], data["rows"]
    by_group: dict[str, list[dict]] = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r)
    vs_fast = lambda r: r["grad_s"] / r["fast_argsort_s"]  # noqa: E731
    threads = _threads(meta)
    vs = {t: _vs_torch(t) for t in threads}
    cores = meta.get("cores", meta["cpu_count"])
    torch = (
        f"torchsort {meta['torchsort']} on torch {meta['torch']} CPU, timed at "
        + " and at ".join(_thread_label(t) for t in threads)
        + " in the same loop"
        if meta.get("torchsort")
        else "torchsort not installed"
    )
    out = [
        f"`python benchmarks/bench_sort.py` on {meta['backend']} ({meta['cpu_count']} cores, "
        f"shared; the process ran on {cores}: softops at XLA's default threads), jax "
        f"{meta['jax']}, {torch}, {meta['date']}; medians of {meta['repeats']} "
        "interleaved repeats per shape, strength 1. Every number is a ratio of two medians "
        "timed in the same loop: softops' forward+backward (`jax.grad` of `sum(op(x) * u)`) "
        "over `jnp.argsort` of the same array, over softops' private fast argsort "
        "(`softops._sort.argsort`), over torchsort's forward+backward of the same op; below 1 "
        "means softops is faster. Temporary memory: compiled forward+backward "
        "(`memory_analysis().temp_size_in_bytes`) per element.",
        "",
    ]
    head = by_group.get("headline", [])
    if head:
        grad = {(r["batch"], r["n"], r["op"], r["reg"]): r["grad_s"] for r in head}
        torch_cols = "".join(f"| / torchsort, {_thread_label(t)} " for t in threads)
        out += [
            "| batch × n | op | reg | fwd+bwd / jnp.argsort | fwd+bwd / fast argsort "
            f"{torch_cols}| fwd / jnp.argsort | KL / L2 fwd+bwd | temp bytes/elem |",
            "|---|---|---|" + "---:|" * (5 + len(threads)),
        ]
        for r in head:
            kl_l2 = ""
            if r["reg"] == "kl":
                kl_l2 = _r(r["grad_s"] / grad[r["batch"], r["n"], r["op"], "l2"])
            cells = "".join(f"| {_r(vs[t](r))} " for t in threads)
            out.append(
                f"| {_shape(r)} | {r['op']} | {r['reg']} | {_r(_vs_argsort(r))} "
                f"| {_r(vs_fast(r))} {cells}| {_r(r['fwd_s'] / r['argsort_s'])} "
                f"| {kl_l2} | {r['grad_temp_bytes'] / (r['batch'] * r['n']):.1f} |"
            )
        out.append("")

    sweep = by_group.get("sweep", []) + head
    if by_group.get("sweep"):
        out += _combo_table(
            sweep,
            "Size sweep (at most "
            f"{meta['max_elements']} items per array), float32, forward+backward / "
            "`jnp.argsort` (headline shapes included):",
            _vs_argsort,
        )
        for t in threads:
            if any(vs[t](r) is not None for r in sweep):
                title = f"Size sweep, forward+backward / torchsort at {_thread_label(t)}:"
                out += _combo_table(sweep, title, vs[t])
    f64 = by_group.get("float64", [])
    if f64:
        out += _combo_table(
            f64, "float64, forward+backward / `jnp.argsort` of the float64 array:", _vs_argsort
        )
    for t in threads:
        out.append(
            f"- float32, torchsort at {_thread_label(t)}: softops ≤ 1.0× at "
            f"{_count(head, vs[t])} headline points (worst {_worst(head, vs[t])}) and at "
            f"{_count(sweep, vs[t])} sweep and headline points (worst {_worst(sweep, vs[t])})."
        )
    out += [
        f"- float32 headline shapes: ≤ 1.0× `jnp.argsort` at {_count(head, _vs_argsort)} (worst "
        f"{_worst(head, _vs_argsort)}); sweep and headline: at {_count(sweep, _vs_argsort)} "
        f"(worst {_worst(sweep, _vs_argsort)}).",
    ]
    if f64:
        out.append(
            f"- float64: ≤ 1.0× `jnp.argsort` at {_count(f64, _vs_argsort)} points "
            f"(worst {_worst(f64, _vs_argsort)})."
        )
    out.append(
        f"- against the fast argsort alone, forward+backward costs at worst "
        f"{_worst(rows, vs_fast)}."
    )
    return "\n".join(out) + "\n"


def _combo_table(rows: list[dict], title: str, key) -> list[str]:
    points: dict[tuple[int, int], dict] = {}
    for r in rows:
        points.setdefault((r["batch"], r["n"]), {})[r["op"], r["reg"]] = r
    lines = [
        title,
        "",
        "| batch × n | " + " | ".join(f"{op} {reg}" for op, reg in COMBOS) + " |",
        "|---|" + "---:|" * len(COMBOS),
    ]
    for (b, n), combos in sorted(points.items(), key=lambda t: (t[0][1], t[0][0])):
        cells = [_r(key(combos[c])) if c in combos else "" for c in COMBOS]
        lines.append(f"| {b} × {n} | " + " | ".join(cells) + " |")
    return lines + [""]


def render_bench_sort_1core(data: dict) -> str:
    """The headline shapes of a ``--cores 1`` run: softops and torchsort on one core each."""
    meta = data["meta"]
    head = [r for r in data["rows"] if r["group"] == "headline"]
    vs_torch = _vs_torch("1")
    out = _combo_table(
        head,
        f"`python benchmarks/bench_sort.py --cores 1`: the process pinned to one core (softops, "
        f"XLA and torch see one), torchsort at 1 torch thread; jax {meta['jax']}, torchsort "
        f"{meta.get('torchsort')} on torch {meta.get('torch')}, {meta['date']}; medians of "
        f"{meta['repeats']} interleaved repeats, forward+backward, strength 1.",
        vs_torch,
    )
    out.append(
        f"- softops / torchsort, both on one core: ≤ 1.0× at {_count(head, vs_torch)} headline "
        f"points (worst {_worst(head, vs_torch)}); softops / `jnp.argsort`: worst "
        f"{_worst(head, _vs_argsort)}."
    )
    return "\n".join(out) + "\n"


def render_bench_softjax(data: dict) -> str:
    """Markdown for ``benchmarks/bench_softjax.py --json``: softops over SoftJAX, same process."""
    meta = data["meta"]
    out = [
        f"`python benchmarks/bench_softjax.py` on {meta['backend']} ({meta['cpu_count']} cores,"
        f" load average {meta['load_avg']:.1f} at the start and {meta['load_avg_end']:.1f} at the"
        f" end), jax {meta['jax']}, SoftJAX {meta['softjax']}, Python {meta['python']},"
        f" {meta['date']}; medians of {meta['repeats']} interleaved repeats (SoftJAX calls over"
        " a second: 3 repeats on their own, †; a first call over ten seconds: that call alone, ‡,"
        " and the mode skipped at larger shapes). Forward+backward"
        " (`jax.grad` of `sum(op(x) * u)`); *defaults*: each library at its own defaults;"
        " *same projection*: SoftJAX at the softness that computes softops' projection at"
        " strength 1 (the largest difference of the two outputs beside it; none was found for"
        " its p-norm sorts). SoftJAX's modes"
        " `c0`, `c1`, `c2` against softops' `l2`, `p=3/2`, `p=4/3`. Below 1 means softops is"
        " faster.",
        "",
        "| shape | op | setting | softops | SoftJAX | softops ms | SoftJAX ms | softops / SoftJAX"
        " | softops / hard op | max output difference |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    mark = {"interleaved": "", "alone": " †", "once": " ‡"}
    for r in data["rows"]:
        ms = r["ms"]
        shape = f"{r['batch']} × {r['n']}" + (f", k = {r['k']}" if "k" in r else "")
        ours = f"`{r['softops']}`"
        op = "top-k mask" if r["op"] == "topk_mask" else f"soft {r['op']}"
        diff = f"{r['max_abs_diff']:.1e} (of {r['scale']:,.0f})" if "scale" in r else ""
        if ms["softjax"] is None:
            out.append(
                f"| {shape} | {op} | {r['setting']} | {ours} | `{r['softjax']}`"
                f" | {ms['softops']:.3f} | skipped (over 10 s at a smaller shape) | | | |"
            )
            continue
        out.append(
            f"| {shape} | {op} | {r['setting']} | {ours} | `{r['softjax']}` | {ms['softops']:.3f}"
            f" | {ms['softjax']:.3f}{mark[r['timed']]} | {_r(ms['softops'] / ms['softjax'])}"
            f" | {_r(ms['softops'] / ms['hard'])} | {diff} |"
        )
    paired = [r for r in data["rows"] if r["ms"]["softjax"] is not None]
    faster = sum(r["ms"]["softops"] < r["ms"]["softjax"] for r in paired)
    out += ["", f"softops is faster at {faster} of the {len(paired)} rows where both ran."]
    return "\n".join(out) + "\n"


def render_bench_host_devices(data: dict) -> str:
    """Markdown for ``benchmarks/bench_host_devices.py --json``: sharded rows against one device."""
    meta = data["meta"]
    many = [d for d in meta["devices"] if d > 1]
    out = [
        f"`python benchmarks/bench_host_devices.py` on {meta['cores']} cores (load average"
        f" {meta['load_avg']:.1f} at the start and {meta['load_avg_end']:.1f} at the end), jax"
        f" {meta['jax']}, Python {meta['python']}, {meta['date']}; medians of {meta['repeats']}"
        " interleaved repeats of the jitted forward+backward; each column a fresh interpreter"
        " with that many host devices and the batch sharded over them (one device: XLA's default"
        " threads). Speed-up: one device's time over this one's; same bits: the gradient's bytes"
        " equal one device's.",
        "",
        "| batch × n | op | reg | 1 device ms | "
        + " | ".join(f"{d} devices ms | speed-up | same bits" for d in many)
        + " |",
        "|---|---|---|---:|" + "---:|---:|---|" * len(many),
    ]
    rows = data["rows"]
    for r in (r for r in rows if r["devices"] == 1):
        key = (r["batch"], r["n"], r["op"], r["reg"])
        cells = [f"{r['ms']:.2f}"]
        for d in many:
            (o,) = [o for o in rows if (o["batch"], o["n"], o["op"], o["reg"]) == key
                    and o["devices"] == d]  # fmt: skip
            cells += [f"{o['ms']:.2f}", f"{o['speedup']:.2f}", "yes" if o["same_bits"] else "no"]
        out.append(
            f"| {r['batch']} × {r['n']} | {r['op']} | {r['reg']} | " + " | ".join(cells) + " |"
        )
    for d in many:
        sel = [o for o in rows if o["devices"] == d]
        hit = sum(o["speedup"] >= 1.7 for o in sel)
        out += ["", f"{d} devices: ≥ 1.7× one device at {hit} of {len(sel)} points (lowest"
                f" {min(o['speedup'] for o in sel):.2f}×)."]  # fmt: skip
    return "\n".join(out) + "\n"


def render_bench_pnorm(data: dict) -> str:
    """Markdown for ``benchmarks/bench_pnorm.py --json``: p-norm ops over the L2 op, same run."""
    meta, rows = data["meta"], data["rows"]
    out = [
        f"`python benchmarks/bench_pnorm.py` on {meta['backend']} ({meta['machine']}, load average"
        f" {meta['load_avg']:.1f} at the start and {meta['load_avg_end']:.1f} at the end), jax"
        f" {meta['jax']}, {meta['date']}; float32, forward+backward (`jax.grad` of"
        f" `sum(op(x) * u)`), medians of {meta['repeats']} interleaved repeats; ratios to the L2"
        " op of the same shape and strength.",
        "",
        "| batch × n | op | ε | L2 ms | p=3/2 / L2 | p=4/3 / L2 | L2 / `jnp.sort` "
        "| temp MiB (L2, 3/2, 4/3) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    by = {(r["batch"], r["n"], r["op"], r["eps"], r["regularization"]): r for r in rows}
    points = sorted({(r["batch"], r["n"], r["op"], r["eps"]) for r in rows},
                    key=lambda k: (k[0] * k[1], k[0], k[2], -k[3]))  # fmt: skip
    worst = 0.0
    for b, n, op, eps in points:
        l2, p32, p43 = (by[(b, n, op, eps, reg)] for reg in ("l2", "p=3/2", "p=4/3"))
        worst = max(worst, p32["over_l2"], p43["over_l2"])
        mib = ", ".join(f"{r['temp_bytes'] / 2**20:.1f}" for r in (l2, p32, p43))
        out.append(
            f"| {b} × {n} | soft_{op} | {eps:g} | {l2['ms']:.2f} | {_r(p32['over_l2'])}"
            f" | {_r(p43['over_l2'])} | {_r(l2['ms'] / l2['sort_ms'])} | {mib} |"
        )
    out += ["", f"The p-norm ops take at most {worst:.1f}× the L2 op's time here."]
    return "\n".join(out) + "\n"


RENDERERS: dict[str, Callable[[dict], str]] = {
    "bench_sort": render_bench_sort,
    "bench_sort_1core": render_bench_sort_1core,
    "bench_softjax": render_bench_softjax,
    "bench_host_devices": render_bench_host_devices,
    "bench_pnorm": render_bench_pnorm,
}
