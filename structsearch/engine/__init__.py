"""How candidates are proposed and recorded: search spaces, taxonomy steering, the objective, storage.

- :func:`search` -- run (or resume) a study; :class:`SearchResult` is what a session returns.
- :class:`Space`, :func:`load_space`, :func:`available_spaces` -- validated search-space files.
- :class:`TaxonomySampler`, :func:`candidate_pool` -- taxonomy steering (see ``_steering``).
- :class:`Objective`, :func:`toy_evaluate` -- one trial's decision table; an analytic stand-in scorer.
- :func:`resolve_evaluator`, :class:`FrontierScorer` -- how candidates are scored (``frontier`` by default).
- :func:`make_pruner` -- Optuna pruners over the frontier ladder's rungs.
- :func:`confirm_study` -- the confirmation stage: top candidates and references re-trained with seeds.
- :func:`open_storage`, :func:`load_existing_study` -- ``runs/<study>/journal.log`` or any Optuna URL.
- :class:`Watch`, :func:`heartbeat_settings` -- heartbeats; dead workers' trials failed and re-queued.
"""

from __future__ import annotations

from structsearch.engine._confirm import confirm_study, top_trials
from structsearch.engine._heartbeat import Watch, heartbeat_settings
from structsearch.engine._objective import Objective, TrialOutcome, dominated_by_dense, toy_evaluate, worker_id
from structsearch.engine._pruning import DEFAULT_PRUNER, PRUNERS, make_pruner
from structsearch.engine._references import REFERENCES, stored_references
from structsearch.engine._runner import OBJECTIVES, SAMPLERS, SearchResult, count_done, search
from structsearch.engine._scorers import EVALUATORS, FrontierScorer, resolve_evaluator
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
    "DEFAULT_PRUNER",
    "EVALUATORS",
    "LATTICE_CAP",
    "OBJECTIVES",
    "PRUNERS",
    "REFERENCES",
    "SAMPLERS",
    "SPACES_DIR",
    "CandidatePool",
    "Constraints",
    "FrontierScorer",
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
    "confirm_study",
    "count_done",
    "dominated_by_dense",
    "heartbeat_settings",
    "list_studies",
    "load_existing_study",
    "load_space",
    "make_pruner",
    "open_storage",
    "prior_score",
    "register_space",
    "resolve_evaluator",
    "run_dir",
    "search",
    "sizes_key",
    "space_from_mapping",
    "stored_references",
    "top_trials",
    "toy_evaluate",
    "worker_id",
]
