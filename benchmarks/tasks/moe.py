"""Mixture-of-experts routing: hard top-2, dense softmax gates and softops' sparse gates.

Runs ``examples/moe_digits.py`` (the experiment is defined there: a digits classifier with one
layer of 8 experts, top-2 routing under a static capacity of 1.25 times each expert's fair
share, Switch Transformer's auxiliary load loss) for every router on the same seeds, and records
per seed the test accuracy, the expert load on the test set, the fraction of assignments the
capacity dropped and the median time of a compiled training step (the routers' steps measured in
the same run, seed by seed).

Usage: ``python benchmarks/tasks/moe.py [--quick] [--seeds 3] [--steps 1500] [--json PATH]``;
the recorded run is ``benchmarks/results/task_moe.json`` (table in ``docs/tasks.md`` by
``scripts/update_tables.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples"))
from _common import write_json  # noqa: E402
from moe_digits import ROUTERS, run  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one seed, 30 steps (CI smoke run)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--json", default=None, help="write the results there")
    a = p.parse_args()
    res = run(quick=a.quick, seeds=1 if a.quick else a.seeds, steps=30 if a.quick else a.steps)
    for router in ROUTERS:
        r = res[router]
        loads = [x for load in r["load"] for x in load]
        print(
            f"{router:10s} accuracy {statistics.mean(r['acc']):.4f}"
            f"  load {min(loads):.3f}-{max(loads):.3f}"
            f"  dropped {statistics.mean(r['dropped']):.3f}"
            f"  step {1e3 * statistics.median(r['step_s']):.2f} ms",
            flush=True,
        )
    if a.json:
        write_json(a.json, a, {"routers": list(ROUTERS), **res})


if __name__ == "__main__":
    main()
