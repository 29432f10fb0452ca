"""Renderers for the task suite's and the first-call benchmark's recorded runs.

``benchmarks/tasks/*.py --json`` and ``benchmarks/bench_compile.py --json``.

Imported by ``scripts/update_tables.py`` (``RENDERERS``); each takes the loaded JSON and returns
Markdown. Training results are the mean over seeds with the spread (min to max) beside it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

# NeuralSort's published four-digit MNIST results (Grover et al., ICLR 2019, Table 1,
# deterministic NeuralSort: exact match, element-wise where the issue quotes it): another data
# set (28x28 MNIST digits) and 100,000-step training, shown for context only.
NEURALSORT_MNIST = {3: (0.930, 0.951), 5: (0.837, None), 9: (0.649, None), 15: (0.386, 0.857)}

SORTING_METHODS = {
    "perm_bce": "softops `soft_permutation` + BCE",
    "spearman": "softops `spearman_loss`",
    "diffsort": "diffsort (odd-even network)",
}


def _spread(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}–{max(values):.3f})"


def _recorded(meta: dict, peers: str = "") -> str:
    """The table's first words: date, versions (softops where recorded, then peers), machine."""
    softops = f"softops {meta['softops']}, " if "softops" in meta else ""
    peers = f", {peers}" if peers else ""
    return (
        f"Recorded {meta['date']}: {softops}jax {meta['jax']}, Python {meta['python']}{peers}"
        f"; {meta['machine']}"
    )


