"""Export the best structures of a study as a spec file with provenance.

The file is a JSON document ``{"format": "structsearch.specs", "version": 1, ..., "specs": [...]}``;
each entry has ``theta`` (alpha..rho), the paper notation, its name, the taxonomy numbers the
search stored, its score and a ``provenance`` block (study, trial, task, budget, seed, score,
versions). :meth:`structsearch.layers.EinsumLinear.from_spec` and :func:`structsearch.layers.structurize`
load it directly (``index=k`` picks the k-th spec; the first is the best).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from structsearch.spec import FILE_FORMAT, FILE_VERSION

__all__ = ["FORMAT", "VERSION", "export", "export_document"]

FORMAT, VERSION = FILE_FORMAT, FILE_VERSION  # EinsumLinear.from_spec refuses documents of a later version


def export_document(
    study: str, top: int = 1, storage: str | None = None, runs_dir: str | Path | None = None
) -> dict[str, Any]:
    """The export document of the ``top`` trained structures of a study, best (lowest loss) first."""
    from structsearch import __version__
    from structsearch.engine._references import stored_references
    from structsearch.engine._runner import _versions
    from structsearch.engine._scorers import study_slope_rule, study_target_flops
    from structsearch.engine._storage import load_existing_study
    from structsearch.errors import StudyError
    from structsearch.reporting import trial_rows
    from structsearch.spec import CLASSES

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise StudyError(f"top: expected a positive integer, got {top!r}")
    loaded, location = load_existing_study(study, storage, runs_dir)
    config = dict(loaded.user_attrs.get("structsearch") or {})
    every = trial_rows(loaded)
    rows = [r for r in every if r.get("status") == "evaluated" and r.get("loss") is not None]
    if not rows:
        lost = Counter(str(r.get("status")) for r in every if r.get("status") in ("diverged", "failed"))
        if lost:
            counts = ", ".join(f"{n} {status}" for status, n in sorted(lost.items()))
            raise StudyError(
                f"study {study!r} in {location.description}: every trained trial lost its score ({counts})"
            )
        raise StudyError(f"study {study!r} in {location.description} has no trained trial to export yet")
    rows.sort(key=lambda r: (r["loss"], r["number"]))
    stored_versions = config.get("versions", {})
    confirmation = loaded.user_attrs.get("confirmation")
    specs = []
    for rank, r in enumerate(rows[:top], start=1):
        theta: dict[str, Any] = dict(zip(CLASSES, (float(v) for v in r["theta"]), strict=True))
        if r.get("moe"):  # a routed structure (BTT-MoE): EinsumLinear.from_spec loads it as a BTTMoE
            theta["moe"] = r["moe"]
        score = {
            "loss": r["loss"],
            "label": r.get("score_label") or "loss",
            "kind": r.get("score_kind"),
            "band_95": [r.get("prediction_low"), r.get("prediction_high")] if r.get("prediction_low") else None,
            "warnings": r.get("warnings") or [],
            "macs": r.get("eval_macs") or r.get("macs"),  # every linear layer of the model it trained
            "width": r.get("eval_width") or config.get("width"),
        }
        specs.append(
            {
                "rank": rank,
                "theta": theta,
                "paper": r.get("paper"),
                "name": r.get("name"),
                "omega": r.get("omega"),
                "psi": r.get("psi"),
                "nu": r.get("nu"),
                "params": r.get("params"),
                "macs": r.get("macs"),
                "score": score,
                "provenance": {
                    "study": study,
                    "storage": location.description,
                    "trial": r["number"],
                    "task": config.get("task"),
                    "budget": config.get("budget"),
                    "seed": config.get("seed"),
                    "width": config.get("width"),
                    "objective": config.get("objective"),
                    "space": (config.get("space") or {}).get("name"),
                    "score": score,
                    "train_flops": r.get("train_flops"),
                    "evaluator": config.get("evaluator"),
                    "target_flops": study_target_flops(config),
                    "slope_rule": study_slope_rule(config),
                    "versions": stored_versions,
                },
                "confirmation": _confirmed(confirmation, r.get("paper"), rank),
            }
        )
    references = {
        name: {k: ref.get(k) for k in ("paper", "loss", "score_label", "score_kind", "final_loss")}
        for name, ref in stored_references(loaded).items()
    }
    return {
        "format": FORMAT,
        "version": VERSION,
        "study": study,
        "storage": location.description,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "exported_with": {**_versions(), "structsearch": __version__},
        "task": config.get("task"),
        "budget": config.get("budget"),
        "seed": config.get("seed"),
        "width": config.get("width"),
        "note": "theta per class alpha..rho; load with EinsumLinear.from_spec(path, d_in, d_out, index=k). "
        "params and macs: one width x width layer at the study's width; score.macs: every linear layer of the "
        "model the score trained, per input vector, at score.width",
        "score_label": rows[0].get("score_label") or "loss",
        "references": references,
        # said outright: a search whose best loses to a hand-picked structure has not found a better one
        "references_scoring_better": [
            name for name, ref in references.items() if ref["loss"] is not None and ref["loss"] < rows[0]["loss"]
        ],
        "specs": specs,
    }


def _confirmed(confirmation: dict[str, Any] | None, paper: str | None, rank: int) -> dict[str, Any] | None:
    """The confirmation stage's figures for one spec (its seeds' mean and 95% interval; the best's tests)."""
    if not confirmation:
        return None
    row = next((c for c in confirmation["structures"] if c["spec"] == paper), None)
    if row is None:
        return {"label": confirmation["label"], "note": "not among the confirmed structures"}
    out = {
        "label": confirmation["label"],
        "compute": confirmation["compute"],
        "seeds": confirmation["seeds"],
        **{k: row[k] for k in ("losses", "mean", "ci_low", "ci_high", "width")},
    }
    if rank == 1 and row["label"] == "best":
        out["comparisons"] = confirmation["comparisons"]
    return out


