"""GPU check: every public op against float64 CPU references, and timings on the same device.

    python benchmarks/gpu_check.py --out DIR          # on a CUDA machine, in under 5 minutes
    python benchmarks/gpu_check.py --quick --out DIR  # tiny shapes, any device (CI runs it on CPU)

Writes ``DIR/gpu_check.json`` (everything) and ``DIR/gpu_check.md`` (the report), and prints the
report. Three parts, on JAX's default device (the GPU when JAX has CUDA):

1. Correctness: every name in ``softops.__all__`` at small sizes, float32 on the device against
   float64 on the CPU: the values and a vector-Jacobian product (the gradient of ``<out, u>``),
   as max |device - reference| / max |reference|. Forward-gradient estimators are compared as
   values (the estimate is their output; both sides draw the same tangents from the same key).
   Exit status 1 when a check exceeds its tolerance (after writing the files).
2. Timings: forward+backward (``jax.grad`` of ``<op(x), u>``, jitted, medians of interleaved
   repeats) of ``isotonic_l2``, ``soft_rank``/``soft_sort`` (L2 and KL, both exact solvers), the
   top-k mask and the sorted top-k, against ``jnp.sort`` and ``lax.top_k`` forward+backward of
   the same array on the same device; at torchisotonic's shapes (1e6×16, 100×1000, 1×1e5, 1×1e7)
   and bench_sort's headline shapes (1×1000, 1×1e5, 32×1e4, 256×1000). A case that runs out of
   memory is recorded as such; cases left when ``--budget-s`` is spent are recorded as skipped.
3. Peers on CUDA when they import: torchsort (soft_rank/soft_sort, L2 and KL) and torchisotonic,
   forward+backward at the same shapes, timed with ``torch.cuda.synchronize``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # float64 references on the CPU; timings use float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import medians  # noqa: E402

import softops  # noqa: E402
from softops import forward_grad as fg  # noqa: E402
from softops import losses  # noqa: E402

TOL_VALUE, TOL_GRAD = 2e-3, 2e-2  # relative to the reference's largest magnitude (float32)
ISO_SHAPES = [(100, 1000), (1, 100_000), (1_000_000, 16), (1, 10_000_000)]  # torchisotonic's
SORT_SHAPES = [(1, 1000), (256, 1000), (32, 10_000), (1, 100_000)]  # bench_sort's headline
QUICK_SHAPES = [(4, 64)]
# Public names that are not device computations (types, a Python formula).
HOST_ONLY = {"SinkhornOutput", "SoftTopKOutput", "TopKMaskOutput", "perturbed_dim_factor"}


# ------------------------------------------------------------------------------ 1. correctness
def _ce(logits, y):
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]


def _dense(p, x):
    return x @ p["w"] + p["b"]


def _fg_params(x):
    """A two-layer MLP's parameters in x's dtype (deterministic)."""
    r = np.random.default_rng(7)
    mk = lambda *s: jnp.asarray(r.standard_normal(s) / np.sqrt(s[0]), x.dtype)  # noqa: E731
    return {"l": {"w": mk(16, 8), "b": jnp.zeros(8, x.dtype)},
            "h": {"w": mk(8, 3), "b": jnp.zeros(3, x.dtype)}}  # fmt: skip


def _block(p, x, tap):
    return tap(_dense, p["l"], x, activation=jnp.tanh)


def _head(p, h):
    return _dense(p["h"], h)


def _fvg(x, y):
    p = _fg_params(x)
    loss = lambda p: jnp.mean(_ce(_head(p, jnp.tanh(_dense(p["l"], x))), y))  # noqa: E731
    return fg.forward_value_and_grad(loss, num_tangents=4)(jax.random.key(0), p)


def _updates(x, transform):
    grads = {"w": x}
    return transform.update(grads, transform.init(grads), grads)[0]["w"]


def correctness_cases(rng) -> dict:
    """name -> (fn(*args), float64 numpy args, whether to check a vjp w.r.t. the first arg)."""
    b, n = 4, 16
    x, w = rng.standard_normal((b, n)), rng.standard_normal((b, n))
    pos = rng.random((b, n)) + 0.5
    y = (np.arange(b) % 3).astype(np.int32)
    rel = rng.integers(0, 4, (b, n)).astype(np.float64)
    feats = rng.standard_normal((32, 16))
    y32 = (np.arange(32) % 3).astype(np.int32)
    t = dict(temperature=0.3)
    c = {
        "isotonic_l2": (lambda s, w: softops.isotonic_l2(s, w), (x, w)),
        "isotonic_kl": (lambda s, w: softops.isotonic_kl(s, w), (x, w)),
        "isotonic_regression": (lambda v, p: softops.isotonic_regression(v, weights=p), (x, pos)),
        "projection_permutahedron": (lambda z, w: softops.projection_permutahedron(z, w), (x, w)),
        "projection_permutahedron_kl": (
            lambda z, p: softops.projection_permutahedron(z, p, regularization="kl"),
            (x, pos),
        ),
        "soft_quantile_normalization": (
            lambda v: softops.soft_quantile_normalization(v, jnp.linspace(-1, 1, n, dtype=v.dtype)),
            (x,),
        ),
        "soft_quantize": (lambda v: softops.soft_quantize(v, 4, regularization_strength=0.3), (x,)),
        "soft_topk_mask": (lambda v: softops.soft_topk_mask(v, 3, **t), (x,)),
        "soft_topk_mask_solve": (lambda v: softops.soft_topk_mask_solve(v, 3, **t).mask, (x,)),
        "soft_topk": (lambda v: softops.soft_topk(v, 3, **t), (x,)),
        "soft_topk_solve": (lambda v: softops.soft_topk_solve(v, 3, **t).values, (x,)),
        "soft_topk_magnitude": (lambda v: softops.soft_topk_magnitude(v, 3, **t), (x,)),
        "soft_topk_mask_p": (
            lambda v: softops.soft_topk_mask(v, 3, regularization="p=3/2", **t),
            (x,),
        ),
        "sinkhorn": (
            lambda cost: softops.sinkhorn(cost, epsilon=0.1).plan,
            (rng.random((b, 6, 5)),),
        ),
        "soft_permutation": (lambda v: softops.soft_permutation(v, **t), (x,)),
        "sort_with": (lambda crit, v: softops.sort_with(v, crit, k=3, **t), (x[0], x[1:].T)),
        "spearman_correlation": (lambda p, q: losses.spearman_correlation(p, q), (x, w)),
        "spearman_loss": (lambda p, q: losses.spearman_loss(p, q), (x, w)),
        "soft_ndcg": (
            lambda s, r: losses.soft_ndcg(s, r, k=5),  # strength relative to the spread
            (x, rel),
        ),
        "soft_topk_rank_loss": (
            lambda lg: losses.soft_topk_rank_loss(lg, jnp.asarray(y), k=2),
            (x,),
        ),
        "soft_topk_mask_loss": (
            lambda lg: losses.soft_topk_mask_loss(lg, jnp.asarray(y), k=2, **t),
            (x,),
        ),
        "soft_quantile": (lambda v: losses.soft_quantile(v, 0.3), (x,)),
        "soft_median": (lambda v: losses.soft_median(v), (x,)),
        "soft_lts_loss": (lambda v: losses.soft_lts_loss(v, trim=0.25), (x,)),
        "no_tap": (lambda v: fg.no_tap(_dense, _fg_params(v)["l"], v), (feats,)),
    }
    for reg in ("l2", "kl"):
        for method in ("sequential", "parallel"):
            for op in ("soft_rank", "soft_sort"):
                kw = dict(regularization=reg, method=method, regularization_strength=0.5)
                c[f"{op}_{reg}_{method}"] = (
                    lambda v, op=op, kw=kw: getattr(softops, op)(v, **kw),
                    (x,),
                )
    no_vjp = {
        "forward_value_and_grad": (lambda v: _fvg(v, jnp.asarray(y32)), (feats,)),
        "activity_value_and_grad": (
            lambda v: fg.activity_value_and_grad(_block, _head, _ce, num_tangents=4)(
                jax.random.key(0), _fg_params(v), v, jnp.asarray(y32)
            ),
            (feats,),
        ),  # fmt: skip
        "local_value_and_grad": (
            lambda v: fg.local_value_and_grad([_block], [_head], _ce, num_tangents=4)(
                jax.random.key(0), [_fg_params(v)], v, jnp.asarray(y32)
            ),
            (feats,),
        ),  # fmt: skip
        "sample_tangents": (lambda v: fg.sample_tangents(jax.random.key(1), {"x": v}), (x,)),
        "fgd": (lambda v: _updates(v, fg.fgd(0.1, decay=0.01)), (x,)),
        "scale_by_perturbed_dim": (lambda v: _updates(v, fg.scale_by_perturbed_dim()), (x,)),
    }
    out = {k: (f, a, True) for k, (f, a) in c.items()}
    out.update({k: (f, a, False) for k, (f, a) in no_vjp.items()})
    return out


def _covers(name: str, cases: dict) -> bool:
    return any(k == name or k.startswith(name + "_") for k in cases)


def _run_case(fn, args, vjp: bool, device, dtype):
    with jax.default_device(device):
        a = [
            jnp.asarray(v, dtype if np.issubdtype(v.dtype, np.floating) else v.dtype) for v in args
        ]
        a = [jax.device_put(v, device) for v in a]
        jitted = jax.jit(fn)  # one program per case (eager dispatch of the estimators is slow)
        if not vjp:
            return jax.tree.map(np.asarray, jitted(*a)), None
        out, pullback = jax.vjp(lambda first: jitted(first, *a[1:]), a[0])
        u = jax.tree.map(lambda o: jnp.cos(jnp.arange(o.size, dtype=o.dtype)).reshape(o.shape), out)
        return jax.tree.map(np.asarray, out), np.asarray(pullback(u)[0])


def _rel_err(got, ref) -> float:
    got, ref = jax.tree.leaves(got), jax.tree.leaves(ref)
    scale = max(float(np.max(np.abs(r))) for r in ref) if ref else 0.0
    err = max(float(np.max(np.abs(np.asarray(g, np.float64) - r))) for g, r in zip(got, ref))
    return err / max(scale, 1e-12)


def correctness(device) -> list[dict]:
    """Part 1: float32 on ``device`` against float64 on the CPU."""
    cases = correctness_cases(np.random.default_rng(0))
    missing = [n for n in softops.__all__ if n not in HOST_ONLY and not _covers(n, cases)]
    if missing:
        raise SystemExit(f"gpu_check covers no case for public ops {missing}: add them")
    cpu = jax.devices("cpu")[0]
    rows = []
    for name, (fn, args, vjp) in cases.items():
        row: dict = {"op": name}
        t0 = time.perf_counter()
        try:
            got, got_g = _run_case(fn, args, vjp, device, jnp.float32)
            ref, ref_g = _run_case(fn, args, vjp, cpu, jnp.float64)
            row["value_scale"] = max(float(np.max(np.abs(r))) for r in jax.tree.leaves(ref))
            row["grad_scale"] = float(np.max(np.abs(ref_g))) if vjp else None
            row["value_err"] = _rel_err(got, ref)
            row["grad_err"] = _rel_err(got_g, ref_g) if vjp else None
            row["finite"] = all(np.all(np.isfinite(v)) for v in jax.tree.leaves((got, got_g)))
            row["ok"] = bool(
                row["finite"]
                and row["value_scale"] > 0  # a check of zeros against zeros shows nothing
                and (row["grad_scale"] is None or row["grad_scale"] > 0)
                and row["value_err"] <= TOL_VALUE
                and (row["grad_err"] is None or row["grad_err"] <= TOL_GRAD)
            )
        except Exception as e:  # record and go on: the report is the point
            row.update(ok=False, error=f"{type(e).__name__}: {str(e)[:300]}")
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(f"  {name}: {'ok' if row['ok'] else 'FAIL'} {row.get('error', '')}", flush=True)
    return rows


# ---------------------------------------------------------------------------------- 2. timings
def _k(n: int) -> int:
    return max(1, min(8, n // 4))


def timing_fns(shape) -> dict:
    """name -> jitted forward+backward of ``x -> <op(x), u>`` (u drawn by the caller)."""
    n = shape[-1]
    k = _k(n)

    def fb(op):
        return jax.jit(jax.grad(lambda x, u: jnp.vdot(op(x), u)))

    fns = {
        "jnp.sort": fb(jnp.sort),
        "lax.top_k": jax.jit(jax.grad(lambda x, u: jnp.vdot(lax.top_k(x, k)[0], u[..., :k]))),
        "soft_topk_mask": fb(lambda x: softops.soft_topk_mask(x, k)),
        "soft_topk": jax.jit(
            jax.grad(lambda x, u: jnp.vdot(softops.soft_topk(x, k)[0], u[..., :k]))
        ),
    }
    for method in ("sequential", "parallel"):
        fns[f"isotonic_l2 {method}"] = fb(
            lambda x, m=method: softops.isotonic_l2(x, jnp.zeros_like(x), method=m)
        )
        for op in ("soft_rank", "soft_sort"):
            for reg in ("l2", "kl"):
                fns[f"{op} {reg} {method}"] = fb(
                    lambda x, op=op, reg=reg, m=method: getattr(softops, op)(
                        x, regularization=reg, method=m
                    )
                )
    return fns


def timings(shapes, repeats: int, deadline: float) -> list[dict]:
    """Part 2: one row per (shape, op), seconds and ratios over jnp.sort / lax.top_k."""
    rows = []
    for shape in shapes:
        key = jax.random.key(sum(shape))
        x = jax.random.normal(key, shape, jnp.float32)
        u = jax.random.normal(jax.random.fold_in(key, 1), shape, jnp.float32)
        ready, status = {}, {}
        for name, f in timing_fns(shape).items():
            if time.perf_counter() > deadline:
                status[name] = "skipped: time budget"
                continue
            try:
                jax.block_until_ready(f(x, u))  # compile and run once
                ready[name] = f
            except Exception as e:  # out of memory, mostly
                status[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        secs = medians(ready, (x, u), repeats) if ready else {}
        for name in timing_fns(shape):
            row = {"batch": shape[0], "n": shape[1], "op": name, "seconds": secs.get(name)}
            if name in status:
                row["status"] = status[name]
            base = "lax.top_k" if "topk" in name else "jnp.sort"
            if row["seconds"] is not None and secs.get(base):
                row["ratio"] = row["seconds"] / secs[base]
            rows.append(row)
        print(f"  {shape[0]} × {shape[1]}: {len(ready)} timed, {len(status)} not", flush=True)
        del x, u
    return rows


# ------------------------------------------------------------------------------------ 3. peers
def torch_peers(shapes, repeats: int, deadline: float) -> dict:
    """Part 3: torchsort and torchisotonic on CUDA, when they import."""
    try:
        import torch
    except ImportError:
        return {"status": "torch not installed"}
    if not torch.cuda.is_available():
        return {"status": "torch has no CUDA device"}
    fns, versions = {}, {"torch": torch.__version__}
    try:
        import torchsort

        versions["torchsort"] = getattr(torchsort, "__version__", "?")
        for op in ("soft_rank", "soft_sort"):
            for reg in ("l2", "kl"):
                fns[f"torchsort {op} {reg}"] = lambda x, op=op, reg=reg: getattr(torchsort, op)(
                    x, regularization=reg, regularization_strength=1.0
                )
    except ImportError:
        versions["torchsort"] = None
    try:
        import torchisotonic

        versions["torchisotonic"] = getattr(torchisotonic, "__version__", "?")
        fns["torchisotonic isotonic"] = lambda x: torchisotonic.isotonic(x, increasing=False)
    except ImportError:
        versions["torchisotonic"] = None
    rows = []
    for b, n in shapes:
        x = torch.randn(b, n, device="cuda")
        u = torch.randn(b, n, device="cuda")
        for name, f in fns.items():
            row = {"batch": b, "n": n, "op": name, "seconds": None}
            if time.perf_counter() > deadline:
                rows.append({**row, "status": "skipped: time budget"})
                continue
            try:
                times = []
                for i in range(repeats + 1):
                    xi = x.clone().requires_grad_(True)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    (f(xi) * u).sum().backward()
                    torch.cuda.synchronize()
                    if i:  # the first call warms up
                        times.append(time.perf_counter() - t0)
                row["seconds"] = float(np.median(times))
            except Exception as e:
                row["status"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            rows.append(row)
    return {"versions": versions, "rows": rows}


# ------------------------------------------------------------------------------------- report
def _fmt_s(s) -> str:
    return "–" if s is None else f"{1e3 * s:.3g}"


def report(data: dict) -> str:
    """The Markdown report of a run."""
    m = data["meta"]
    out = [
        f"# GPU check: {m['device']} ({m['platform']}), jax {m['jax']}, {m['date']}",
        "",
        f"## 1. Correctness: float32 on the device against float64 on the CPU "
        f"(tolerance {TOL_VALUE:g} values, {TOL_GRAD:g} vector-Jacobian products)",
        "",
        "| op | value error | vjp error | max abs value / vjp | finite | ok |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in data["correctness"]:
        if "error" in r:
            out.append(f"| {r['op']} | {r['error']} | | | | **no** |")
            continue
        g = "–" if r["grad_err"] is None else f"{r['grad_err']:.1e}"
        ok = "yes" if r["ok"] else "**no**"
        gs = "–" if r["grad_scale"] is None else f"{r['grad_scale']:.2g}"
        scales = f"{r['value_scale']:.2g} / {gs}"
        out.append(f"| {r['op']} | {r['value_err']:.1e} | {g} | {scales} | {r['finite']} | {ok} |")
    out += [
        "",
        "## 2. Forward+backward on the device: ms (× `jnp.sort`, or × `lax.top_k` for top-k)",
        "",
    ]
    shapes = sorted({(r["batch"], r["n"]) for r in data["timings"]}, key=lambda s: s[0] * s[1])
    ops = list(dict.fromkeys(r["op"] for r in data["timings"]))
    cell = {(r["batch"], r["n"], r["op"]): r for r in data["timings"]}
    out.append("| op | " + " | ".join(f"{b} × {n}" for b, n in shapes) + " |")
    out.append("|---|" + "---:|" * len(shapes))
    for op in ops:
        cells = []
        for b, n in shapes:
            r = cell.get((b, n, op), {})
            if r.get("seconds") is None:
                cells.append("OOM" if "RESOURCE" in r.get("status", "") else "–")
            elif "ratio" in r and op not in ("jnp.sort", "lax.top_k"):
                cells.append(f"{_fmt_s(r['seconds'])} ({r['ratio']:.2f}×)")
            else:
                cells.append(_fmt_s(r["seconds"]))
        out.append(f"| {op} | " + " | ".join(cells) + " |")
    peers = data["peers"]
    out += ["", "## 3. Peers on CUDA (forward+backward, ms)", ""]
    if "rows" not in peers:
        out.append(f"Not run: {peers['status']}.")
    else:
        out.append(f"Versions: {peers['versions']}.")
        out += ["", "| op | batch × n | ms |", "|---|---|---:|"]
        for r in peers["rows"]:
            note = r.get("status", "")
            out.append(f"| {r['op']} | {r['batch']} × {r['n']} | {_fmt_s(r['seconds'])} {note} |")
    failed = [r["op"] for r in data["correctness"] if not r["ok"]]
    out += ["", f"Correctness: {len(data['correctness']) - len(failed)} of "
            f"{len(data['correctness'])} checks within tolerance"
            + (f"; failed: {', '.join(failed)}." if failed else ".")]  # fmt: skip
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line; returns 1 when a correctness check fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="default 10 (quick: 2)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="stop timing after this (default 240; quick: none)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    budget = args.budget_s if args.budget_s is not None else (float("inf") if args.quick else 240.0)
    deadline = start + budget
    repeats = args.repeats or (2 if args.quick else 10)
    device = jax.devices()[0]
    # Small shapes first, so that the budget runs out on the largest ones if at all.
    shapes = sorted(dict.fromkeys(SORT_SHAPES + ISO_SHAPES), key=lambda s: s[0] * s[1])
    shapes = QUICK_SHAPES if args.quick else shapes
    print(f"device: {device.device_kind} ({device.platform}); part 1: correctness", flush=True)
    data: dict = {
        "meta": {
            "device": device.device_kind,
            "platform": device.platform,
            "jax": jax.__version__,
            "python": platform.python_version(),
            "quick": args.quick,
            "repeats": repeats,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
    }
    data["correctness"] = correctness(device)
    print("part 2: timings", flush=True)
    data["timings"] = timings(shapes, repeats, deadline)
    print("part 3: peers", flush=True)
    data["peers"] = torch_peers(shapes, repeats, deadline)
    data["meta"]["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(data, indent=1))
    text = report(data)
    (args.out / "gpu_check.md").write_text(text)
    print(text)
    print(f"wrote {args.out}/gpu_check.json and gpu_check.md in {data['meta']['seconds']:.0f} s")
    return 0 if all(r["ok"] for r in data["correctness"]) else 1


if __name__ == "__main__":
    sys.exit(main())
