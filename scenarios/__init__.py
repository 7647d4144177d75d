"""User journeys written once, run by pytest in-process and by locust over HTTP."""

from reference.scenarios.journeys import SCENARIOS
from reference.scenarios.steps import (
           Call,
           Context,
           Journey,
           Reply,
           ScenarioFailure,
           run_async,
           run_sync,
)

__all__ = ["SCENARIOS", "Call", "Context", "Journey", "Reply", "ScenarioFailure", "run_async",
           "run_sync"]
