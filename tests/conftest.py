import os

from hypothesis import settings

# CI runs the same examples every time (no flaky red builds); locally hypothesis explores.
settings.register_profile("ci", derandomize=True, deadline=None, database=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
