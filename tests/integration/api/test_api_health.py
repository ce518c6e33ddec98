"""Health, readiness, metrics, and the error contract for unknown routes and unexpected errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from apihelpers import READ
from fastapi import FastAPI
from fastapi.testclient import TestClient

from rebalancer.entrypoints.api import create_app
from rebalancer.entrypoints.api.routes.health import broker_address

pytestmark = pytest.mark.integration


def test_healthz(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    assert resp.headers["x-request-id"]


def test_readyz(client: TestClient) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ready" and body["database"]["ok"] and body["broker"]["ok"]
    assert body["time_series_backend"] in ("timescaledb", "plain")


def test_readyz_503_when_the_broker_is_unreachable(runtime: Any) -> None:
    infra = dataclasses.replace(runtime.infra, pulsar_url="pulsar://127.0.0.1:1")
    broken = dataclasses.replace(runtime, infra=infra)
    with TestClient(create_app(broken)) as c:
        resp = c.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable" and body["database"]["ok"]
    assert not body["broker"]["ok"] and body["broker"]["error"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("pulsar://127.0.0.1:6650", ("127.0.0.1", 6650)),
        ("pulsar://broker-1:7000,broker-2:7000", ("broker-1", 7000)),
        ("pulsar://broker", ("broker", 6650)),
        ("pulsar+ssl://broker", ("broker", 6651)),
        ("pulsar://[::1]:6650", ("::1", 6650)),
    ],
)
def test_broker_address(url: str, expected: tuple[str, int]) -> None:
    assert broker_address(url) == expected


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get("/v1/accounts/nope-metrics", headers=READ)
    text = client.get("/metrics").text
    assert "rebalancer_http_request_duration_seconds_bucket" in text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("rebalancer_http_requests_total{")
        and 'route="/v1/accounts/{account_id}"' in ln
        and 'status="404"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert "nope-metrics" not in text


def test_unknown_route_is_json_404(client: TestClient) -> None:
    resp = client.get("/v1/nothing-here", headers=READ)
    assert resp.status_code == 404
    assert resp.json()["error"] == "not_found" and resp.json()["request_id"]
    resp = client.delete("/v1/instruments", headers=READ)
    assert resp.status_code == 405 and resp.json()["error"] == "method_not_allowed"


def test_unexpected_error_is_json_500_with_request_id(runtime: Any) -> None:
    app: FastAPI = create_app(runtime)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom with a secret inside")

    with TestClient(app, raise_server_exceptions=False) as c:
        resp = c.get("/boom", headers={"X-Request-ID": "req-42"})
    assert resp.status_code == 500
    body = resp.json()
    assert body["error"] == "internal_error" and body["request_id"] == "req-42"
    assert "req-42" in body["detail"] and "kaboom" not in body["detail"]
    assert resp.headers["x-request-id"] == "req-42"


def test_openapi_documents_the_error_body(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/models"]["post"]
    assert op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )
    assert {"APIKeyHeader", "HTTPBearer"} <= set(spec["components"]["securitySchemes"])
    assert client.get("/docs").status_code == 200
