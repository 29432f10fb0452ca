"""Exactly sparse top-k masks: time as × ``lax.top_k`` and × the entropic mask (one run).

    python benchmarks/bench_sparse_topk.py                      # the shapes below, float32
    python benchmarks/bench_sparse_topk.py --json out.json --md out.md
    python benchmarks/bench_sparse_topk.py --quick              # one small shape (smoke)

Per (batch, n, k): medians (jit, warmed up, ``block_until_ready``, interleaved in one loop) of
the forward and of the forward+backward (``jax.grad`` of ``<op(x), w>``) of

- ``lax.top_k`` (values; its backward is a scatter of ``w`` at the k indices),
- ``soft_topk_mask(x, k, temperature=T)`` (the entropic mask, ``regularization="kl"``),
- ``soft_topk_mask(x, k, temperature=T, regularization=r)`` for ``r`` in ``"l2"``, ``"p=3/2"``,
  ``"p=4/3"``,

with T = 0.5 (scores are standard normal). Printed: milliseconds, the ratios of each sparse
mask's forward+backward to ``lax.top_k``'s forward+backward and to the entropic mask's
forward+backward (same process, same run), the mean number of nonzeros per row and the
maximum number of passes of the threshold search.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's softops

import jax
import jax.numpy as jnp
import numpy as np
from _timing import medians  # noqa: E402  (benchmarks/, the script's folder)
from jax import lax

from softops.topk_ot import soft_topk_mask, soft_topk_mask_solve  # noqa: E402

# (batch, n, k): attention-like rows, and mixture-of-experts router shapes (tokens x experts)
SHAPES = ((64, 256, 8), (64, 4096, 16), (8192, 8, 2), (8192, 64, 2), (1024, 256, 8))
REGS = ("l2", "p=3/2", "p=4/3")
TEMPERATURE = 0.5


def case(batch: int, n: int, k: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)
    u = jnp.asarray(rng.standard_normal((batch, k)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)

    def top(x):
        return lax.top_k(x, k)[0]

    def mask(reg):
        return lambda x: soft_topk_mask(x, k, temperature=TEMPERATURE, regularization=reg)

    fns = {"top_k": jax.jit(top), "top_k fb": jax.jit(jax.grad(lambda x: jnp.sum(top(x) * u)))}
    for reg in ("kl", *REGS):
        f = mask(reg)
        fns[reg] = jax.jit(f)
        fns[f"{reg} fb"] = jax.jit(jax.grad(lambda x, f=f: jnp.sum(f(x) * w)))
    t = medians(fns, (x,), repeats, warmup=3)
    row: dict = {"batch": batch, "n": n, "k": k, "temperature": TEMPERATURE}
    row["ms"] = {name: 1e3 * v for name, v in t.items()}
    for reg in REGS:
        out = jax.jit(
            lambda x, reg=reg: soft_topk_mask_solve(
                x, k, temperature=TEMPERATURE, regularization=reg
            )
        )(x)
        row[reg] = {
            "fb_over_top_k_fb": t[f"{reg} fb"] / t["top_k fb"],
            "fb_over_kl_fb": t[f"{reg} fb"] / t["kl fb"],
            "fwd_over_top_k": t[reg] / t["top_k"],
            "nonzeros_per_row": float((out.mask > 0).sum(-1).mean()),
            "max_passes": int(out.iterations.max()),
            "converged": bool(out.converged.all()),
        }
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="64 x 256, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="default 30 (quick: 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--md", metavar="PATH", help="also write the table as Markdown")
    args = parser.parse_args(argv)
    shapes = SHAPES[:1] if args.quick else SHAPES
    repeats = args.repeats or (3 if args.quick else 30)
    lines = [
        f"backend {jax.default_backend()}, float32, temperature {TEMPERATURE}, "
        f"medians of {repeats} interleaved repeats",
        "",
        "| batch×n | k | top_k fb (ms) | kl fb (ms) | reg | fb (ms) | fb × top_k fb | "
        "fb × kl fb | fwd × top_k | nonzeros/row | passes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for line in lines:
        print(line, flush=True)
    rows = []
    for batch, n, k in shapes:
        r = case(batch, n, k, repeats)
        rows.append(r)
        ms = r["ms"]
        for reg in REGS:
            s = r[reg]
            line = (
                f"| {batch}×{n} | {k} | {ms['top_k fb']:.3f} | {ms['kl fb']:.3f} | {reg} | "
                f"{ms[reg + ' fb']:.3f} | {s['fb_over_top_k_fb']:.2f} | {s['fb_over_kl_fb']:.2f} | "
                f"{s['fwd_over_top_k']:.2f} | {s['nonzeros_per_row']:.2f} | {s['max_passes']} |"
            )
            lines.append(line)
            print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": jax.default_backend(), "rows": rows}, f, indent=1)
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
