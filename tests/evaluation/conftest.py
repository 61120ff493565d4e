"""Fixtures of the evaluation tests that need a distilled run: shared with the stage tests."""
from tests.stages.conftest import trained  # noqa: F401  (a tiny distilled run and its cache)
