"""Learning to rank: softops' losses against rax's, same data, same model, same process.

**Data** (`make_lists`, documented so that anyone can regenerate it): per seed, two random unit
directions ``w`` and ``v`` in R^16; each list has between ``L/2`` and ``L`` items (uniform);
each item has standard normal features ``x`` and a latent utility

    u = <x, w> + 0.3 * (<x, v>^2 - 1) + 0.5 * noise,     noise ~ N(0, 1),

graded 0-4 by four fixed thresholds, the 50%, 75%, 90% and 97% quantiles of ``u`` (so half the
items are irrelevant and 3% have grade 4). The model is linear, ``score = <x, theta>``: it cannot
represent the quadratic term, so a loss has to choose which errors to make, and losses that
weight the top of the list should do better on NDCG@10. "oracle" scores items by the noise-free
``u``.

**Layouts.** *padded*: a batch of ``B`` lists as a ``[B, L]`` array with a ``where`` mask;
*packed*: the same lists laid end to end in one row of ``B * L`` items with ``segments`` (list
ids), the unused tail masked. ``B = max(2, 4096 // L)`` lists per step.

**Losses.** softops: ``1 - soft_ndcg(k=10)`` at its defaults (strength relative to each list's
spread); ``lambda``: a softmax cross-entropy per list weighted by
``stop_gradient(lambda_weights(k=10))`` (LambdaLoss's NDCG-Loss1 with soft ranks);
``ndcg@100`` and ``lambda@100``: the same two trained with a cutoff ten times the evaluated one
(the whole list when it is shorter), so that relevant items ranked below 11 get a gradient too;
``rax+ltr``: ``-rax.ndcg_metric(topn=10)`` with ``softops.ltr.rank_fn`` and ``cutoff_fn``
(padded only: rax's segment sums are n x n). rax 0.4.0: ``softmax_loss``,
``pairwise_logistic_loss`` and ``approx``, the loss of ``rax.approx_t12n(rax.ndcg_metric)``
built directly, ``-rax.ndcg_metric(rank_fn=partial(approx_ranks, step_fn=sigmoid),
cutoff_fn=partial(approx_cutoff, step_fn=sigmoid))``, because ``approx_t12n`` itself fails on
jax >= 0.7 (``module 'jax' has no attribute 'util'``); that is what it returns.

**Measured**, per list length, layout and loss: test NDCG@10 (hard, ``rax.ndcg_metric``) after
``--steps`` Adam steps, mean and spread (min to max) over ``--seeds`` seeds; the median time of
one jitted training step (forward and backward of the loss and the Adam update); the wall time
to lower and compile that step on first use, after ``jax.clear_caches()``; the compiled
temporary memory of the step (``memory_analysis().temp_size_in_bytes``, deterministic). A loss
whose compiled step needs more than ``--max-gib`` of temporary memory is not run (recorded as
such). Every loss trains side by side on the same batches, its steps interleaved with the others',
so machine load hits all alike.

Usage: ``python benchmarks/tasks/ltr.py [--quick] [--lengths 10 100 ...] [--seeds N]
[--steps N] [--json PATH]``. The recorded run is ``benchmarks/results/ltr.json`` and its tables
are pasted into ``docs/benchmarks.md`` by ``scripts/update_tables.py``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from softops import losses, ltr

try:
    import rax
except ImportError:  # rax is optional (the bench extra)
    rax = None

DIM = 16
QUANTILES = (0.5, 0.75, 0.9, 0.97)
TOPN = 10
WIDE = 10  # the wide training cutoff: WIDE * TOPN (the whole list when shorter)


# ------------------------------------------------------------------------------------- data
class Task:
    """The latent model of one seed: directions ``w``, ``v`` and the grade thresholds."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.w = _unit(rng.standard_normal(DIM))
        self.v = _unit(rng.standard_normal(DIM))
        x = rng.standard_normal((200_000, DIM))
        self.thresholds = np.quantile(self.utility(x, np.zeros(len(x))), QUANTILES)

    def utility(self, x, noise):
        return x @ self.w + 0.3 * ((x @ self.v) ** 2 - 1) + 0.5 * noise


