"""The HTTP edge (Sanic). HTTP status codes live here and nowhere else."""

from reference.api.app import create_app

__all__ = ["create_app"]
