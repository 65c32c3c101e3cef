import os
import sys

if os.environ.get("STRUCTSEARCH_WORKER_OF"):  # a worker another structsearch process started (engine/_team.py)
    from structsearch.engine._team import become_worker

    become_worker()

from structsearch.cli import main  # after the worker's signal set-up

sys.exit(main())
