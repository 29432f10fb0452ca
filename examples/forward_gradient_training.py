"""Train one Flax nnx MLP four ways, with backprop and with three kinds of forward gradients.

Backprop, weight-perturbed FGD (``forward_value_and_grad``), activity-perturbed FGD
(``activity_value_and_grad``) and activity-perturbed FGD with local losses
(``local_value_and_grad``), side by side on the same data and step budget; the code is
``softops.showcase.fg_training`` (which ``python -m softops`` runs too).

Data: scikit-learn's digits by default, or a local MNIST ``.npz`` with ``x_train``, ``y_train``,
``x_test``, ``y_test`` (``--mnist PATH``; nothing is downloaded). With ``--out DIR`` a plot of
training loss and test accuracy against time is written there; without it nothing is written.

Run: ``python examples/forward_gradient_training.py [--quick] [--seeds N] [--mnist PATH]
[--out DIR]``.
"""

from __future__ import annotations

import argparse

from softops.showcase.fg_report import plot, plot_path, report
from softops.showcase.fg_training import METHODS, run

__all__ = ["METHODS", "main", "plot", "plot_path", "report", "run"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="a few hundred steps, one lr each")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds")
    parser.add_argument("--mnist", default=None, help="path to an MNIST .npz")
    parser.add_argument("--out", default=None, help="folder for the plot (default: no files)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    res = run(
        quick=args.quick,
        seeds=tuple(range(args.seeds)),
        mnist=args.mnist,
        out=args.out,
        steps=args.steps,
        batch=args.batch,
    )
    print(report(res))
    if "plot" in res:
        print(f"\nplot: {res['plot']}")


if __name__ == "__main__":
    main()
