"""Train an MLP with forward gradients (FGD) and with backprop, and compare loss vs wall-clock.

Data: scikit-learn's digits (8x8, 10 classes) by default, or an MNIST ``.npz`` with ``x_train``,
``y_train``, ``x_test``, ``y_test`` (``--mnist PATH``). Model: MLP ``in-128-10``, tanh, softmax
cross-entropy, minibatch SGD (batch 64). Each method gets its own learning rate from a short sweep
(the rate with the lowest training loss after the sweep budget). Then both train for the same
number of steps; we time only the training steps (compiled ``lax.scan`` chunks), evaluating the
full training loss between chunks. Reported: the time each method needs to reach the target loss
(by default the best training loss FGD reaches, i.e. the loss both methods reach), the ratio
``Tf / Tb``, and test accuracies. A PNG of training loss against wall-clock time is written.

Run: ``python examples/forward_gradient_training.py [--quick] [--mnist PATH] [--out PNG]``.

Reference: Baydin et al., Gradients without Backpropagation, arXiv:2202.08587, 2022.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from softops.forward_grad import fgd, forward_value_and_grad

DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "images"


def load_data(mnist=None, seed=0):
    """Returns float32 ``(x_train, y_train, x_test, y_test)`` with features in [0, 1]."""
    if mnist is not None:
        with np.load(mnist) as f:
            xtr, ytr, xte, yte = (f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        scale = 255.0 if xtr.max() > 1.5 else 1.0
        xtr = xtr.reshape(len(xtr), -1).astype(np.float32) / scale
        xte = xte.reshape(len(xte), -1).astype(np.float32) / scale
        return xtr, ytr.astype(np.int32), xte, yte.astype(np.int32)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y.astype(np.int32), test_size=0.25,
                                          random_state=seed, stratify=y)
    return xtr, ytr, xte, yte


def init_mlp(key, n_in, hidden, n_out):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (n_in, hidden), jnp.float32) * np.float32(1 / np.sqrt(n_in)),
        "b1": jnp.zeros(hidden, jnp.float32),
        "w2": jax.random.normal(k2, (hidden, n_out), jnp.float32) * np.float32(1 / np.sqrt(hidden)),
        "b2": jnp.zeros(n_out, jnp.float32),
    }


def logits_fn(p, x):
    h = jnp.tanh(x @ p["w1"] + p["b1"][None, :])
    return h @ p["w2"] + p["b2"][None, :]


def loss_fn(p, x, y):
    logp = jax.nn.log_softmax(logits_fn(p, x), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def accuracy(p, x, y):
    pred = jnp.argmax(logits_fn(p, x), axis=-1).astype(jnp.int32)
    return float(jnp.mean((pred == jnp.asarray(y, jnp.int32)).astype(jnp.float32)))


def make_chunk(method, x, y, batch, chunk):
    """A compiled ``run_chunk(params, state, key, lr)`` doing ``chunk`` SGD steps of ``method``.

    ``method`` is 'backprop' (``jax.value_and_grad``) or 'fgd' (``forward_value_and_grad``); the
    learning rate is an argument, so one compilation serves the whole sweep.
    """
    vg = jax.value_and_grad(loss_fn)
    fvg = forward_value_and_grad(loss_fn)
    n = x.shape[0]

    def opt(lr):
        return optax.sgd(lr) if method == "backprop" else fgd(lr)

    def step(carry, key, lr):
        params, state = carry
        kb, kt = jax.random.split(key)
        idx = jax.random.randint(kb, (batch,), 0, n)
        xb, yb = x[idx], y[idx]
        value, g = vg(params, xb, yb) if method == "backprop" else fvg(kt, params, xb, yb)
        updates, state = opt(lr).update(g, state, params)
        return (optax.apply_updates(params, updates), state), value

    @jax.jit
    def run_chunk(params, state, key, lr):
        (params, state), _ = jax.lax.scan(lambda c, k: step(c, k, lr), (params, state),
                                          jax.random.split(key, chunk))
        return params, state

    return opt(1.0).init, run_chunk


def train(method, lr, data, *, steps, chunk, batch, seed, progress=None, compiled=None):
    """Trains; returns params and the curve [(seconds of training steps, step, train loss)]."""
    xtr, ytr = jnp.asarray(data[0]), jnp.asarray(data[1])
    params = init_mlp(jax.random.key(seed), xtr.shape[1], 128, 10)
    init, run_chunk = compiled or make_chunk(method, xtr, ytr, batch, chunk)
    state = init(params)
    lr = jnp.float32(lr)
    full_loss = jax.jit(loss_fn)
    jax.block_until_ready(run_chunk(params, state, jax.random.key(0), lr))  # compile, warm up
    curve = [(0.0, 0, float(full_loss(params, xtr, ytr)))]
    elapsed = 0.0
    key = jax.random.key(seed + 1)
    for i in range(steps // chunk):
        key, sub = jax.random.split(key)
        t0 = time.perf_counter()
        params, state = jax.block_until_ready(run_chunk(params, state, sub, lr))
        elapsed += time.perf_counter() - t0
        curve.append((elapsed, (i + 1) * chunk, float(full_loss(params, xtr, ytr))))
        if progress is not None:
            progress.update(1)
    return params, curve


def time_to(curve, target):
    """The first training time at which the loss is <= target (inf if never)."""
    for t, _, loss in curve:
        if loss <= target:
            return t
    return float("inf")


def run(*, quick=False, seed=0, mnist=None, out=None, steps=None, chunk=None, batch=64,
        lrs_backprop=(0.1, 0.3, 1.0, 3.0), lrs_fgd=(0.003, 0.01, 0.03, 0.1), target=None,
        progress=True):
    """Runs the comparison and returns a dict of results (see the module docstring)."""
    data = load_data(mnist, seed)
    steps = steps or (400 if quick else 20000)
    chunk = chunk or (50 if quick else 250)
    sweep_steps = max(chunk, steps // 4)
    total = (len(lrs_backprop) + len(lrs_fgd)) * (sweep_steps // chunk) + 2 * (steps // chunk)
    bar = tqdm(total=total, desc="forward vs backprop", disable=not progress)
    xtr, ytr = jnp.asarray(data[0]), jnp.asarray(data[1])
    compiled = {m: make_chunk(m, xtr, ytr, batch, chunk) for m in ("backprop", "fgd")}
    best = {}
    for method, lrs in (("backprop", lrs_backprop), ("fgd", lrs_fgd)):
        finals = {}
        for lr in lrs:
            _, c = train(method, lr, data, steps=sweep_steps, chunk=chunk, batch=batch,
                         seed=seed, progress=bar, compiled=compiled[method])
            finals[lr] = c[-1][2] if np.isfinite(c[-1][2]) else np.inf
        best[method] = min(finals, key=finals.get)
    results = {}
    for method in ("backprop", "fgd"):
        params, curve = train(method, best[method], data, steps=steps, chunk=chunk, batch=batch,
                              seed=seed, progress=bar, compiled=compiled[method])
        results[method] = (params, curve)
    bar.close()
    curves = {m: results[m][1] for m in results}
    if target is None:  # the best loss FGD reaches, which backprop also reaches
        target = max(min(c[2] for c in curves["fgd"]), min(c[2] for c in curves["backprop"]))
    tb, tf = time_to(curves["backprop"], target), time_to(curves["fgd"], target)
    step_time = {m: curves[m][-1][0] / curves[m][-1][1] for m in curves}
    res = {
        "dataset": "mnist" if mnist is not None else "digits",
        "lr_backprop": best["backprop"], "lr_fgd": best["fgd"], "steps": steps,
        "target_loss": float(target), "time_backprop_s": tb, "time_fgd_s": tf,
        "tf_over_tb": tf / tb if tb > 0 else float("nan"),
        "step_time_ratio_fgd_over_backprop": step_time["fgd"] / step_time["backprop"],
        "final_loss_backprop": curves["backprop"][-1][2], "final_loss_fgd": curves["fgd"][-1][2],
        "test_acc_backprop": accuracy(results["backprop"][0], data[2], data[3]),
        "test_acc_fgd": accuracy(results["fgd"][0], data[2], data[3]),
        "curves": curves,
    }
    if out is None:
        out = DEFAULT_OUT / f"forward_grad_{res['dataset']}.png"
    if out:
        res["plot"] = str(_plot(curves, res, pathlib.Path(out)))
    return res


def _plot(curves, res, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, label in (("backprop", "backprop (SGD)"), ("fgd", "forward gradient (FGD)")):
        t, _, loss = zip(*curves[m])
        lr = res[f"lr_{m}"]
        ax.plot(t, loss, label=f"{label}, lr={lr:g}, test acc {res[f'test_acc_{m}']:.3f}")
    ax.axhline(res["target_loss"], color="gray", ls=":", lw=1, label="target loss")
    ax.set_yscale("log")
    ax.set_xlabel("training wall-clock time (s)")
    ax.set_ylabel("training loss (full set)")
    ax.set_title(f"{res['dataset']}: Tf/Tb = {res['tf_over_tb']:.2f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist", default=None, help="path to an MNIST .npz")
    parser.add_argument("--out", default=None, help="PNG path (default under docs/images/)")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    res = run(quick=args.quick, seed=args.seed, mnist=args.mnist, out=args.out, steps=args.steps)
    print(f"dataset {res['dataset']}: lr backprop {res['lr_backprop']:g}, lr FGD {res['lr_fgd']:g}")
    print(f"target training loss {res['target_loss']:.4f}: Tb = {res['time_backprop_s']:.3f} s, "
          f"Tf = {res['time_fgd_s']:.3f} s, Tf/Tb = {res['tf_over_tb']:.2f} "
          f"(step time FGD/backprop {res['step_time_ratio_fgd_over_backprop']:.2f})")
    print(f"final training loss: backprop {res['final_loss_backprop']:.4f}, "
          f"FGD {res['final_loss_fgd']:.4f}")
    print(f"test accuracy: backprop {res['test_acc_backprop']:.4f}, FGD {res['test_acc_fgd']:.4f}")
    if "plot" in res:
        print(f"plot: {res['plot']}")


if __name__ == "__main__":
    main()