def _unit(a):
    return a / np.linalg.norm(a)


def make_lists(task: Task, rng, num_lists: int, length: int):
    """Padded lists: features [B, L, d], grades [B, L] (0-4), mask [B, L], noise-free utility."""
    sizes = rng.integers(max(1, length // 2), length + 1, num_lists)
    x = rng.standard_normal((num_lists, length, DIM)).astype(np.float32)
    noise = rng.standard_normal((num_lists, length))
    grades = np.searchsorted(task.thresholds, task.utility(x, noise)).astype(np.float32)
    mask = np.arange(length)[None, :] < sizes[:, None]
    return x, grades * mask, mask, task.utility(x, np.zeros_like(noise)).astype(np.float32)


def pack(x, grades, mask):
    """The lists of a padded batch end to end in one row: features, grades, mask, segment ids."""
    b, length, d = x.shape
    px = np.zeros((1, b * length, d), np.float32)
    pg = np.zeros((1, b * length), np.float32)
    pm = np.zeros((1, b * length), bool)
    ps = np.full((1, b * length), b, np.int32)
    pos = 0
    for i in range(b):
        m = int(mask[i].sum())
        px[0, pos : pos + m], pg[0, pos : pos + m] = x[i, :m], grades[i, :m]
        pm[0, pos : pos + m], ps[0, pos : pos + m] = True, i
        pos += m
    return px, pg, pm, ps


# ----------------------------------------------------------------------------------- losses
def _log_softmax(s, mask, seg):
    """Log-softmax over each list (rows, or segments of a packed row)."""
    if seg is None:
        return jax.nn.log_softmax(jnp.where(mask, s, -jnp.inf), axis=-1, where=mask)
    flat_s, flat_ids = s.reshape(-1), jnp.where(mask, seg, seg.max() + 1).reshape(-1)
    num = flat_s.shape[0] + 1
    top = jax.lax.stop_gradient(jax.ops.segment_max(flat_s, flat_ids, num))
    z = flat_s - top[flat_ids]
    lse = jnp.log(jax.ops.segment_sum(jnp.exp(z), flat_ids, num))
    return (z - lse[flat_ids]).reshape(s.shape)


def _lists(mask, seg):
    """Number of lists of a batch (rows with an item, or segments)."""
    if seg is None:
        return jnp.sum(jnp.any(mask, axis=-1))
    return jnp.max(jnp.where(mask, seg, -1)) + 1


def _train_k(k, n):
    """The training cutoff ``k`` for lists of ``n`` items (None: the whole list)."""
    return None if k >= n else k


def softops_ndcg(s, y, m, seg, k=TOPN):
    per_row = losses.soft_ndcg(s, y, k=_train_k(k, s.shape[-1]), where=m, segments=seg)
    if seg is None:
        return 1 - jnp.mean(per_row)
    return 1 - per_row[0]


def softops_lambda(s, y, m, seg, k=TOPN):
    k = _train_k(k, s.shape[-1])
    w = jax.lax.stop_gradient(losses.lambda_weights(s, y, k=k, where=m, segments=seg))
    ce = -jnp.sum(jnp.where(m, w * _log_softmax(s, m, seg), 0))
    return ce / _lists(m, seg)


def rax_ltr_ndcg(s, y, m, seg):
    return -rax.ndcg_metric(s, y, where=m, topn=TOPN, rank_fn=ltr.rank_fn, cutoff_fn=ltr.cutoff_fn)


def _rax_reduce(fn):
    def loss(s, y, m, seg):
        kw = {} if seg is None else {"segments": seg}
        return fn(s, y, where=m, **kw)

    return loss


def rax_approx(s, y, m, seg):
    kw = {} if seg is None else {"segments": seg}
    step = jax.nn.sigmoid  # approx_t12n's step_fn at its default temperature 1
    return -rax.ndcg_metric(
        s,
        y,
        where=m,
        rank_fn=functools.partial(rax.utils.approx_ranks, step_fn=step),
        cutoff_fn=functools.partial(rax.utils.approx_cutoff, step_fn=step),
        **kw,
    )


def methods():
    wide = WIDE * TOPN
    out = {
        "softops ndcg@10": softops_ndcg,
        "softops lambda": softops_lambda,
        f"softops ndcg@{wide}": functools.partial(softops_ndcg, k=wide),
        f"softops lambda@{wide}": functools.partial(softops_lambda, k=wide),
    }
    if rax is not None:
        out["rax+ltr ndcg@10"] = rax_ltr_ndcg
        out["rax softmax"] = _rax_reduce(rax.softmax_loss)
        out["rax pairwise"] = _rax_reduce(rax.pairwise_logistic_loss)
        out["rax approx"] = rax_approx
    return out


PADDED_ONLY = {"rax+ltr ndcg@10"}


# --------------------------------------------------------------------------------- training
def make_step(loss_fn, opt):
    def step(theta, state, x, y, m, seg):
        def objective(theta):
            return loss_fn(x @ theta, y, m, seg)

        value, grad = jax.value_and_grad(objective)(theta)
        updates, state = opt.update(grad, state, theta)
        return optax.apply_updates(theta, updates), state, value

    return jax.jit(step)


def ndcg_at(theta, test):
    x, y, m, _ = test
    s = x @ theta
    return float(rax.ndcg_metric(s, y, where=m, topn=TOPN)) if rax else float("nan")


def oracle(test):
    x, y, m, u = test
    return float(rax.ndcg_metric(jnp.asarray(u), y, where=m, topn=TOPN)) if rax else float("nan")


def _batches(task, rng, length, num_batches, lists):
    out = []
    for _ in range(num_batches):
        x, g, m, _ = make_lists(task, rng, lists, length)
        out.append(
            {
                "padded": tuple(jnp.asarray(a) for a in (x, g, m)) + (None,),
                "packed": tuple(jnp.asarray(a) for a in pack(x, g, m)),
            }
        )
    return out


def measure(name, step, args, max_bytes):
    """Compile time (fresh caches), temporary memory, or None when over ``max_bytes``."""
    jax.clear_caches()
    t0 = time.perf_counter()
    lowered = step.lower(*args)
    compiled = lowered.compile()
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    temp = None if mem is None else int(mem.temp_size_in_bytes)
    fits = temp is None or temp <= max_bytes
    return {"compile_s": seconds, "temp_bytes": temp, "fits": fits}, compiled


def run_length(length, layouts, names, *, seeds, steps, max_bytes, lr, test_lists, chunk=10):
    lists = max(2, 4096 // length)
    fns = methods()
    opt = optax.adam(lr)
    rows = []
    for layout in layouts:
        for name in names:
            if layout == "packed" and name in PADDED_ONLY:
                continue
            rows.append({"length": length, "layout": layout, "method": name, "lists": lists})
    compiled = {}
    theta0 = jnp.zeros(DIM, jnp.float32)
    # compile (and measure) every step once, on the first seed's first batch
    task0 = Task(0)
    sample = _batches(task0, np.random.default_rng(1), length, 1, lists)[0]
    for row in rows:
        step = make_step(fns[row["method"]], opt)
        args = (theta0, opt.init(theta0), *sample[row["layout"]])
        info, exe = measure(row["method"], step, args, max_bytes)
        row.update(info)
        compiled[(row["layout"], row["method"])] = exe if info["fits"] else None
        over = "" if info["fits"] else " (over the limit)"
        head = f"  L={length} {row['layout']:7s} {row['method']:17s}"
        print(f"{head} compile {info['compile_s']:.2f} s temp {_mib(info['temp_bytes'])}{over}")
    for row in rows:
        row.update(ndcg=[], step_s=[])
    oracles = []
    for seed in range(seeds):
        task = Task(seed)
        rng = np.random.default_rng(1000 + seed)
        batches = _batches(task, rng, length, min(steps, 20), lists)
        test = make_lists(task, np.random.default_rng(2000 + seed), test_lists, length)
        oracles.append(oracle(test))
        init = 0.01 * jax.random.normal(jax.random.key(seed), (DIM,))
        states = {}
        for row in rows:
            if compiled[(row["layout"], row["method"])] is not None:
                states[(row["layout"], row["method"])] = [init, opt.init(init)]
        times = {key: [] for key in states}
        order = list(states)
        shuffle = np.random.default_rng(seed)
        for start in range(0, steps, chunk):
            shuffle.shuffle(order)
            for key in order:
                exe, st = compiled[key], states[key]
                for i in range(start, min(start + chunk, steps)):
                    args = batches[i % len(batches)][key[0]]
                    t0 = time.perf_counter()
                    theta, state, value = exe(st[0], st[1], *args)
                    jax.block_until_ready(theta)
                    times[key].append(time.perf_counter() - t0)
                    st[0], st[1] = theta, state
        for row in rows:
            key = (row["layout"], row["method"])
            if key in states:
                row["ndcg"].append(ndcg_at(states[key][0], test))
                row["step_s"].append(float(np.median(times[key][1:] or times[key])))
    for row in rows:
        if row["ndcg"]:
            row["step_s"] = float(np.median(row["step_s"]))
        else:
            row["step_s"] = None
    return rows, float(np.mean(oracles))


def _mib(b):
    return "n/a" if b is None else f"{b / 2**20:.1f} MiB"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run)")
    p.add_argument("--lengths", type=int, nargs="+", default=[10, 100, 1000, 10000])
    p.add_argument("--layouts", nargs="+", default=["padded", "packed"])
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--max-gib", type=float, default=4.0)
    p.add_argument("--json", default=None, help="write the results there")
    a = p.parse_args()
    if a.quick:
        a.lengths, a.seeds, a.steps = [16], 1, 4
    names = a.methods or list(methods())
    meta = {
        "date": datetime.date.today().isoformat(),
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
        "jax": jax.__version__,
        "rax": getattr(rax, "__version__", None),
        "python": platform.python_version(),
        "seeds": a.seeds,
        "steps": a.steps,
        "lr": a.lr,
        "max_gib": a.max_gib,
    }
    results = []
    oracles = {}
    for length in a.lengths:
        test_lists = max(8, 20_000 // length)
        rows, orc = run_length(
            length,
            a.layouts,
            names,
            seeds=a.seeds,
            steps=a.steps,
            max_bytes=int(a.max_gib * 2**30),
            lr=a.lr,
            test_lists=test_lists,
        )
        oracles[length] = orc
        results += rows
        for r in rows:
            nd = np.asarray(r["ndcg"]) if r["ndcg"] else None
            txt = "not run" if nd is None else f"{nd.mean():.4f} [{nd.min():.4f}, {nd.max():.4f}]"
            st = "n/a" if r["step_s"] is None else f"{1e3 * r['step_s']:.2f} ms"
            print(f"L={length:6d} {r['layout']:7s} {r['method']:17s} NDCG@10 {txt}  step {st}"
                  f"  compile {r['compile_s']:.2f} s  temp {_mib(r['temp_bytes'])}",
                  flush=True)  # fmt: skip
        print(f"L={length:6d} oracle NDCG@10 {orc:.4f}", flush=True)
        # written after every length, so that a long run stopped early keeps what it finished
        meta["load_avg_end"] = os.getloadavg()[0]
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"meta": meta, "oracle": oracles, "rows": results}, f, indent=1)


if __name__ == "__main__":
    main()
