"""A bad trigger rule or bands config on model save is a 422 whose ``fields`` names the part."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from monhelpers import uid

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": "test-admin-key"}


@pytest.fixture(scope="module")
def http(runtime: Any) -> Iterator[TestClient]:
    from rebalancer.entrypoints.api import create_app

    with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
        yield c


def _model(http: TestClient, **extra: Any) -> Any:
    iid = uid("I").upper()
    r = http.post("/v1/instruments", json={"id": iid}, headers=ADMIN)
    assert r.status_code == 201, r.text
    body = {"id": uid("m"), "targets": {iid: 0.9}, "cash_target": 0.1, **extra}
    return http.post("/v1/models", json=body, headers=ADMIN)


def test_bad_rule_is_422_naming_the_part(http: TestClient) -> None:
    rule = {
        "name": "stress",
        "priority": 80,
        "rule": {
            "weighted": [
                {"weight": 1, "rule": {"signal": "vol.ratio", "op": ">=", "value": 1.5}},
                {"weight": -2, "rule": {"signal": "drift.max_abs", "op": ">", "value": 0.05}},
            ],
            "threshold": 1,
        },
    }
    r = _model(http, trigger_rule=rule)
    assert r.status_code == 422, r.text
    assert "trigger_rule.rule.weighted[1].weight" in r.text


def test_bad_bands_is_422_and_a_good_config_round_trips(http: TestClient) -> None:
    r = _model(http, bands={"instrument": {"absolute": 0.03, "relative": "x"}})
    assert r.status_code == 422 and "bands.instrument.relative" in r.text
    good_rule = {"name": "r", "rule": {"signal": "drift.max_abs", "op": ">", "value": 0.05}}
    bands = {"instrument": 0.02, "schedules": [{"id": "m", "frequency": "monthly"}]}
    r = _model(http, bands=bands, trigger_rule=good_rule)
    assert r.status_code == 201, r.text
    assert r.json()["bands"] == bands and r.json()["trigger_rule"] == good_rule
