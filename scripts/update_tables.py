"""Regenerates the benchmark tables in README.md and the docs from recorded JSON.

    python scripts/update_tables.py          # rewrite the tables between the markers
    python scripts/update_tables.py --check  # exit 1 if a table differs from its JSON

A table named ``NAME`` (or ``NAME.PART``, several tables of one run) lives between
``<!-- BEGIN NAME -->`` and ``<!-- END NAME -->`` in README.md or any ``docs/*.md`` and is rendered
from ``benchmarks/results/NAME.json`` by ``RENDERERS[NAME]`` (``RENDERERS[NAME.PART]``); a run
recorded as a Markdown report (``NAME.md``) is passed as ``{"markdown": text}``. A new
benchmark plugs in by adding a renderer (a function from the loaded JSON to markdown) to
``RENDERERS`` and its markers to the files. Rewriting is idempotent: the output depends only on
the JSON files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import extra_tables  # noqa: E402
import sort_tables  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
MARKERS = re.compile(r"(<!-- BEGIN (\S+) -->\n)(.*?)(<!-- END \2 -->)", re.DOTALL)


def _eps(value: float) -> str:
    """0.1, 1e-2, 1e-3, ...: the docs' spelling of ε."""
    if value >= 0.1:
        return f"{value:g}"
    mant, exp = f"{value:.0e}".split("e")
    return f"{mant}e{int(exp)}"


