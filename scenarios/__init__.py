"""User journeys written once (issue 4)."""
