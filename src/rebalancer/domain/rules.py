"""A small declarative rule language for combining trigger signals, stored per model as JSON.

Grammar (every node is a JSON object with exactly the keys shown)::

    rule      := threshold | all | any | not | weighted
    threshold := {"signal": "<name>", "op": <op>, "value": <number>}
    op        := ">" | ">=" | "<" | "<=" | "==" | "!="
    all       := {"all": [rule, ...]}          # AND, at least one sub-rule
    any       := {"any": [rule, ...]}          # OR, at least one sub-rule
    not       := {"not": rule}
    weighted  := {"weighted": [{"weight": <number >= 0>, "rule": rule}, ...], "threshold": <number>}

A ``weighted`` node fires when the summed weights of its satisfied sub-rules reach
``threshold``. Signals are named numbers computed by the caller, e.g. ``"drift.max_abs"``
(fraction of NAV) or ``"vol.ratio"`` (dimensionless); their units are those of the signal.

A trigger rule definition is ``{"name": str, "priority": int, "rule": rule}``. Validation
errors raise :class:`~rebalancer.domain.errors.InvalidInput` whose ``fields`` is the dotted
path of the bad part, e.g. ``["rule.all[1].op"]``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from rebalancer.domain.errors import InvalidInput

OPS: Mapping[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
MAX_DEPTH = 12
MAX_NODES = 200


@dataclass(frozen=True, slots=True)
class Threshold:
    """``signals[signal] <op> value``."""

    signal: str
    op: str
    value: float


@dataclass(frozen=True, slots=True)
class AllOf:
    """AND of its sub-rules."""

    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """OR of its sub-rules."""

    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """Negation of its sub-rule."""

    rule: Rule


@dataclass(frozen=True, slots=True)
class Weighted:
    """Fires when the weights of the satisfied sub-rules sum to at least ``threshold``."""

    terms: tuple[tuple[float, Rule], ...]
    threshold: float


Rule: TypeAlias = Threshold | AllOf | AnyOf | Not | Weighted


@dataclass(frozen=True, slots=True)
class RuleDefinition:
    """A named rule with the priority of the trigger it raises (higher is more urgent)."""

    name: str
    priority: int
    rule: Rule


@dataclass(frozen=True, slots=True)
class RuleResult:
    """Verdict of a rule and the reasons that made it (the satisfied thresholds)."""

    fired: bool
    reasons: tuple[str, ...]


def _bad(path: str, detail: str) -> InvalidInput:
    return InvalidInput(f"{path}: {detail}", [path])


def _number(obj: Any, path: str) -> float:
    if isinstance(obj, bool) or not isinstance(obj, int | float) or not math.isfinite(obj):
        raise _bad(path, f"must be a finite number, got {obj!r}")
    return float(obj)


def _keys(obj: Mapping[str, Any], allowed: set[str], path: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _bad(f"{path}.{extra[0]}", f"unknown key {extra[0]!r}; expected {sorted(allowed)}")


class _Parser:
    def __init__(self, known_signals: Collection[str] | None) -> None:
        self.known = known_signals
        self.nodes = 0

    def rule(self, obj: Any, path: str, depth: int) -> Rule:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _bad(path, f"rule has more than {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise _bad(path, f"rule is nested deeper than {MAX_DEPTH} levels")
        if not isinstance(obj, Mapping):
            raise _bad(path, f"must be an object, got {type(obj).__name__}")
        if "signal" in obj or "op" in obj or "value" in obj:
            return self.threshold(obj, path)
        for key in ("all", "any"):
            if key in obj:
                _keys(obj, {key}, path)
                items = obj[key]
                if not isinstance(items, list) or not items:
                    raise _bad(f"{path}.{key}", "must be a non-empty list of rules")
                subs = tuple(
                    self.rule(r, f"{path}.{key}[{i}]", depth + 1) for i, r in enumerate(items)
                )
                return AllOf(subs) if key == "all" else AnyOf(subs)
        if "not" in obj:
            _keys(obj, {"not"}, path)
            return Not(self.rule(obj["not"], f"{path}.not", depth + 1))
        if "weighted" in obj:
            return self.weighted(obj, path, depth)
        raise _bad(path, "must have one of 'signal', 'all', 'any', 'not', 'weighted'")

    def threshold(self, obj: Mapping[str, Any], path: str) -> Threshold:
        _keys(obj, {"signal", "op", "value"}, path)
        for key in ("signal", "op", "value"):
            if key not in obj:
                raise _bad(f"{path}.{key}", "is required")
        signal, op = obj["signal"], obj["op"]
        if not isinstance(signal, str) or not signal:
            raise _bad(f"{path}.signal", "must be a non-empty string")
        if self.known is not None and signal not in self.known:
            raise _bad(f"{path}.signal", f"unknown signal {signal!r}")
        if op not in OPS:
            raise _bad(f"{path}.op", f"unknown operator {op!r}; expected one of {list(OPS)}")
        return Threshold(signal, op, _number(obj["value"], f"{path}.value"))

    def weighted(self, obj: Mapping[str, Any], path: str, depth: int) -> Weighted:
        _keys(obj, {"weighted", "threshold"}, path)
        if "threshold" not in obj:
            raise _bad(f"{path}.threshold", "is required")
        items = obj["weighted"]
        if not isinstance(items, list) or not items:
            raise _bad(f"{path}.weighted", "must be a non-empty list of {weight, rule}")
        terms = []
        for i, item in enumerate(items):
            p = f"{path}.weighted[{i}]"
            if not isinstance(item, Mapping):
                raise _bad(p, "must be an object {weight, rule}")
            _keys(item, {"weight", "rule"}, p)
            if "weight" not in item or "rule" not in item:
                raise _bad(p, "needs both 'weight' and 'rule'")
            w = _number(item["weight"], f"{p}.weight")
            if w < 0:
                raise _bad(f"{p}.weight", "must be >= 0")
            terms.append((w, self.rule(item["rule"], f"{p}.rule", depth + 1)))
        return Weighted(tuple(terms), _number(obj["threshold"], f"{path}.threshold"))


def parse_rule(
    obj: Any, path: str = "rule", *, known_signals: Collection[str] | None = None
) -> Rule:
    """Validate a JSON rule and return its typed form.

    Raises
    ------
    InvalidInput
        ``fields`` names the bad part, e.g. ``["rule.all[1].op"]``.
    """
    return _Parser(known_signals).rule(obj, path, 0)


def parse_definition(obj: Any, *, known_signals: Collection[str] | None = None) -> RuleDefinition:
    """Validate ``{"name", "priority", "rule"}``; errors name ``name``, ``priority``, ``rule.*``."""
    if not isinstance(obj, Mapping):
        raise _bad("definition", "must be an object")
    _keys(obj, {"name", "priority", "rule"}, "definition")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise _bad("name", "must be a non-empty string")
    priority = obj.get("priority", 50)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _bad("priority", "must be an integer")
    if "rule" not in obj:
        raise _bad("rule", "is required")
    return RuleDefinition(name, priority, parse_rule(obj["rule"], known_signals=known_signals))


def rule_to_json(rule: Rule) -> dict[str, Any]:
    """The JSON form of a rule (inverse of :func:`parse_rule`)."""
    if isinstance(rule, Threshold):
        return {"signal": rule.signal, "op": rule.op, "value": rule.value}
    if isinstance(rule, AllOf):
        return {"all": [rule_to_json(r) for r in rule.rules]}
    if isinstance(rule, AnyOf):
        return {"any": [rule_to_json(r) for r in rule.rules]}
    if isinstance(rule, Not):
        return {"not": rule_to_json(rule.rule)}
    return {
        "weighted": [{"weight": w, "rule": rule_to_json(r)} for w, r in rule.terms],
        "threshold": rule.threshold,
    }


def signals_of(rule: Rule) -> set[str]:
    """Names of the signals a rule reads."""
    if isinstance(rule, Threshold):
        return {rule.signal}
    if isinstance(rule, AllOf | AnyOf):
        return set().union(*(signals_of(r) for r in rule.rules))
    if isinstance(rule, Not):
        return signals_of(rule.rule)
    return set().union(*(signals_of(r) for _, r in rule.terms))


def evaluate(rule: Rule, signals: Mapping[str, float]) -> RuleResult:
    """Evaluate a rule on named signal values.

    Reasons list the thresholds that held on the path to a ``True`` verdict (and, for a
    ``weighted`` node, its score). A ``False`` verdict has the reasons of its failed parts.

    Raises
    ------
    InvalidInput
        A signal the rule reads is missing or not finite (``fields == ["signals.<name>"]``).
    """
    for name in sorted(signals_of(rule)):
        v = signals.get(name)
        if v is None or not math.isfinite(v):
            raise InvalidInput(
                f"signal {name} is {v!r}; a finite number is needed", [f"signals.{name}"]
            )
    return _eval(rule, signals)


def _eval(rule: Rule, signals: Mapping[str, float]) -> RuleResult:
    if isinstance(rule, Threshold):
        v = float(signals[rule.signal])
        ok = OPS[rule.op](v, rule.value)
        sym = rule.op if ok else f"not {rule.op}"
        return RuleResult(ok, (f"{rule.signal} = {v:.6g} {sym} {rule.value:g}",))
    if isinstance(rule, AllOf | AnyOf):
        results = [_eval(r, signals) for r in rule.rules]
        want_all = isinstance(rule, AllOf)
        fired = all(r.fired for r in results) if want_all else any(r.fired for r in results)
        relevant = [r for r in results if r.fired == fired] or results
        return RuleResult(fired, tuple(s for r in relevant for s in r.reasons))
    if isinstance(rule, Not):
        inner = _eval(rule.rule, signals)
        return RuleResult(not inner.fired, tuple(f"not({s})" for s in inner.reasons))
    scored = [(w, _eval(r, signals)) for w, r in rule.terms]
    score = math.fsum(w for w, r in scored if r.fired)
    fired = score >= rule.threshold
    parts = tuple(s for w, r in scored if r.fired and w > 0 for s in r.reasons)
    cmp = ">=" if fired else "<"
    return RuleResult(fired, (f"weighted score {score:g} {cmp} {rule.threshold:g}", *parts))
