"""Fixtures of the trading tests: an API app and client on the session's runtime."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client(runtime: Any) -> Iterator[TestClient]:
    from rebalancer.entrypoints.api import create_app

    with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
        yield c
