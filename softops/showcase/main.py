"""``python -m softops``: the papers' headline results, measured on this machine.

Sections:

1. soft sort and soft rank of a fixed vector as the strength varies (Blondel et al., Figure 2);
2. time and compiled memory of soft rank against the paper's two baselines, an O(n²) all-pairs
   soft rank and an optimal-transport (Sinkhorn) soft rank with n anchors, as n grows;
3. a kNN classifier trained end to end through the SOFT top-k mask (Xie et al., Section 5);
4. backprop against weight-perturbed, activity-perturbed and local-loss forward gradients;
5. the task suite's headline table at quick sizes (sorting supervision, top-k classification,
   median regression; the recorded full runs are in ``docs/tasks.md``).

The report (Markdown) goes to stdout; progress goes to stderr. Files are written only with
``--out DIR``: ``DIR/README.md`` (the report), its PNG plots and ``DIR/results.json`` (every table
and the raw numbers, in the format of `softops.showcase.results`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from softops.showcase import _figure2, _scaling
from softops.showcase.results import header_line, write

_EXTRA = 'the showcase needs the "showcase" extra: pip install "softops[showcase]"'


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m softops",
        description="The softops showcase: the papers' headline results, measured here. "
        "Prints a Markdown report; writes files only with --out.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, one seed, short training (a smoke run)"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="write the report (README.md), its plots and results.json into DIR "
        "(default: print the report only, write nothing)",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeds of the training sections (default 3, 1)"
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="the n of section 2 (default 100 1000 10000 100000; --quick: 100 1000)",
    )
    parser.add_argument(
        "--budget-mib",
        type=float,
        default=1024,
        help="compiled-memory budget of section 2; a method over it is not run (default 1024)",
    )
    parser.add_argument(
        "--skip-training",
        "--skip-examples",
        dest="skip_training",
        action="store_true",
        help="only sections 1 and 2 (no training)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _emit(sections: list[str], md: str) -> None:
    sections.append(md)
    print(md, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Runs the showcase (see the module docstring); ``argv`` defaults to ``sys.argv[1:]``."""
    args = _parser().parse_args(argv)
    out = Path(args.out) if args.out is not None else None
    if out is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            sys.exit(f"--out draws plots with matplotlib; {_EXTRA}")
        out.mkdir(parents=True, exist_ok=True)
    if not args.skip_training:
        try:
            import sklearn  # noqa: F401  (the digits; imported where they are loaded)

            from softops.showcase import _examples, _tasks
        except ImportError as err:
            sys.exit(f"{err}: {_EXTRA} (or pass --skip-training)")
    progress = not args.no_progress
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    t0 = time.perf_counter()
    sections: list[str] = []
    tables: dict = {}
    values: dict[str, str] = {}
    data: dict = {}
    _emit(sections, f"# softops showcase\n\n{header_line()}.\n")

    md, tabs = _figure2.run(out)
    tables.update(tabs)
    _emit(sections, md)

    sizes = args.sizes or ([100, 1000] if args.quick else [100, 1000, 10_000, 100_000])
    md, tabs, vals, raw = _scaling.run(
        out, sizes, budget_mib=args.budget_mib, repeats=3 if args.quick else 7, progress=progress
    )
    tables.update(tabs)
    values.update(vals)
    data["scaling"] = raw
    _emit(sections, md)

    if not args.skip_training:
        md, tabs, raw = _examples.knn_section(quick=args.quick, seeds=seeds, progress=progress)
        tables.update(tabs)
        data["knn"] = raw
        _emit(sections, md)
        md, tabs, vals, raw = _examples.forward_grad_section(
            out, quick=args.quick, seeds=seeds, progress=progress
        )
        tables.update(tabs)
        values.update(vals)
        data["forward_grad"] = raw
        _emit(sections, md)
        md, tabs, raw = _tasks.section(quick=args.quick, seeds=seeds, progress=progress)
        tables.update(tabs)
        data["tasks"] = raw
        _emit(sections, md)

    seconds = time.perf_counter() - t0
    values["total_seconds"] = f"{seconds:.0f} s"
    _emit(sections, f"Total time: {seconds:.0f} s.\n")
    if out is not None:
        (out / "README.md").write_text("\n".join(sections))
        cmd = " ".join(["python -m softops", *(argv if argv is not None else sys.argv[1:])])
        write(
            out / "results.json",
            "showcase",
            tables=tables,
            values=values,
            data=data,
            seconds=seconds,
            command=cmd,
        )
        print(f"Report written to {out / 'README.md'}", file=sys.stderr)
