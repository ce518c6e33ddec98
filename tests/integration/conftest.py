"""Fixtures of the integration tests: one API app and one TestClient per module on the session's
runtime (tests/integration/api keeps one for the whole session)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def app(runtime: Any) -> FastAPI:
    from rebalancer.entrypoints.api import create_app

    return create_app(runtime)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
