"""The README's main job: a small end-to-end search on CPU, then the report and an exported spec.

``python -m structsearch.demo`` searches the default steered space on mlp-regression with
compute-optimal scoring: a dozen candidates, each trained on a ladder of widths and budgets
that costs 3e9 training FLOPs, ranked by its frontier's predicted loss at 3e10 FLOPs (10x: how
far ahead the score was measured to rank well, benchmarks/results/frontier_fidelity.md); dense
and BTT are scored the same way as references, and the top three are confirmed against them
with three seeds. It writes the report's plots and the best structures to ``runs/demo/``, loads
the exported spec back as an ``EinsumLinear`` and prints where everything is. Running it again
resumes the study: trials already finished are kept and the rest is done (nothing, if it finished).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "run_demo"]

DEMO = {
    "space": "steered-default",
    "task": "mlp-regression",
    "budget": 3e9,
    "target_flops": 3e10,
    "trials": 12,
    "width": 128,
    "study": "demo",
}


def run_demo(
    runs_dir: str | None = None, trials: int = DEMO["trials"], evaluate_fn: str | None = None, progress: bool = True
) -> dict[str, object]:
    """search -> report -> export on study ``demo``; returns the paths and the best structure."""
    import optuna

    from structsearch.engine import search
    from structsearch.exporting import export
    from structsearch.reporting import report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = search(
        DEMO["space"],
        task=DEMO["task"],
        budget=DEMO["budget"],
        trials=trials,
        study=DEMO["study"],
        width=DEMO["width"],
        runs_dir=runs_dir,
        evaluate_fn=evaluate_fn,
        target_flops=DEMO["target_flops"] if evaluate_fn in (None, "frontier") else None,
        threads=1,
        progress=progress,
    )
    rep = report(DEMO["study"], runs_dir=runs_dir, top=5)
    doc = export(DEMO["study"], top=3, runs_dir=runs_dir)
    return {"search": result, "report": rep, "export": doc}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m structsearch.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default=None, help="where runs/demo/ goes (default runs)")
    parser.add_argument("--trials", type=int, default=DEMO["trials"], help=f"trials (default {DEMO['trials']})")
    args = parser.parse_args(argv)
    from structsearch.cli._common import stdout_console
    from structsearch.errors import StructSearchError

    console = stdout_console()
    console.print(
        f"[bold]structsearch demo[/]: search the {DEMO['space']} space on {DEMO['task']} "
        f"({args.trials} trials, {DEMO['budget']:.0e} FLOPs each, ranked by the predicted loss at "
        f"{DEMO['target_flops']:.0e} FLOPs)"
    )
    try:
        out = run_demo(args.runs_dir, args.trials)
    except StructSearchError as err:
        print(f"structsearch demo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("structsearch demo: interrupted; run it again to resume", file=sys.stderr)
        return 130
    from structsearch.layers import EinsumLinear

    result, rep, doc = out["search"], out["report"], out["export"]
    console.print(result)
    console.print(rep)
    best = doc["specs"][0]
    console.print(
        f"\nbest structure {best['paper']}"
        + (f" ({best['name']})" if best.get("name") else "")
        + f": {best['score']['label']} {best['score']['loss']:.4g}"
    )
    for name, ref in doc["references"].items():
        console.print(f"reference {name}: {ref['loss']:.4g} (scored the same way)")
    if doc["references_scoring_better"]:
        names = " and ".join(doc["references_scoring_better"])
        console.print(f"[bold]{names} scored better than every structure this search trained[/] (more trials may help)")
    confirmation = best.get("confirmation") or {}
    if confirmation.get("comparisons"):
        from structsearch.confirmation import Comparison

        console.print(f"confirmed with {confirmation['label']}:")
        for line in confirmation["comparisons"]:
            console.print(f"  {Comparison.model_validate(line).sentence()}")
    layer = EinsumLinear.from_spec(doc["path"], 1024, 1024)
    console.print(
        f"as a 1024 -> 1024 layer: {layer.params:,} parameters and {layer.macs:,} MACs per vector "
        f"(dense: {1024 * 1024:,})"
    )
    console.print(f"study:  {result.storage}   (optuna-dashboard {result.storage})")
    for name, path in rep.plots.items():
        console.print(f"plot:   {path}   ({name})")
    console.print(f"export: {doc['path']}   (EinsumLinear.from_spec('{doc['path']}', d_in, d_out))")
    console.print("next:   structsearch report demo  |  structsearch export demo --top 3 -o best.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
