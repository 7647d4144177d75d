"""Load tests (issue 4)."""
