"""User journeys written once, run by pytest in-process and by locust over HTTP."""

from scenarios.journeys import SCENARIOS
from scenarios.steps import Call, Context, Journey, Reply, ScenarioFailure, run_async, run_sync

__all__ = ["SCENARIOS", "Call", "Context", "Journey", "Reply", "ScenarioFailure", "run_async",
           "run_sync"]
