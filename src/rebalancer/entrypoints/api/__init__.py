"""HTTP API (FastAPI): :func:`create_app` builds it on a bootstrapped runtime."""

from rebalancer.entrypoints.api.app import create_app

__all__ = ["create_app"]