def export(
    study: str,
    top: int = 1,
    path: str | Path | None = None,
    *,
    storage: str | None = None,
    runs_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Write the export document to ``path`` (default ``runs/<study>/best.json``); returns it with ``path`` set."""
    from structsearch._safe_paths import check_output
    from structsearch.engine._storage import run_dir
    from structsearch.errors import StudyError

    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise StudyError(f"path: expected a file path, got {path!r}")
    target = Path(path) if path is not None else run_dir(study, runs_dir) / "best.json"
    # the study's own run folder is made if missing; a folder the caller names must exist (a typo builds no tree)
    check_output(target, "output", StudyError, create_parent=path is None)
    _check_replaceable(target)
    doc = export_document(study, top, storage, runs_dir)
    _write_atomically(target, json.dumps(doc, indent=2) + "\n")
    return {**doc, "path": str(target)}


def _check_replaceable(target: Path) -> None:
    """Refuse to overwrite a file that is not an earlier export (a study's journal or database, say)."""
    from structsearch.errors import StudyError

    try:
        if not target.is_file() or target.stat().st_size == 0:
            return
        with target.open("rb") as f:
            head = f.read(4096)
    except OSError as err:
        raise StudyError(f"{target}: cannot read the file to be replaced ({err.strerror or err})") from None
    if not (head.lstrip().startswith(b"{") and f'"format": "{FORMAT}"'.encode() in head):
        raise StudyError(f"output {target}: exists and is not a structsearch export; remove it or pick another path")


def _write_atomically(target: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``target``, then rename it: a failed write leaves the old file.

    A symlink, a pipe or a device (``-o /dev/stdout``) is written through in place, as before:
    renaming over it would replace the link, or cannot be done at all.
    """
    import secrets

    from structsearch.errors import StudyError

    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # the study's run folder, when missing
        if target.is_symlink() or (target.exists() and not target.is_file()):
            with open(target, "w") as f:
                f.write(text)
            return
        # O_EXCL: a fresh file; mode 0o666 under the process umask, as a plain open() would make it
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(handle, "w") as f:
            f.write(text)
        os.replace(temporary, target)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise StudyError(f"{target}: cannot write ({err.strerror or err})") from None
