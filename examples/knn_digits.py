"""Differentiable kNN trained end-to-end through ``soft_topk_mask`` (Xie et al., 2020, Sec. 5).

The code is ``softops.showcase.knn`` (which ``python -m softops`` runs too): an embedding
network trained through the soft top-k mask over a pool of labelled images, then a hard kNN on
the learned embedding against a kNN on the raw pixels and a cross-entropy network of the same
body. It writes files only with ``--out DIR``: ``results.json`` and ``report.txt`` there.

Data: scikit-learn's bundled 8x8 digits by default; ``--mnist PATH`` loads a local ``.npz`` with
``x_train``, ``y_train``, ``x_test``, ``y_test`` instead (nothing is downloaded).

    python examples/knn_digits.py            # 600 steps
    python examples/knn_digits.py --quick    # a smoke run
    python examples/knn_digits.py --out DIR  # also writes results.json and report.txt
"""

from __future__ import annotations

import argparse

from _report import write_outputs

from softops.showcase.knn import run

__all__ = ["main", "run"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="a few seconds, smaller everything")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist", default=None, help="path to a local MNIST .npz")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--epsilon", type=float, default=0.01)
    parser.add_argument("--out", default=None, help="folder for results.json and report.txt")
    args = parser.parse_args(argv)
    res = run(
        quick=args.quick,
        seed=args.seed,
        mnist=args.mnist,
        steps=args.steps,
        k=args.k,
        epsilon=args.epsilon,
    )
    lines = [
        f"{res['dataset']}: {res['n_train']} train / {res['n_test']} test, k={res['k']}, "
        f"{res['steps']} steps, {res['seconds']:.1f} s",
        f"  kNN on pixels                     {res['knn_pixels']:.4f}",
        f"  kNN on soft-top-k embedding       {res['knn_soft_topk_embedding']:.4f}",
        f"  cross-entropy net (same body)     {res['cross_entropy']:.4f}",
        f"  soft-kNN loss {res['loss_first']:.3f} -> {res['loss_last']:.3f}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    write_outputs(args.out, res, text)


if __name__ == "__main__":
    main()
