"""How candidates are proposed and recorded: search spaces, taxonomy steering, the objective, storage.

- :func:`search` -- run (or resume) a study; :class:`SearchResult` is what a session returns.
- :class:`Space`, :func:`load_space`, :func:`available_spaces` -- validated search-space files.
- :class:`TaxonomySampler`, :func:`candidate_pool` -- taxonomy steering (see ``_steering``).
- :class:`Objective`, :func:`toy_evaluate` -- one trial's decision table; an analytic stand-in scorer.
- :func:`open_storage`, :func:`load_existing_study` -- ``runs/<study>/journal.log`` or any Optuna URL.
- :class:`Watch`, :func:`heartbeat_settings` -- heartbeats; dead workers' trials failed and re-queued.
"""

from __future__ import annotations

from structsearch.engine._heartbeat import Watch, heartbeat_settings
from structsearch.engine._objective import Objective, TrialOutcome, toy_evaluate, worker_id
from structsearch.engine._runner import OBJECTIVES, SAMPLERS, SearchResult, count_done, resolve_evaluator, search
from structsearch.engine._space import (
    LATTICE_CAP,
    SPACES_DIR,
    Constraints,
    Space,
    Steering,
    available_spaces,
    load_space,
    register_space,
    space_from_mapping,
)
from structsearch.engine._steering import CandidatePool, TaxonomySampler, candidate_pool, prior_score, sizes_key
from structsearch.engine._storage import (
    StudyLocation,
    list_studies,
    load_existing_study,
    open_storage,
    run_dir,
)

__all__ = [
    "LATTICE_CAP",
    "OBJECTIVES",
    "SAMPLERS",
    "SPACES_DIR",
    "CandidatePool",
    "Constraints",
    "Objective",
    "SearchResult",
    "Space",
    "Steering",
    "StudyLocation",
    "TaxonomySampler",
    "TrialOutcome",
    "Watch",
    "available_spaces",
    "candidate_pool",
    "count_done",
    "heartbeat_settings",
    "list_studies",
    "load_existing_study",
    "load_space",
    "open_storage",
    "prior_score",
    "register_space",
    "resolve_evaluator",
    "run_dir",
    "search",
    "sizes_key",
    "space_from_mapping",
    "toy_evaluate",
    "worker_id",
]