def render_bench_topk_convergence(data: dict) -> str:
    """Markdown for ``benchmarks/bench_topk_convergence.py --json`` output."""
    meta, rows = data["meta"], data["rows"]
    first = rows[0]
    out = [
        f"`python benchmarks/bench_topk_convergence.py` on {meta['backend']}, jax {meta['jax']}, "
        f"{meta['date']}: {first['batch']} rows of n = {first['n']} standard-normal scores, "
        f"k = {first['k']}.",
        "",
        "| solver | dtype | ε | max iterations | converged | max residual "
        "| max abs(values − top_k) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        its = f"{r['max_iterations']}"
        if r["max_iterations"] >= meta["max_iter"]:
            its += " (cap)"
        out.append(
            f"| {r['solver']} | {r['dtype']} | {_eps(r['epsilon'])} | {its} "
            f"| {100 * r['converged_fraction']:.0f} % | {r['max_residual']:.1e} "
            f"| {r['max_abs_error']:.2g} |"
        )
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- forward gradients

FG_METHODS = (
    ("backprop", "backprop"),
    ("fgd", "FGD, weight-perturbed (`forward_value_and_grad`)"),
    ("fgd_activity", "FGD, activity-perturbed (`activity_value_and_grad`, whole net one block)"),
    ("fgd_local", "FGD, activity-perturbed + local losses (`local_value_and_grad`, {groups})"),
)


def _steps(v: float) -> str:
    return "not reached" if v == float("inf") else f"{v:.0f}"


def _times(v: float) -> str:
    return "—" if v == float("inf") else f"{v:.2f}"


def render_fg_training(data: dict) -> str:
    """Training table of ``benchmarks/bench_local_losses.py --out`` (backprop vs FGD variants)."""
    t = data["training"]
    units = t["hidden"] // t["num_groups"]
    meta = data.get("meta")
    versions = (
        f"Recorded {meta['date']}: softops {meta['softops']}, jax {meta['jax']}, Python "
        f"{meta['python']}; "
        if meta
        else "Recorded before runs stated their versions (no JAX version in the file); "
    )
    out = [
        f"{versions}{t['dataset']}, {t['steps']:,} steps of batch {t['batch']}, hidden width "
        f"{t['hidden']}, {t['seeds']} seeds (test accuracy: mean ± std over seeds; steps and "
        f"time to the target {t['target_acc']:.4f}, backprop's accuracy minus one point: medians "
        "over seeds; ratios to backprop from the same run):",
        "",
        "| method | lr | test accuracy | steps to target | time to target / backprop's "
        "| step cost / backprop's |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in FG_METHODS:
        label = label.format(groups=f"{t['num_groups']} groups of {units} units")
        out.append(
            f"| {label} | {t[f'lr_{key}']:g} | {t[f'test_acc_{key}']:.4f} ± "
            f"{t[f'test_acc_std_{key}']:.4f} | {_steps(t[f'steps_to_target_{key}'])} | "
            f"{_times(t[f'time_ratio_{key}'])} | {t[f'step_cost_ratio_{key}']:.2f} |"
        )
    return "\n".join(out) + "\n"


def render_fg_groups(data: dict) -> str:
    """The units-per-group sweep of the local losses (same run, backprop re-run beside it)."""
    t, sweep = data["training"], data["groups_sweep"]
    groups = sorted(int(k[len("lr_G=") :]) for k in sweep if k.startswith("lr_G="))
    cols = [("main", t["num_groups"])] + [("sweep", g) for g in groups]
    cols.sort(key=lambda c: -t["hidden"] // c[1])
    head = [f"{t['hidden'] // g}" + (" (exact)" if t["hidden"] == g else "") for _, g in cols]

    def cell(kind: str, g: int, field: str) -> float:
        return t[f"{field}_fgd_local"] if kind == "main" else sweep[f"{field}_G={g}"]

    out = [
        "| units per group | " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(cols),
        "| test accuracy | " + " | ".join(f"{cell(k, g, 'test_acc'):.4f}" for k, g in cols) + " |",
        "| steps to target | "
        + " | ".join(_steps(cell(k, g, "steps_to_target")) for k, g in cols)
        + " |",
        "| time / backprop's | "
        + " | ".join(_times(cell(k, g, "time_ratio")) for k, g in cols)
        + " |",
        "",
        f"({t['hidden'] // t['num_groups']} units per group: the row of the first table; the "
        f"others from the sweep that followed in the same run, where backprop needed "
        f"{sweep['steps_to_target_backprop']:.0f} steps.)",
    ]
    return "\n".join(out) + "\n"


def _cos_ratio(a: list[float], w: list[float]) -> str:
    """``a / w`` of mean cosines; a lower bound when ``w`` is within 2 standard errors of 0."""
    if w[0] - 2 * w[1] <= 0:
        return f"≥ {_x(a[0] / (max(w[0], 0.0) + 2 * w[1]))}"
    return _x(a[0] / w[0])


def _x(r: float) -> str:
    return f"{r:.0f}×" if r >= 10 else f"{r:.1f}×"


def render_fg_cosine(data: dict) -> str:
    """Cosine similarities with one tangent, hidden layers, at initialization and trained."""
    out = [
        "| weights | objective | weight-perturbed | activity-perturbed | other estimator |",
        "|---|---|---:|---:|---:|",
    ]
    for entry in data["cosine"]:
        if entry["K"] != 1:
            continue
        cos = entry["cos"]
        weight = cos["weight"]
        layers = [name for name in weight if "head" not in name]
        third = next(m for m in cos if m not in ("weight", "activity"))

        def cells(method: str) -> str:
            vals = " / ".join(f"{cos[method][n][0]:.3g}" for n in layers)
            if method == "weight":
                return vals
            ratios = ", ".join(_cos_ratio(cos[method][n], weight[n]) for n in layers)
            return f"{vals} ({ratios})"

        when = "initial" if entry["when"] == "init" else "after backprop training"
        out.append(
            f"| {when} | {entry['objective']}, layer 1 / layer 2 | {cells('weight')} | "
            f"{cells('activity')} | {third}: {cells(third)} |"
        )
    return "\n".join(out) + "\n"


def render_fg_memory(data: dict) -> str:
    """Compiled temporary memory of one gradient evaluation."""
    mem = data["memory"]
    per = mem["per_method"]
    names = dict(FG_METHODS)
    out = ["| method | temporary memory (KB) |", "|---|---:|"]
    for key, label in names.items():
        out.append(f"| {label.split(' (')[0]} | {per[key] / 1e3:.1f} |")
    out += ["", "| blocks of width 128 | backprop (KB) | local losses (KB) |", "|---:|---:|---:|"]
    for depth, bp, loc in mem["depth"]:
        out.append(f"| {depth} | {bp / 1e3:.1f} | {loc / 1e3:.1f} |")
    return "\n".join(out) + "\n"


def render_bench_topk(data: dict) -> str:
    """The recorded Markdown report of ``benchmarks/bench_topk.py``, headings demoted."""
    lines = data["markdown"].strip().splitlines()
    out = []
    for line in lines:
        if line.startswith("# "):  # the run's title line: how it was produced
            out.append(f"Recorded run: `{line[2:].strip()}`.")
        elif line.startswith("#"):
            out.append("###" + line.lstrip("#").rstrip() if line.startswith("## ") else line)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def render_bench_topk_mask(data: dict) -> str:
    """Markdown for ``benchmarks/bench_topk_mask.py --json`` output."""
    out = [
        f"`python benchmarks/bench_topk_mask.py` on {data['backend']}, float32: medians of "
        "`lax.top_k` (values) and `soft_topk_mask` (default solver, `epsilon=ε`), forward and "
        "forward+backward (`jax.grad` of `<op(x), w>`), timed in the same loop; ratios over "
        "`lax.top_k` of the same array.",
        "",
        "| batch × n | k | ε | top_k fwd / fwd+bwd (ms) | mask fwd / fwd+bwd (ms) | fwd × "
        "| fwd+bwd × | fwd+bwd × top_k fwd | iterations max (mean) | max residual |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in data["rows"]:
        ms = r["ms"]
        out.append(
            f"| {r['batch']} × {r['n']} | {r['k']} | {r['epsilon']:g} "
            f"| {ms['top_k']:.3f} / {ms['top_k fb']:.3f} | {ms['mask']:.3f} / {ms['mask fb']:.3f} "
            f"| {r['fwd']:.2f} | {r['fb']:.2f} | {r['fb_over_topk_fwd']:.2f} "
            f"| {r['max_iterations']} ({r['mean_iterations']:.1f}) | {r['max_residual']:.1e} |"
        )
    return "\n".join(out) + "\n"


def render_bench_forward_grad(data: dict) -> str:
    """Markdown for ``benchmarks/bench_forward_grad.py --json`` output."""
    meta = data["meta"]
    out = [
        f"`python benchmarks/bench_forward_grad.py` on {meta['backend']} ({meta['cpu_count']} "
        f"cores, shared), jax {meta['jax']}, {meta['date']}; batch {meta['batch']}, float32, "
        f"{meta['rounds']} interleaved rounds per model, medians of the per-round ratios (each "
        "ratio of two timings taken in the same round). Rf: `jax.jvp` of the loss over one "
        "forward pass; Rb: `jax.value_and_grad` over one forward pass; FGD step / SGD step: "
        "`forward_value_and_grad` (tangent sampling included) plus an SGD update over "
        "`value_and_grad` plus the same update; sampling: `sample_tangents` alone, next to "
        "writing d ones (the floor).",
        "",
        "| model | d | forward (ms) | Rf | Rb | Rf / Rb | FGD step / SGD step | sampling / fwd "
        "| write d ones / fwd |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["models"]:
        out.append(
            f"| {r['model']} | {r['d']:,} | {r['fwd_ms']:.2f} | {r['Rf']:.2f} | {r['Rb']:.2f} "
            f"| {r['Rf/Rb']:.2f} | {r['fgd/sgd']:.2f} | {r['sample/fwd']:.2f} "
            f"| {r['ones/fwd']:.2f} |"
        )
    out += [
        "",
        "Compiled temporary memory (`memory_analysis().temp_size_in_bytes`), tanh MLP of width 64, "
        "batch 256:",
        "",
        "| depth | `forward_value_and_grad` (MB) | `value_and_grad` (MB) | backprop / forward |",
        "|---:|---:|---:|---:|",
    ]
    for m in data["memory"]:
        fwd, bwd = m["jvp_bytes"], m["grad_bytes"]
        ratio = bwd / max(fwd, 1)
        out.append(f"| {m['depth']} | {fwd / 1e6:.3f} | {bwd / 1e6:.3f} | {ratio:.1f} |")
    return "\n".join(out) + "\n"


RENDERERS: dict[str, Callable[[dict], str]] = {
    "bench_forward_grad": render_bench_forward_grad,
    "bench_topk": render_bench_topk,
    "bench_topk_mask": render_bench_topk_mask,
    "bench_local_losses.training": render_fg_training,
    "bench_local_losses.groups": render_fg_groups,
    "bench_local_losses.cosine": render_fg_cosine,
    "bench_local_losses.memory": render_fg_memory,
    "bench_topk_convergence": render_bench_topk_convergence,
    **extra_tables.RENDERERS,
    **sort_tables.RENDERERS,
}


def rewrite(text: str, results: Path = RESULTS) -> str:
    """``text`` with every known table between its markers regenerated."""

    def sub(m: re.Match) -> str:
        name = m.group(2)
        if name not in RENDERERS:
            raise SystemExit(f"no renderer for table {name!r} (known: {sorted(RENDERERS)})")
        path = results / f"{name.split('.')[0]}.json"
        report = path.with_suffix(".md")  # a run recorded as its Markdown report
        if not path.exists() and report.exists():
            body = RENDERERS[name]({"markdown": report.read_text()})
            return m.group(1) + body + m.group(4)
        if not path.exists():
            raise SystemExit(f"table {name!r} needs {path.relative_to(ROOT)}")
        body = RENDERERS[name](json.loads(path.read_text()))
        return m.group(1) + body + m.group(4)

    return MARKERS.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    """Rewrites (or with ``--check`` verifies) the tables; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if any table is stale")
    args = parser.parse_args(argv)
    stale = []
    for path in TARGETS:
        old = path.read_text()
        new = rewrite(old)
        if new == old:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.write_text(new)
    if args.check and stale:
        print("stale tables in: " + ", ".join(map(str, stale)), file=sys.stderr)
        print("run: python scripts/update_tables.py", file=sys.stderr)
        return 1
    for p in stale:
        print(f"updated {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
