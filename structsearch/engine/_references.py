"""Reference rows: dense and BTT scored exactly like the candidates, once per study.

A score means little alone: "0.21" is good or bad only next to what dense and BTT get under
the same scoring. Each reference is stored in the study's user attribute ``reference:<name>``
(one attribute per reference, so that concurrent workers never overwrite each other's) and
trained only when the study does not hold it yet. Two workers that start at the same moment
may both train it; they store the same numbers (same seed).
"""

from __future__ import annotations

from typing import Any

import optuna

from structsearch.engine._progress import stage_bar
from structsearch.engine._scorers import score_attrs
from structsearch.spec import parse_spec
from structsearch.taxonomy import analyze

__all__ = ["REFERENCES", "ensure_references", "stored_references"]

REFERENCES = ("dense", "btt")
_PREFIX = "reference:"


def stored_references(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """name -> stored reference row, in the order of :data:`REFERENCES`."""
    attrs = study.user_attrs
    return {name: attrs[_PREFIX + name] for name in REFERENCES if _PREFIX + name in attrs}


def ensure_references(
    study: optuna.Study,
    score_fn: Any,
    *,
    task: str,
    budget: float | None,
    seed: int,
    width: int,
    progress: bool = False,
) -> None:
    """Score each missing reference with ``score_fn`` (the study's evaluator) and store it (``progress``: a bar)."""
    have = stored_references(study)
    missing = [name for name in REFERENCES if name not in have]
    with stage_bar(progress, "references", len(missing)) as bar:
        for done, name in enumerate(missing):
            bar(done, f"scoring {name} as the trials are scored")
            study.set_user_attr(_PREFIX + name, reference_row(name, score_fn, task, budget, seed, width))
        bar(len(missing), "done")


def reference_row(name: str, score_fn: Any, task: str, budget: float | None, seed: int, width: int) -> dict[str, Any]:
    spec = parse_spec(name)
    tax = analyze(spec, width, width, max_padding=None)
    try:
        result = score_fn(spec, task=task, budget=budget, seed=seed, width=width)
    except Exception as err:  # a task failing on a reference leaves the row failed, not the search
        from types import SimpleNamespace

        result = SimpleNamespace(status="failed", reason=f"{type(err).__name__}: {str(err).strip()[:500]}")
    score = getattr(result, "score", None)
    if score is None:
        score = getattr(result, "final_loss", None)
    return {
        "reference": True,
        "name": name,
        "paper": spec.paper,
        "theta": [float(t) for t in spec.theta],
        "omega": float(tax.omega),
        "psi": float(tax.psi),
        "nu": float(tax.nu),
        "params": int(tax.params),
        "macs": int(tax.macs),
        "status": str(getattr(result, "status", "ok")),
        "loss": float(score) if score is not None else None,
        "final_loss": getattr(result, "final_loss", None),
        "train_flops": float(getattr(result, "train_flops", 0.0) or 0.0),
        "wall_seconds": float(getattr(result, "wall_seconds", 0.0) or 0.0),
        "reason": getattr(result, "reason", None),
        **score_attrs(result),
    }
