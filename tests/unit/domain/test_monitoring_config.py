"""The per-model monitoring config (models.bands JSON) and trigger-rule validation."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any

import pytest

from rebalancer.domain.calendar import Frequency
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.monitoring_config import (
    DEFAULT_LEVEL_BANDS,
    combine,
    parse_config,
    parse_trigger_rule,
    validate_model_config,
)
from rebalancer.domain.triggers import Band


def test_defaults_and_shorthand() -> None:
    default = parse_config({})
    assert Band("instrument", absolute=0.03, relative=0.25, min_target=0.02) in default.bands
    assert Band("asset_class", absolute=0.05) in default.bands
    assert Band("account", absolute=0.04, metric="turnover") in default.bands
    assert parse_config(None) == default
    cfg = parse_config({"instrument": 0.02, "asset_class": None, "sector": 0.1, "account": None})
    assert cfg.bands == (Band("instrument", absolute=0.02), Band("sector", absolute=0.1))
    assert set(DEFAULT_LEVEL_BANDS) == {"instrument", "asset_class", "account"}


def test_full_config() -> None:
    cfg = parse_config(
        {
            "instrument": {"absolute": 0.03, "relative": 0.2, "min_target": 0.01, "priority": 65},
            "account": {"turnover": 0.05, "tracking_error": 0.02},
            "keys": [{"level": "sector", "key": "tech", "absolute": 0.02}],
            "alerts": {"critical_multiple": 3, "hysteresis": 0.1},
            "schedules": [
                {
                    "id": "month-end",
                    "frequency": "monthly",
                    "at": "15:00",
                    "anchor": "last",
                    "priority": 25,
                    "calendar": {"tz": "Europe/London", "holidays": ["2024-12-25"]},
                }
            ],
            "signals": {
                "volatility_regime": {"short_window": 10, "long_window": 60},
                "correlation_change": False,
                "market_condition": {"index": "SPY", "drawdown_threshold": 0.08},
                "risk_budget": {"vol_budget": 0.15},
            },
            "policy": {"cooldown_hours": 24, "suppress_market_closed": ["market_data"]},
        }
    )
    assert Band("instrument", 0.03, 0.2, priority=65, min_target=0.01) in cfg.bands
    assert Band("account", absolute=0.02, metric="tracking_error") in cfg.bands
    assert Band("sector", absolute=0.02, key="tech") in cfg.bands
    assert cfg.alerts.critical_multiple == 3 and cfg.alerts.hysteresis == 0.1
    ((sched, prio),) = cfg.schedules
    assert sched.frequency == Frequency.MONTHLY and sched.at == time(15) and prio == 25
    assert sched.calendar.tz == "Europe/London"
    assert cfg.signals.volatility_regime is not None
    assert cfg.signals.volatility_regime.short_window == 10
    assert cfg.signals.correlation_change is None
    assert cfg.signals.market_condition is not None and cfg.signals.risk_budget is not None
    assert cfg.policy.cooldown == timedelta(hours=24)
    assert cfg.policy.suppress_market_closed == {"market_data"}


@pytest.mark.parametrize(
    ("bands", "field"),
    [
        ({"instrument": "x"}, "bands.instrument"),
        ({"instrument": {"absolute": 2}}, "bands.instrument.absolute"),
        ({"instrument": {"relativ": 0.1}}, "bands.instrument.relativ"),
        ({"sector": {}}, "bands.sector"),
        ({"account": {"turnover": -1}}, "bands.account.turnover"),
        ({"levels": 1}, "bands.levels"),
        ({"keys": [{"level": "foo", "key": "x", "absolute": 0.1}]}, "bands.keys[0].level"),
        ({"schedules": [{"id": "a", "frequency": "hourly"}]}, "bands.schedules[0].frequency"),
        (
            {"schedules": [{"id": "a", "frequency": "daily", "at": "25:00"}]},
            "bands.schedules[0].at",
        ),
        (
            {"schedules": [{"id": "a", "frequency": "weekly", "anchor": 9}]},
            "bands.schedules[0].anchor",
        ),
        (
            {"schedules": [{"id": "a", "frequency": "daily"}, {"id": "a", "frequency": "daily"}]},
            "bands.schedules[1].id",
        ),
        (
            {"schedules": [{"id": "a", "frequency": "daily", "calendar": {"tz": "Mars/Base"}}]},
            "bands.schedules[0].calendar.tz",
        ),
        ({"signals": {"volatility_regime": {"short_window": 1}}}, None),
        ({"signals": {"market_condition": {}}}, "bands.signals.market_condition"),
        ({"policy": {"suppress_market_closed": ["weekends"]}}, None),
        ({"alerts": {"hysteresis": 1.5}}, "bands.alerts.hysteresis"),
    ],
)
def test_bad_config_names_the_part(bands: dict[str, Any], field: str | None) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_config(bands)
    if field is not None:
        assert e.value.fields == [field]
    else:
        assert e.value.fields and e.value.fields[0].startswith("bands.")


def test_trigger_rule_validation_names_the_part() -> None:
    good = {
        "name": "stress",
        "priority": 90,
        "rule": {"signal": "vol.ratio", "op": ">=", "value": 2},
    }
    assert parse_trigger_rule(good) is not None
    assert parse_trigger_rule(None) is None and parse_trigger_rule({}) is None
    bad_op = {
        "name": "x",
        "rule": {
            "all": [
                {"signal": "drift.max_abs", "op": ">=", "value": 0.05},
                {"signal": "vol.ratio", "op": "=>", "value": 1.5},
            ]
        },
    }
    with pytest.raises(InvalidInput) as e:
        parse_trigger_rule(bad_op)
    assert e.value.fields == ["trigger_rule.rule.all[1].op"]
    assert "trigger_rule.rule.all[1].op" in e.value.detail
    with pytest.raises(InvalidInput) as e:
        validate_model_config({}, {"name": "x", "rule": {"signal": "nope", "op": ">", "value": 1}})
    assert e.value.fields == ["trigger_rule.rule.signal"]
    with pytest.raises(InvalidInput) as e:
        validate_model_config({}, {"name": "", "rule": {}})
    assert e.value.fields == ["trigger_rule.name"]


def test_combine_takes_bands_of_all_and_policy_of_the_largest_sleeve() -> None:
    a = parse_config({"instrument": 0.02, "policy": {"cooldown_hours": 1}})
    b = parse_config(
        {
            "sector": 0.1,
            "policy": {"cooldown_hours": 5},
            "schedules": [{"id": "d", "frequency": "daily"}],
        }
    )
    both = combine([(0.3, a), (0.7, b)])
    assert (
        Band("instrument", absolute=0.02) in both.bands
        and Band("sector", absolute=0.1) in both.bands
    )
    assert both.policy.cooldown == timedelta(hours=5) and len(both.schedules) == 1
    assert combine([(1.0, a)]) is a
