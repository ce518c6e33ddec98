"""The declarative rule language: parsing, errors naming the bad part, evaluation."""

from __future__ import annotations

from typing import Any

import pytest

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.rules import (
    AllOf,
    Threshold,
    evaluate,
    parse_definition,
    parse_rule,
    rule_to_json,
    signals_of,
)

RULE: dict[str, Any] = {
    "any": [
        {
            "all": [
                {"signal": "drift.max_abs", "op": ">=", "value": 0.03},
                {"not": {"signal": "market.closed", "op": "==", "value": 1}},
            ]
        },
        {
            "weighted": [
                {"weight": 0.6, "rule": {"signal": "vol.ratio", "op": ">", "value": 1.5}},
                {"weight": 0.5, "rule": {"signal": "corr.distance", "op": ">", "value": 0.2}},
            ],
            "threshold": 1.0,
        },
    ]
}
SIGNALS = {"drift.max_abs": 0.01, "market.closed": 0.0, "vol.ratio": 1.0, "corr.distance": 0.1}


def test_parse_and_round_trip() -> None:
    rule = parse_rule(RULE)
    assert rule_to_json(rule) == RULE
    assert signals_of(rule) == set(SIGNALS)
    assert parse_rule({"all": [{"signal": "x", "op": "<", "value": 2}]}) == AllOf(
        (Threshold("x", "<", 2.0),)
    )


def test_evaluate_and_reasons() -> None:
    rule = parse_rule(RULE)
    assert not evaluate(rule, SIGNALS).fired
    r = evaluate(rule, {**SIGNALS, "drift.max_abs": 0.04})
    assert r.fired
    assert "drift.max_abs = 0.04 >= 0.03" in r.reasons
    assert any(s.startswith("not(market.closed") for s in r.reasons)
    # weighted: 0.6 alone is below 1.0; both together 1.1 reach it
    assert not evaluate(rule, {**SIGNALS, "vol.ratio": 2.0}).fired
    w = evaluate(rule, {**SIGNALS, "vol.ratio": 2.0, "corr.distance": 0.3})
    assert w.fired and w.reasons[0] == "weighted score 1.1 >= 1"
    with pytest.raises(InvalidInput) as e:
        evaluate(rule, {"drift.max_abs": 0.1})
    assert e.value.fields[0].startswith("signals.")
    with pytest.raises(InvalidInput):
        evaluate(rule, {**SIGNALS, "vol.ratio": float("nan")})


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (
            {
                "all": [
                    {"signal": "a", "op": ">", "value": 1},
                    {"signal": "b", "op": "~", "value": 1},
                ]
            },
            "rule.all[1].op",
        ),
        ({"all": []}, "rule.all"),
        ({"any": [{"signal": "a", "op": ">"}]}, "rule.any[0].value"),
        ({"signal": "a", "op": ">", "value": "high"}, "rule.value"),
        ({"signal": "a", "op": ">", "value": True}, "rule.value"),
        ({"signal": "", "op": ">", "value": 1}, "rule.signal"),
        ({"not": [1]}, "rule.not"),
        ({"xor": []}, "rule"),
        ({"signal": "a", "op": ">", "value": 1, "extra": 2}, "rule.extra"),
        (
            {
                "weighted": [{"weight": -1, "rule": {"signal": "a", "op": ">", "value": 1}}],
                "threshold": 1,
            },
            "rule.weighted[0].weight",
        ),
        ({"weighted": [{"weight": 1}], "threshold": 1}, "rule.weighted[0]"),
        (
            {"weighted": [{"weight": 1, "rule": {"signal": "a", "op": ">", "value": 1}}]},
            "rule.threshold",
        ),
        ("drift > 3", "rule"),
    ],
)
def test_bad_rules_name_the_part(bad: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_rule(bad)
    assert e.value.fields == [field]


def test_unknown_signal_and_limits() -> None:
    with pytest.raises(InvalidInput) as e:
        parse_rule({"any": [{"signal": "nope", "op": ">", "value": 1}]}, known_signals={"a"})
    assert e.value.fields == ["rule.any[0].signal"]
    deep: dict[str, Any] = {"signal": "a", "op": ">", "value": 1}
    for _ in range(20):
        deep = {"not": deep}
    with pytest.raises(InvalidInput):
        parse_rule(deep)


def test_definitions() -> None:
    d = parse_definition({"name": "drift-or-vol", "priority": 70, "rule": RULE})
    assert d.priority == 70 and d.name == "drift-or-vol"
    with pytest.raises(InvalidInput) as e:
        parse_definition({"name": "x", "priority": "high", "rule": RULE})
    assert e.value.fields == ["priority"]
    with pytest.raises(InvalidInput) as e:
        parse_definition({"name": "x", "rule": {"all": [{"signal": "a", "op": "=>", "value": 1}]}})
    assert e.value.fields == ["rule.all[0].op"]
    with pytest.raises(InvalidInput) as e:
        parse_definition({"rule": RULE})
    assert e.value.fields == ["name"]
