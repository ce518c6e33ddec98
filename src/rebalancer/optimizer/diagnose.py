"""Explain infeasibility: find a minimal set of conflicting limits and say it with numbers."""

from __future__ import annotations

from rebalancer.domain.errors import InfeasibleRebalance
from rebalancer.optimizer.data import ProblemData
from rebalancer.optimizer.enums import ConstraintName, SolverName, SolveStatus
from rebalancer.optimizer.problem import CompiledProblem
from rebalancer.optimizer.terms.base import Check, TradeVec

_C = ConstraintName


def _money(x: float) -> str:
    return f"{x:,.0f}"


def conflicting_groups(
    prob: CompiledProblem, data: ProblemData, chain: tuple[SolverName, ...]
) -> list[ConstraintName]:
    """Deletion filter: relax each limit in turn, keep it relaxed if still infeasible."""
    names = [t.name for t in prob.limits if t.relaxable]
    active = set(names)
    try:
        for name in names:
            trial = active - {name}
            prob.set_relaxed({n.value for n in names} - {n.value for n in trial})
            prob.update(data)
            if prob.solve(data, chain).status is SolveStatus.INFEASIBLE:
                active = trial
    finally:
        prob.set_relaxed(set())
        prob.update(data)
    return [n for n in names if n in active]


def _cash_message(data: ProblemData, names: list[ConstraintName]) -> tuple[str, list[str]]:
    need = data.cash_floor * data.nav - data.cash
    fields = list(data.policy_fields["cash_floor"])
    floor_txt = f"{fields[-1]} cash floor {data.cash_floor:.4f} of NAV"
    if fields == ["policy.min_cash_weight"]:
        floor_txt = f"policy.min_cash_weight {data.cash_floor:.2f}"
    sellable = data.lot_ub.sum(axis=1) * data.nav
    parts: list[str] = []
    if _C.TURNOVER in names:
        fields.append("policy.max_turnover")
        parts.append(
            f"policy.max_turnover {data.turnover_limit:.2f} allows "
            f"{_money(data.turnover_limit * data.nav)}"
        )
    if _C.ADV_CAP in names:
        fields.append("policy.max_adv_fraction")
        cap = float((sellable.clip(max=data.adv_cap * data.nav)).sum())
        parts.append(f"policy.max_adv_fraction {data.max_adv_fraction:.2f} allows {_money(cap)}")
    if not parts:
        fields += ["policy.no_sell", "recent_buys"]
        parts.append(
            f"selling every sellable lot raises only {_money(float(sellable.sum()))} "
            "(lots in policy.no_sell, blocked by the wash-sale rule or untradable are excluded)"
        )
    return f"{floor_txt} needs {_money(need)} of sales but " + " and ".join(parts), fields


def infeasible_error(
    prob: CompiledProblem, data: ProblemData, chain: tuple[SolverName, ...]
) -> InfeasibleRebalance:
    """Build the error for an infeasible request, naming the conflicting fields with numbers."""
    names = conflicting_groups(prob, data, chain)
    if _C.CASH_FLOOR in names and set(names) <= {_C.CASH_FLOOR, _C.TURNOVER, _C.ADV_CAP}:
        detail, fields = _cash_message(data, names)
        return InfeasibleRebalance(detail, fields)
    now: dict[ConstraintName, list[Check]] = {}
    zero = TradeVec.zero(data.shape)
    for term in prob.limits:
        if term.name in names:
            now[term.name] = term.check(data, zero)
    texts: list[str] = []
    named: list[str] = []
    fields = named
    for name in names:
        for c in now.get(name, []):
            named += [f for f in c.fields if f not in named]
            subj = f" ({c.subject})" if c.subject else ""
            rel = ">=" if c.lower else "<="
            texts.append(
                f"{', '.join(c.fields)}{subj}: needs {rel} {c.limit:.4g}, now {c.value:.4g}"
            )
    if not texts:
        texts = ["the limits cannot all hold with the sellable lots and allowed buys"]
        fields = ["policy"]
    return InfeasibleRebalance("these limits cannot all hold at once: " + "; ".join(texts), fields)
