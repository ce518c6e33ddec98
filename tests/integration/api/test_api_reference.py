"""Instruments and models through the API: CRUD, 404 naming ids, 422 naming bad weights."""

from __future__ import annotations

from typing import Any

import pytest
from apihelpers import ADMIN, READ, make_instruments, make_model, ok, unique
from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


def test_instrument_crud(client: TestClient) -> None:
    iid = unique("AAA").upper()
    body = {"id": iid, "name": "Triple A", "sector": "tech", "lot_size": 1}
    created = ok(client.post("/v1/instruments", json=body, headers=ADMIN), 201)
    assert created["id"] == iid and created["sector"] == "tech"
    again = client.post("/v1/instruments", json={**body, "sector": "energy"}, headers=ADMIN)
    assert again.status_code == 200 and again.json()["sector"] == "energy"

    got = ok(client.get(f"/v1/instruments/{iid}", headers=READ))
    assert got["sector"] == "energy"
    assert iid in {i["id"] for i in ok(client.get("/v1/instruments", headers=READ))}

    put = {"sector": "health", "lot_size": 10, "settlement_days": 2}
    updated = ok(client.put(f"/v1/instruments/{iid}", json=put, headers=ADMIN))
    assert (updated["sector"], updated["lot_size"], updated["settlement_days"]) == (
        "health",
        10,
        2,
    )


def test_unknown_instrument_is_404_naming_it(client: TestClient) -> None:
    for resp in (
        client.get("/v1/instruments/NOPE-1", headers=READ),
        client.put("/v1/instruments/NOPE-1", json={}, headers=ADMIN),
    ):
        assert resp.status_code == 404
        body = resp.json()
        assert body["error"] == "unknown_instrument"
        assert "NOPE-1" in body["detail"]
        assert body["fields"] == ["instrument_id"]


def test_model_crud_and_versions(client: TestClient) -> None:
    a, b = make_instruments(client)
    mid = make_model(client, [a, b], cash_target=0.1)
    got = ok(client.get(f"/v1/models/{mid}", headers=READ))
    assert got["version"] == 1
    assert got["targets"] == {a: pytest.approx(0.45), b: pytest.approx(0.45)}
    assert got["bands"] == {"instrument": 0.02}

    new = {"name": "tilted", "targets": {a: 0.7, b: 0.3}, "cash_target": 0.0}
    v2 = ok(client.put(f"/v1/models/{mid}", json=new, headers=ADMIN))
    assert v2["version"] == 2 and v2["targets"] == {a: 0.7, b: 0.3}
    assert v2["bands"] == {"instrument": 0.02}  # kept when not given

    versions = ok(client.get(f"/v1/models/{mid}/versions", headers=READ))
    assert [v["version"] for v in versions] == [1, 2]
    assert mid in {m["id"] for m in ok(client.get("/v1/models", headers=READ))}

    dup = client.post("/v1/models", json={"id": mid, **new}, headers=ADMIN)
    assert dup.status_code == 409 and dup.json()["fields"] == ["body.id"]


def test_unknown_model_is_404_naming_it(client: TestClient) -> None:
    for resp in (
        client.get("/v1/models/nope-m", headers=READ),
        client.get("/v1/models/nope-m/versions", headers=READ),
        client.put("/v1/models/nope-m", json={"targets": {}, "cash_target": 1.0}, headers=ADMIN),
    ):
        assert resp.status_code == 404, resp.text
        assert "nope-m" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("targets", "cash", "fields"),
    [
        ({"A": 0.5, "B": 0.4}, 0.0, ["body.targets", "body.cash_target"]),  # sums to 0.9
        ({"A": 0.5, "B": 0.5}, 0.1, ["body.targets", "body.cash_target"]),  # sums to 1.1
        ({"A": 1.2, "B": -0.2}, 0.0, ["body.targets.A", "body.targets.B"]),  # out of [0, 1]
        ({"A": 0.5, "CASH": 0.5}, 0.0, ["body.targets.CASH"]),
    ],
)
def test_bad_weights_are_422_naming_the_field(
    client: TestClient, targets: dict[str, float], cash: float, fields: list[str]
) -> None:
    a, b = make_instruments(client)
    real = {{"A": a, "B": b}.get(k, k): v for k, v in targets.items()}
    fields = [f.replace(".A", f".{a}").replace(".B", f".{b}") for f in fields]
    body: dict[str, Any] = {"id": unique("m"), "targets": real, "cash_target": cash}
    resp = client.post("/v1/models", json=body, headers=ADMIN)
    assert resp.status_code == 422, resp.text
    err = resp.json()
    assert err["error"] == "invalid"
    assert err["fields"] == fields
    assert err["detail"]


def test_weights_within_tolerance_are_accepted(client: TestClient) -> None:
    a, b = make_instruments(client)
    body = {"id": unique("m"), "targets": {a: 0.6, b: 0.4 - 5e-7}, "cash_target": 0.0}
    ok(client.post("/v1/models", json=body, headers=ADMIN), 201)


def test_model_with_unknown_instrument_is_404_naming_the_field(client: TestClient) -> None:
    body = {"id": unique("m"), "targets": {"NOPE-3": 1.0}}
    resp = client.post("/v1/models", json=body, headers=ADMIN)
    assert resp.status_code == 404
    assert "NOPE-3" in resp.json()["detail"]
    assert resp.json()["fields"] == ["body.targets"]


def test_malformed_json_is_422(client: TestClient) -> None:
    resp = client.post(
        "/v1/models",
        content=b"{not json",
        headers={**ADMIN, "content-type": "application/json"},
    )
    assert resp.status_code == 422
    assert resp.json()["fields"]
