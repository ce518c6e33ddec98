"""Authentication, scopes (table-driven over the OpenAPI routes), tenant isolation, JWT and
secrets in logs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from apihelpers import ADMIN, ADMIN_B, READ, make_account, ok, pending_recommendation, unique
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from rebalancer.config import Scope
from rebalancer.entrypoints.api import create_app
from rebalancer.entrypoints.api.auth import issue_token
from rebalancer.entrypoints.api.store import issue_api_key, revoke_api_key

pytestmark = pytest.mark.integration

REQUIRED_SCOPE: dict[tuple[str, str], Scope] = {
    ("POST", "/v1/instruments"): Scope.ADMIN,
    ("GET", "/v1/instruments"): Scope.READ,
    ("GET", "/v1/instruments/{instrument_id}"): Scope.READ,
    ("PUT", "/v1/instruments/{instrument_id}"): Scope.ADMIN,
    ("POST", "/v1/models"): Scope.ADMIN,
    ("GET", "/v1/models"): Scope.READ,
    ("GET", "/v1/models/{model_id}"): Scope.READ,
    ("PUT", "/v1/models/{model_id}"): Scope.ADMIN,
    ("GET", "/v1/models/{model_id}/versions"): Scope.READ,
    ("POST", "/v1/accounts"): Scope.ADMIN,
    ("GET", "/v1/accounts"): Scope.READ,
    ("GET", "/v1/accounts/{account_id}"): Scope.READ,
    ("PUT", "/v1/accounts/{account_id}"): Scope.ADMIN,
    ("GET", "/v1/accounts/{account_id}/drift"): Scope.READ,
    ("GET", "/v1/accounts/{account_id}/alerts"): Scope.READ,
    ("POST", "/v1/accounts/{account_id}/alerts/{alert_id}/acknowledge"): Scope.TRADE,
    ("GET", "/v1/accounts/{account_id}/triggers"): Scope.READ,
    ("POST", "/v1/accounts/{account_id}/rebalance"): Scope.TRADE,
    ("GET", "/v1/rebalances/{rebalance_id}"): Scope.READ,
    ("GET", "/v1/recommendations/{recommendation_id}"): Scope.READ,
    ("POST", "/v1/recommendations/{recommendation_id}/approve"): Scope.APPROVE,
    ("POST", "/v1/recommendations/{recommendation_id}/reject"): Scope.APPROVE,
    ("POST", "/v1/batches/{batch_id}/cancel"): Scope.TRADE,
    ("POST", "/v1/batches/{batch_id}/approve"): Scope.APPROVE,
    ("GET", "/v1/orders"): Scope.READ,
    ("GET", "/v1/orders/{order_id}"): Scope.READ,
    ("POST", "/v1/orders/{order_id}/cancel"): Scope.TRADE,
    ("POST", "/v1/analyze"): Scope.READ,
    ("POST", "/v1/approvals"): Scope.APPROVE,
    ("POST", "/v1/rebalances/{rebalance_id}/reoptimize"): Scope.TRADE,
    ("GET", "/v1/execution-quality"): Scope.READ,
    ("GET", "/v1/stream"): Scope.READ,
    ("GET", "/v1/accounts/{account_id}/cash"): Scope.READ,
    ("GET", "/v1/blocks/{block_id}"): Scope.READ,
    ("POST", "/v1/blocks/{block_id}/cancel"): Scope.TRADE,
    ("GET", "/v1/metrics/success"): Scope.READ,
    ("POST", "/v1/models/{model_id}/rebalance"): Scope.TRADE,
    ("GET", "/v1/batches/{batch_id}"): Scope.READ,
    ("PUT", "/v1/households/{household_id}"): Scope.ADMIN,
    ("GET", "/v1/households/{household_id}/drift"): Scope.READ,
    ("POST", "/v1/households/{household_id}/rebalance"): Scope.TRADE,
    ("POST", "/v1/analyze/household"): Scope.READ,
    ("POST", "/v1/analyze/sleeves"): Scope.READ,
    ("GET", "/v1/accounts/{account_id}/sleeves/drift"): Scope.READ,
    ("POST", "/v1/accounts/{account_id}/sleeves/analyze"): Scope.READ,
    ("PUT", "/v1/accounts/{account_id}/sleeves/holdings"): Scope.ADMIN,
}


def _operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path, item in app.openapi()["paths"].items():
        for method, op in item.items():
            if path.startswith("/v1/"):
                out.append((method.upper(), path, op))
    return sorted(out, key=lambda t: (t[1], t[0]))


def _url(path: str, op: dict[str, Any]) -> str:
    for p in op.get("parameters", []):
        if p["in"] == "path":
            fmt = p.get("schema", {}).get("format")
            value = str(uuid.uuid4()) if fmt == "uuid" else "nope-1"
            path = path.replace("{" + p["name"] + "}", value)
    return path


@pytest.fixture(scope="module")
def scoped_keys(engine: Any) -> dict[str, dict[Scope, str]]:
    """DB-stored keys of tenant-a: one with only each scope, one with all but each scope."""
    only = {s: issue_api_key(engine, "tenant-a", [s], name=f"only-{s}") for s in Scope}
    without = {
        s: issue_api_key(engine, "tenant-a", [o for o in Scope if o != s], name=f"no-{s}")
        for s in Scope
    }
    return {"only": only, "without": without}


def test_scope_table_covers_every_v1_operation(app: FastAPI) -> None:
    assert {(m, p) for m, p, _ in _operations(app)} == set(REQUIRED_SCOPE)


def test_every_v1_operation_needs_credentials(app: FastAPI, client: TestClient) -> None:
    for method, path, op in _operations(app):
        for headers in ({}, {"X-API-Key": "wrong-key"}, {"Authorization": "Bearer x.y.z"}):
            resp = client.request(method, _url(path, op), headers=headers)
            assert resp.status_code == 401, (method, path, headers, resp.text)
            body = resp.json()
            assert body["error"] == "unauthorized" and body["detail"], body


def test_every_v1_operation_enforces_its_scope(
    app: FastAPI, client: TestClient, scoped_keys: dict[str, dict[Scope, str]]
) -> None:
    for method, path, op in _operations(app):
        scope = REQUIRED_SCOPE[(method, path)]
        url = _url(path, op)
        denied = client.request(method, url, headers={"X-API-Key": scoped_keys["without"][scope]})
        assert denied.status_code == 403, (method, path, denied.text)
        assert denied.json()["error"] == "forbidden" and scope.value in denied.json()["detail"]
        allowed = client.request(method, url, headers={"X-API-Key": scoped_keys["only"][scope]})
        assert allowed.status_code not in (401, 403), (method, path, allowed.text)


def test_read_key_gets_403_on_every_write(app: FastAPI, client: TestClient) -> None:
    for method, path, op in _operations(app):
        resp = client.request(method, _url(path, op), headers=READ)
        if REQUIRED_SCOPE[(method, path)] == Scope.READ:
            assert resp.status_code != 403, (method, path)
        else:
            assert resp.status_code == 403, (method, path, resp.text)


def test_revoked_key_is_401(engine: Any, client: TestClient) -> None:
    key = issue_api_key(engine, "tenant-a", [Scope.READ], name="short-lived")
    assert client.get("/v1/instruments", headers={"X-API-Key": key}).status_code == 200
    assert revoke_api_key(engine, key)
    assert client.get("/v1/instruments", headers={"X-API-Key": key}).status_code == 401


def test_tenant_a_gets_404_on_every_resource_of_tenant_b(client: TestClient, engine: Any) -> None:
    b_account, b_rebalance, b_rec = pending_recommendation(client, engine, ADMIN_B)
    b_orders = ok(client.post(f"/v1/recommendations/{b_rec}/approve", headers=ADMIN_B))["orders"]
    b_order = b_orders[0]["id"]
    b_model = ok(client.get(f"/v1/accounts/{b_account}", headers=ADMIN_B))["sleeves"][0]["model_id"]
    new_model = {"targets": {}, "cash_target": 1.0}
    attempts = [
        ("GET", f"/v1/accounts/{b_account}", None, b_account),
        ("PUT", f"/v1/accounts/{b_account}", {}, b_account),
        ("GET", f"/v1/accounts/{b_account}/drift", None, b_account),
        ("GET", f"/v1/accounts/{b_account}/alerts", None, b_account),
        ("GET", f"/v1/accounts/{b_account}/triggers", None, b_account),
        ("POST", f"/v1/accounts/{b_account}/rebalance", None, b_account),
        ("POST", f"/v1/accounts/{b_account}/alerts/{uuid.uuid4()}/acknowledge", None, b_account),
        ("GET", "/v1/orders?account_id=" + b_account, None, b_account),
        ("GET", f"/v1/models/{b_model}", None, b_model),
        ("PUT", f"/v1/models/{b_model}", new_model, b_model),
        ("GET", f"/v1/models/{b_model}/versions", None, b_model),
        ("GET", f"/v1/rebalances/{b_rebalance}", None, b_rebalance),
        ("GET", f"/v1/recommendations/{b_rec}", None, b_rec),
        ("POST", f"/v1/recommendations/{b_rec}/approve", None, b_rec),
        ("GET", f"/v1/orders/{b_order}", None, b_order),
        ("POST", f"/v1/orders/{b_order}/cancel", None, b_order),
    ]
    for method, url, body, named in attempts:
        resp = client.request(method, url, json=body, headers=ADMIN)
        assert resp.status_code == 404, (method, url, resp.text)
        assert named in resp.json()["detail"], (method, url, resp.text)
    a_ids = {a["id"] for a in ok(client.get("/v1/accounts?limit=500", headers=ADMIN))["items"]}
    assert b_account not in a_ids
    assert b_model not in {m["id"] for m in ok(client.get("/v1/models", headers=ADMIN))}
    assert ok(client.get(f"/v1/orders?recommendation_id={b_rec}", headers=ADMIN)) == []
    # and tenant B still sees all of it
    assert ok(client.get(f"/v1/orders/{b_order}", headers=ADMIN_B))["id"] == b_order


def test_account_ids_do_not_leak_across_tenants_through_models(client: TestClient) -> None:
    _, a_model, _ = make_account(client)
    body = {
        "id": unique("acct"),
        "sleeves": [{"id": unique("sl"), "model_id": a_model, "share": 1.0}],
    }
    resp = client.post("/v1/accounts", json=body, headers=ADMIN_B)
    assert resp.status_code == 404 and a_model in resp.json()["detail"]


# ---------------------------------------------------------------------------- JWT
JWT_SECRET = "jwt-secret-for-tests-0123456789abcdef"


@pytest.fixture(scope="module")
def jwt_client(runtime: Any) -> Iterator[TestClient]:
    settings = runtime.settings.model_copy(update={"jwt_secret": SecretStr(JWT_SECRET)})
    with TestClient(create_app(runtime, settings=settings)) as c:
        c.app_settings = settings  # type: ignore[attr-defined]
        yield c


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_jwt_with_scopes(jwt_client: TestClient) -> None:
    settings = jwt_client.app_settings  # type: ignore[attr-defined]
    read = issue_token(settings, "alice", "tenant-a", [Scope.READ])
    assert jwt_client.get("/v1/instruments", headers=_bearer(read)).status_code == 200
    denied = jwt_client.post("/v1/models", json={}, headers=_bearer(read))
    assert denied.status_code == 403 and "admin" in denied.json()["detail"]
    spaced = jwt.encode(
        {"sub": "bob", "tenant": "tenant-a", "scopes": "read trade", "exp": time.time() + 60},
        JWT_SECRET,
        "HS256",
    )
    assert jwt_client.get("/v1/models", headers=_bearer(spaced)).status_code == 200


def test_jwt_tenant_isolation(jwt_client: TestClient, client: TestClient) -> None:
    settings = jwt_client.app_settings  # type: ignore[attr-defined]
    aid, _, _ = make_account(client)
    as_a = issue_token(settings, "alice", "tenant-a", [Scope.READ])
    as_b = issue_token(settings, "bob", "tenant-b", [Scope.READ])
    assert jwt_client.get(f"/v1/accounts/{aid}", headers=_bearer(as_a)).status_code == 200
    assert jwt_client.get(f"/v1/accounts/{aid}", headers=_bearer(as_b)).status_code == 404


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "x", "tenant": "tenant-a", "scopes": ["read"], "exp": 1},  # expired
        {"sub": "x", "tenant": "tenant-a", "scopes": ["read"]},  # no exp
        {"sub": "x", "scopes": ["read"], "exp": 4_000_000_000},  # no tenant
        {"tenant": "tenant-a", "scopes": ["read"], "exp": 4_000_000_000},  # no sub
    ],
)
def test_bad_jwt_is_401(jwt_client: TestClient, claims: dict[str, Any]) -> None:
    token = jwt.encode(claims, JWT_SECRET, "HS256")
    resp = jwt_client.get("/v1/instruments", headers=_bearer(token))
    assert resp.status_code == 401 and resp.json()["fields"] == ["header.Authorization"]


def test_jwt_with_wrong_signature_or_alg_none_is_401(jwt_client: TestClient) -> None:
    claims = {"sub": "x", "tenant": "tenant-a", "scopes": ["read"], "exp": 4_000_000_000}
    forged = jwt.encode(claims, "another-secret-another-secret-12", "HS256")
    unsigned = jwt.encode(claims, None, "none")
    for token in (forged, unsigned):
        assert jwt_client.get("/v1/instruments", headers=_bearer(token)).status_code == 401


def test_jwt_disabled_without_secret(client: TestClient) -> None:
    token = jwt.encode(
        {"sub": "x", "tenant": "tenant-a", "scopes": ["read"], "exp": 4_000_000_000},
        JWT_SECRET,
        "HS256",
    )
    resp = client.get("/v1/instruments", headers=_bearer(token))
    assert resp.status_code == 401 and "not enabled" in resp.json()["detail"]


# ---------------------------------------------------------------------------- logs
def test_no_secret_in_logs(
    runtime: Any, jwt_client: TestClient, capfd: pytest.CaptureFixture[str]
) -> None:
    from rebalancer.log_config import configure_logging

    settings = jwt_client.app_settings  # type: ignore[attr-defined]
    token = issue_token(settings, "carol", "tenant-a", [Scope.READ])
    secrets = ["test-admin-key", "test-read-key", "wrong-secret-key-123", token, JWT_SECRET]
    configure_logging("DEBUG", json=True)
    try:
        jwt_client.get("/v1/instruments", headers={"X-API-Key": "test-read-key"})
        jwt_client.post("/v1/models", json={"id": "x"}, headers={"X-API-Key": "test-read-key"})
        jwt_client.get("/v1/instruments", headers={"X-API-Key": "wrong-secret-key-123"})
        jwt_client.get("/v1/accounts/nope", headers=_bearer(token))
        jwt_client.post("/v1/models", content=b"{", headers={**ADMIN, "X-Request-ID": "r-1"})
        out, err = capfd.readouterr()
    finally:
        configure_logging(runtime.settings.log_level, runtime.settings.log_json)
    logs = out + err
    assert "http.request" in logs and "auth.rejected" in logs
    for secret in secrets:
        assert secret not in logs
