"""deploy/compose.yaml (the production topology) is valid YAML describing what the docs say.

It cannot run here (no container runtime); this checks its structure instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "deploy" / "compose.yaml"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_parses_and_has_the_documented_topology() -> None:
    services = _compose()["services"]
    assert {"postgres", "zookeeper", "broker-1", "broker-2", "api", "worker", "relay"} <= set(
        services
    )
    assert {s for s in services if s.startswith("bookie-")} == {"bookie-1", "bookie-2", "bookie-3"}
    assert services["postgres"]["image"].startswith("timescale/timescaledb:")
    for name in ("zookeeper", "broker-1", "bookie-1"):
        assert services[name]["image"].startswith("apachepulsar/pulsar:")
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["api"]["deploy"]["replicas"] >= 2


def test_every_service_runs_something_and_depends_on_existing_services() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        deps = svc.get("depends_on", {})
        assert set(deps) <= set(services), (name, deps)
    dockerfile = ROOT / services["api"]["build"]["dockerfile"]
    assert dockerfile.exists()


def test_app_services_point_at_the_cluster_and_the_database() -> None:
    services = _compose()["services"]
    for name in ("api", "worker", "relay", "migrate"):
        env = services[name]["environment"]
        assert "@postgres:5432/" in env["REBALANCER_DATABASE_URL"], name
        assert env["REBALANCER_PULSAR_URL"].startswith("pulsar://broker-1:6650"), name
    assert services["worker"]["command"][0] == "worker"
    assert services["relay"]["command"] == ["relay"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