def _runs(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    """The rows grouped by the values of ``keys`` (one group a configuration, over seeds)."""
    runs: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        runs[tuple(r[k] for k in keys)].append(r)
    return runs


def _spread_rows(runs, outer, labels: dict[str, str], fields: tuple[str, ...], extra=None):
    """Table rows ``| outer | label | spread of each field |`` for each recorded group.

    ``extra(rows)``, when given, is one more cell before the fields.
    """
    out = []
    for o in outer:
        for key, label in labels.items():
            rs = runs.get((o, key))
            if rs:
                cells = [_spread([r[f] for r in rs]) for f in fields]
                cells = cells if extra is None else [extra(rs), *cells]
                out.append(f"| {o} | {label} | " + " | ".join(cells) + " |")
    return out


def render_task_sorting(data: dict) -> str:
    """Markdown for ``benchmarks/tasks/sorting.py --json``.

    Per n and method, the final test exact-match and element-wise accuracy over seeds, and the
    seconds per training run.
    """
    meta = data["meta"]
    runs = _runs(data["rows"], "n", "method")
    sizes = sorted({n for n, _ in runs})
    methods = [m for m in SORTING_METHODS if any(m == k[1] for k in runs)]
    args = meta["args"]
    peers = ", ".join(f"{k} {v}" for k, v in sorted(meta.get("peers", {}).items()))
    out = [
        f"{_recorded(meta, peers)}; data: {meta['data']}; {args['steps']} steps of"
        f" {args['batch']} sequences, Adam {args['lr']:g}, {args['seeds']} seeds"
        " (mean, min–max). s / run: wall seconds of one training run, on a machine shared with"
        " other jobs; diffsort's include starting its interpreter and importing torch.",
        "",
        "| n | method | exact match | element-wise | s / run |",
        "|---:|---|---:|---:|---:|",
    ]
    for n in sizes:
        for m in methods:
            rs = runs.get((n, m))
            if not rs:
                continue
            em = _spread([r["curve"][-1][1] for r in rs])
            ew = _spread([r["curve"][-1][2] for r in rs])
            secs = sorted(r["seconds"] for r in rs)[len(rs) // 2]
            out.append(f"| {n} | {SORTING_METHODS[m]} | {em} | {ew} | {secs:.0f} |")
        if n in NEURALSORT_MNIST:
            em_p, ew_p = NEURALSORT_MNIST[n]
            ew_s = "—" if ew_p is None else f"{ew_p:.3f}"
            out.append(
                f"| {n} | *NeuralSort, published, MNIST, 100k steps* | *{em_p:.3f}* | *{ew_s}* | |"
            )
    return "\n".join(out) + "\n"


TOPK_LOSSES = {
    "cross_entropy": "cross-entropy",
    "rank_k1": "`soft_topk_rank_loss` (k = 1)",
    "rank_k5": "`soft_topk_rank_loss` (k = 5)",
    "mask_k1": "`soft_topk_mask_loss` (k = 1)",
    "mask_k5": "`soft_topk_mask_loss` (k = 5)",
    "mix_1_5": "P_K mix of k = 1 and 5 (mask loss)",
}


def render_task_topk(data: dict) -> str:
    """Markdown for ``benchmarks/tasks/topk_classification.py --json``.

    Per data set and loss (each at its defaults), test top-1 and top-5 accuracy over seeds.
    """
    meta, args = data["meta"], data["meta"]["args"]
    runs = _runs(data["rows"], "data", "loss")
    out = [
        f"{_recorded(meta)}; {args['steps']} steps, {args['seeds']} seeds (mean, min–max).",
        "",
        "| data | loss (defaults) | top-1 | top-5 |",
        "|---|---|---:|---:|",
        *_spread_rows(runs, args["data"], TOPK_LOSSES, ("top1", "top5")),
    ]
    return "\n".join(out) + "\n"


def _strengths(rows: list[dict]) -> str:
    return ", ".join("—" if r["strength"] is None else f"{r['strength']:g}" for r in rows)


def render_task_topk_tuned(data: dict) -> str:
    """Markdown for ``topk_classification.py --tuned --json``: the strength chosen per seed."""
    meta, args = data["meta"], data["meta"]["args"]
    runs = _runs(data["rows"], "data", "loss")
    out = [
        f"{_recorded(meta)}; {args['steps']} steps, {args['seeds']} seeds (mean, min–max); "
        "the strength (`regularization_strength` of the rank loss, `epsilon` of the mask "
        "losses) chosen per seed on a validation fifth of the training set, every model "
        "trained on the other four fifths.",
        "",
        "| data | loss (tuned) | chosen strength per seed | top-1 | top-5 |",
        "|---|---|---|---:|---:|",
        *_spread_rows(runs, args["data"], TOPK_LOSSES, ("top1", "top5"), _strengths),
    ]
    return "\n".join(out) + "\n"


KNN_METRICS = {
    "knn_soft_topk_embedding": "hard kNN on the embedding trained through `soft_topk_mask`",
    "knn_pixels": "hard kNN on the raw pixels",
    "cross_entropy": "cross-entropy network, same body",
}


def render_task_knn(data: dict) -> str:
    """Markdown for ``benchmarks/tasks/knn.py --json``: test accuracy per training length."""
    meta, args = data["meta"], data["meta"]["args"]
    first = data["runs"][0]
    out = [
        f"{_recorded(meta)}; {first['dataset']}, {first['n_train']} training"
        f" and {first['n_test']} test images, k = {args['k']}, ε = {args['epsilon']:g},"
        f" {len(first['seeds'])} seeds (mean, min–max).",
        "",
        "| steps | " + " | ".join(KNN_METRICS.values()) + " |",
        "|---:|" + "---:|" * len(KNN_METRICS),
    ]
    for run in data["runs"]:
        cells = [_spread(run[m]["values"]) for m in KNN_METRICS]
        out.append(f"| {run['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


MOE_ROUTERS = {
    "hard": "hard top-2 (`lax.top_k`) + load loss",
    "dense": "dense softmax gates (every expert)",
    "sparse": "`routing.token_choice`, L2 (capped simplex)",
    "sparse_p43": "`routing.token_choice`, p = 4/3",
}


def render_task_moe(data: dict) -> str:
    """Markdown for ``benchmarks/tasks/moe.py --json``: accuracy, expert load, drops, step time."""
    hard_ms = statistics.median(data["hard"]["step_s"])
    out = [
        f"{_recorded(data['meta'])}; digits, {data['experts']} experts, top-{data['k']},"
        f" batch {data['batch']}, {data['steps']} steps, {data['seeds']} seeds (mean, min–max);"
        " step time: the median over seeds of each run's median step, and its ratio to the"
        " hard router's, same run.",
        "",
        "| router | test accuracy | busiest expert's load | idlest expert's load"
        " | assignments dropped | step (ms) | × hard |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in MOE_ROUTERS.items():
        r = data.get(key)
        if r is None:
            continue
        step = statistics.median(r["step_s"])
        cells = [
            _spread(r["acc"]),
            _spread([max(load) for load in r["load"]]),
            _spread([min(load) for load in r["load"]]),
            _spread(r["dropped"]),
            f"{1e3 * step:.2f}",
            f"{step / hard_ms:.2f}",
        ]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def render_ltr(data: dict) -> str:
    """Markdown for ``benchmarks/tasks/ltr.py --json``.

    Test NDCG@10 per list length, layout and loss, the median training-step time, the first-call
    compile time and the compiled temporary memory; then, per list length and layout, softops'
    best loss against rax's best.
    """
    meta = data["meta"]
    loaded = meta["load_avg"] > meta["cpu_count"] or meta["load_avg_end"] > meta["cpu_count"]
    note = " (a loaded machine: times are only comparable within a row group)" if loaded else ""
    out = [
        f"Recorded {meta['date']}: jax {meta['jax']}, rax {meta['rax']}, Python {meta['python']};"
        f" {meta['cpu_count']} cores, load average {meta['load_avg']:.1f} at the start and"
        f" {meta['load_avg_end']:.1f} at the end{note}; {meta['steps']} steps,"
        f" {meta['seeds']} seeds (mean, min–max); a loss whose compiled step needs more than"
        f" {meta['max_gib']:g} GiB of temporary memory is not run.",
        "",
        "| L | layout | loss | test NDCG@10 | step ms | compile s | temp MiB |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        temp = "" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:,.1f}"
        if not r["ndcg"]:
            cells = ["not run (over the memory cap)", "", f"{r['compile_s']:.1f}", temp]
        else:
            cells = [
                _spread(r["ndcg"]),
                f"{1e3 * r['step_s']:.2f}",
                f"{r['compile_s']:.1f}",
                temp,
            ]
        out.append(f"| {r['length']} | {r['layout']} | {r['method']} | " + " | ".join(cells) + " |")
    for length, value in sorted(data["oracle"].items(), key=lambda t: int(t[0])):
        out.append(f"| {length} | | *oracle (noise-free utility)* | *{value:.3f}* | | | |")
    out += ["", *_ltr_best(data["rows"])]
    return "\n".join(out) + "\n"


def _ltr_best(rows: list[dict]) -> list[str]:
    """Per list length and layout: softops' best loss against rax's (by mean test NDCG@10)."""
    groups: dict[tuple, dict[str, list]] = defaultdict(lambda: {"softops": [], "rax": []})
    for r in rows:
        library = r["method"].split()[0]
        if r["ndcg"] and library in ("softops", "rax"):
            groups[(r["length"], r["layout"])][library].append(r)
    out = [
        "| L | layout | softops' best | rax's best | NDCG@10 points | step × rax approx"
        " | compile × rax approx |",
        "|---:|---|---|---|---:|---:|---:|",
    ]
    for (length, layout), g in sorted(groups.items()):
        if not g["softops"]:
            continue
        best = max(g["softops"], key=lambda r: statistics.mean(r["ndcg"]))
        mean = statistics.mean(best["ndcg"])
        approx = [r for r in g["rax"] if r["method"] == "rax approx"]
        step = compile_ = "rax approx not run"
        if approx:
            step = f"{best['step_s'] / approx[0]['step_s']:.2f}"
            compile_ = f"{best['compile_s'] / approx[0]['compile_s']:.1f}"
        if g["rax"]:
            top = max(g["rax"], key=lambda r: statistics.mean(r["ndcg"]))
            top_mean = statistics.mean(top["ndcg"])
            gap = f"{100 * (mean - top_mean):+.2f}"
            rax_cell = f"{top['method']} {top_mean:.3f}"
        else:
            gap, rax_cell = "", "none ran"
        out.append(
            f"| {length} | {layout} | {best['method']} {mean:.3f} | {rax_cell} | {gap}"
            f" | {step} | {compile_} |"
        )
    return out


QUANTILE_MODELS = {
    "soft_median": "`soft_median` (defaults), squared error",
    "soft_median_10": "`soft_median` (strength 10), squared error",
    "hard_median": "`jnp.median`, squared error",
    "pinball": "`jnp.median`, pinball loss (q = 1/2)",
    "set_mean": "set mean (cannot sort), squared error",
}


def render_task_quantile(data: dict) -> str:
    """Markdown for ``benchmarks/tasks/quantile.py --json``.

    Test MSE and R² of the predicted median per set size and model.
    """
    meta, args = data["meta"], data["meta"]["args"]
    runs = _runs(data["rows"], "n", "model")
    out = [
        f"{_recorded(meta)}; data: {meta['data']}; {args['steps']} steps of"
        f" {args['batch']} sets, Adam {args['lr']:g}, {args['seeds']} seeds (mean, min–max);"
        " the median value over 10,000.",
        "",
        "| n | model | test MSE | test R² |",
        "|---:|---|---:|---:|",
        *_spread_rows(runs, sorted({k[0] for k in runs}), QUANTILE_MODELS, ("mse", "r2")),
    ]
    return "\n".join(out) + "\n"


def render_bench_compile(data: dict) -> str:
    """Markdown for ``benchmarks/bench_compile.py --json``: first-call seconds per op."""
    meta = data["meta"]
    batch, n = meta["shape"]
    out = [
        f"{_recorded(meta)}, load average {meta['load_avg']:.1f}; forward+"
        f"backward at {batch} × {n}, float32, median of {meta['repeats']} fresh compilations;"
        " the ratio is over the hard op's total in the same run.",
        "",
        "| op | trace s | lower s | XLA compile s | total s | × hard op |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.1f} (`{r['hard']}`)"
        out.append(
            f"| `{r['op']}` | {r['trace']:.2f} | {r['lower']:.2f} | {r['compile']:.2f}"
            f" | {r['total']:.2f} | {ratio} |"
        )
    return "\n".join(out) + "\n"


RENDERERS = {
    "bench_compile": render_bench_compile,
    "task_quantile": render_task_quantile,
    "ltr": render_ltr,
    "task_sorting": render_task_sorting,
    "task_sorting_n15": render_task_sorting,
    "task_topk": render_task_topk,
    "task_topk_tuned": render_task_topk_tuned,
    "task_knn": render_task_knn,
    "task_moe": render_task_moe,
}
