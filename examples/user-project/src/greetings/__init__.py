"""A user's package with its own actions for the reference pipeline."""
