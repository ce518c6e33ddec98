"""Turn a checked answer into an :class:`AnalyzeResponse`: drift, risk, tax, explanations."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import compress
from typing import Any

import numpy as np

from rebalancer.domain.model import CASH
from rebalancer.optimizer.data import BIG, ProblemData
from rebalancer.optimizer.enums import Decision, Reason, Side, Term
from rebalancer.optimizer.explain import Explainer, risk_effect_arrays
from rebalancer.optimizer.problem import CompiledProblem, SolveResult
from rebalancer.optimizer.rounding import Shares
from rebalancer.optimizer.schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    DriftReport,
    RiskReport,
)
from rebalancer.optimizer.terms.base import Arr, Check, TradeVec, sigma_times, volatility


@dataclass(slots=True)
class Outcome:
    """What the engine decided, before rendering."""

    decision: Decision
    shares: Shares
    result: SolveResult
    solves: int
    cache_hit: bool
    total_ms: float
    messages: list[str] = field(default_factory=list)
    checks: list[Check] | None = None
    """Every check of the final trade, when the engine already computed them."""
    parts: tuple[dict[str, float], dict[str, float]] | None = None
    """Objective terms of the zero and the final trade, when already computed."""
    final: TradeVec | None = None
    """The trade of ``shares`` when already computed (``shares.trade(data)``, same values)."""


_Order = tuple[list[int], list[str]]
"""Label codes in order of first appearance, and their names."""


def _label_order(codes: np.ndarray, names: list[str]) -> _Order:
    """The labels present in ``codes`` in order of first appearance (codes and names)."""
    order = list(dict.fromkeys(codes.tolist()))  # a dict keeps its keys' first insertion order
    return order, [names[k] for k in order]


def _by_label(codes: np.ndarray, names: list[str], values: Arr, order: _Order) -> dict[str, float]:
    """Sum of ``values`` per label (``names[codes[i]]``), labels in ``order`` (from
    :func:`_label_order` of the same codes)."""
    sums = np.bincount(codes, weights=values, minlength=len(names))
    return dict(zip(order[1], sums[order[0]].tolist(), strict=True))


def _drift_orders(data: ProblemData) -> tuple[_Order, _Order]:
    """Label orders of the sectors and asset classes (the same for every drift report)."""
    return (
        _label_order(data.sector_index, data.sector_names),
        _label_order(data.asset_index, data.asset_names),
    )


def drift_report(
    data: ProblemData, x: Arr, cash_w: float, orders: tuple[_Order, _Order] | None = None
) -> DriftReport:
    """Drift (weight minus target) per instrument, sector, asset class and for the account
    (``orders``: :func:`_drift_orders` of ``data``, when already computed)."""
    return DriftReport.model_validate(_drift_fields(data, x, cash_w, orders))


def _drift_fields(
    data: ProblemData, x: Arr, cash_w: float, orders: tuple[_Order, _Order] | None
) -> dict[str, Any]:
    """The fields of :func:`drift_report`."""
    sectors, classes = orders if orders is not None else _drift_orders(data)
    d = x - data.target
    by_inst = dict(zip(data.ids, d.tolist(), strict=True))
    by_inst[CASH] = cash_w - data.cash_target
    by_sector = _by_label(data.sector_index, data.sector_names, d, sectors)
    by_class = _by_label(data.asset_index, data.asset_names, d, classes)
    by_sector[CASH] = by_class[CASH] = by_inst[CASH]
    return {
        "by_instrument": by_inst,
        "by_sector": by_sector,
        "by_asset_class": by_class,
        "account": 0.5 * sum(map(abs, by_inst.values())),
    }


_Fields = dict[str, float]


def _vol(x: Arr, sx: Arr) -> float:
    """Volatility of weights ``x`` given ``sx = sigma_times(data, x)`` (the arithmetic of
    :func:`volatility`, so the same value, without recomputing ``Sigma x``)."""
    return float(np.sqrt(max(float(x @ sx), 0.0)))


def _contributions(
    data: ProblemData, x: Arr, sx: Arr, vol: float
) -> tuple[dict[str, _Fields], dict[str, _Fields]]:
    """Marginal, component and share of volatility per instrument and per sector, as
    :class:`RiskContribution` fields (``sx = sigma_times(data, x)``, ``vol`` its volatility)."""
    marginal = sx / vol if vol > 0 else np.zeros(data.n)
    comp = x * marginal + 0.0  # + 0.0: an emptied position contributes 0, not -0.0
    share = comp / vol if vol > 0 else np.zeros(data.n)
    by_inst = {
        i: {"marginal": m, "component": c, "share": sh}
        for i, m, c, sh in zip(
            data.ids, marginal.tolist(), comp.tolist(), share.tolist(), strict=True
        )
    }
    m = len(data.sector_names)
    comp_s = np.bincount(data.sector_index, weights=comp, minlength=m)
    xm_s = np.bincount(data.sector_index, weights=x * marginal, minlength=m)
    x_s = np.bincount(data.sector_index, weights=x, minlength=m)
    by_sector: dict[str, _Fields] = {}
    for sec, c, xm, xs in zip(
        data.sector_names, comp_s.tolist(), xm_s.tolist(), x_s.tolist(), strict=True
    ):
        by_sector[sec] = {
            "marginal": xm / max(xs, 1e-300),
            "component": c,
            "share": c / vol if vol > 0 else 0.0,
        }
    return by_inst, by_sector


def risk_report(data: ProblemData, before: Arr, after: Arr) -> RiskReport:
    """Ex-ante risk before and after, with contributions after the trades."""
    return RiskReport.model_validate(_risk_fields(data, before, after))


def _risk_fields(data: ProblemData, before: Arr, after: Arr) -> dict[str, Any]:
    """The fields of :func:`risk_report` (each volatility computed once)."""
    loss_b = -(data.stress_returns @ before)
    loss_a = -(data.stress_returns @ after)
    sx_a = sigma_times(data, after)
    vol_b, vol_a = volatility(data, before), _vol(after, sx_a)
    by_inst, by_sector = _contributions(data, after, sx_a, vol_a)
    limits = data.stress_limit
    return {
        "volatility_before": vol_b,
        "volatility_after": vol_a,
        "tracking_error_before": volatility(data, before - data.target),
        "tracking_error_after": volatility(data, after - data.target),
        "var_confidence": round(float(_confidence(data)), 10),
        "var_before": data.z_alpha * vol_b,
        "var_after": data.z_alpha * vol_a,
        "stress": [
            {
                "name": name,
                "loss_before": lb,
                "loss_after": la,
                "limit": None if lim >= BIG else lim,
            }
            for name, lb, la, lim in zip(
                data.stress_names,
                loss_b.tolist(),
                loss_a.tolist(),
                limits.tolist(),
                strict=True,
            )
        ],
        "contributions_by_instrument": by_inst,
        "contributions_by_sector": by_sector,
    }


def _confidence(data: ProblemData) -> float:
    from statistics import NormalDist

    return NormalDist().cdf(data.z_alpha)


def _breakdown(parts: dict[str, float], nav: float) -> dict[str, float]:
    """:class:`ObjectiveBreakdown` fields of objective terms ``parts`` (fractions of NAV)."""
    total = sum(parts.values())
    return {
        "total": total,
        "tracking": parts["tracking"],
        "spread_and_fees": parts["spread_and_fees"],
        "impact": parts["impact"],
        "tax": parts["tax"],
        "total_currency": total * nav,
        "tracking_currency": parts["tracking"] * nav,
        "spread_and_fees_currency": parts["spread_and_fees"] * nav,
        "impact_currency": parts["impact"] * nav,
        "tax_currency": parts["tax"] * nav,
    }


_TERMS = (Term.SHORT, Term.LONG)
"""The term of a lot sale, indexed by ``lot_long``."""


def weights_after(data: ProblemData, s: Shares, final: TradeVec) -> Arr:
    """Weights after the trade ``final`` (``s`` in shares), exactly 0 where every share held is
    sold and none bought: ``w + z`` sums the same shares in another order (total x price
    against lot by lot), which leaves a -1e-17 or so that would show as "-0.00 %"."""
    after: Arr = data.w + final.z
    emptied = (s.buy == 0) & (data.w > 0) & (s.lot.sum(axis=1) == data.lot_qty.sum(axis=1))
    after[emptied] = 0.0
    return after


def _trades(
    req: AnalyzeRequest, data: ProblemData, s: Shares, after: Arr
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The fields of one :class:`TradeOut` per instrument and side (sells first, instrument
    order; validated with the whole response) and the :class:`TaxSummary` sums of the lot
    sales (currency: ``short_term_gain``, ``long_term_gain``, ``harvested_losses``,
    ``estimated_tax``; each a plain left-to-right sum over the sales in lot order).
    ``after`` is :func:`weights_after` of the trade ``s``."""
    before = data.w
    sold = np.where(data.lot_present, s.lot, 0.0)
    r, c = np.nonzero(sold > 0)
    lot_qty = sold[r, c]
    gain = (data.price[r] - data.lot_basis[r, c]) * lot_qty
    tax = data.lot_rate[r, c] * gain
    neg = gain < 0
    n = data.n
    tax_by = np.bincount(r, weights=tax, minlength=n)
    loss_by = np.bincount(r, weights=np.where(neg, gain, 0.0), minlength=n)
    loss_tax_by = np.bincount(r, weights=np.where(neg, tax, 0.0), minlength=n)
    long_l = data.lot_long[r, c].tolist()
    gain_l, tax_l = gain.tolist(), tax.tolist()
    r_l, lot_ids = r.tolist(), data.lot_ids
    sales = [
        {
            "lot_id": lot_ids[i][j],
            "quantity": q,
            "realized_gain": g,
            "term": term,
            "tax_currency": t,
        }
        for i, j, q, g, term, t in zip(
            r_l,
            c.tolist(),
            lot_qty.tolist(),
            gain_l,
            map(_TERMS.__getitem__, long_l),
            tax_l,
            strict=True,
        )
    ]
    sums = {
        "short_term_gain": sum(compress(gain_l, [not x for x in long_l])),
        "long_term_gain": sum(compress(gain_l, long_l)),
        "harvested_losses": sum(compress(gain_l, neg.tolist())),
        "estimated_tax": sum(tax_l),
    }
    sell_q, buy_q = s.lot.sum(axis=1), s.buy
    # one row per trade: instrument, is-sell, shares; sells before buys of one instrument.
    # The flat positions of the (n, 2) sell/buy flags are 2 i + (0 sell, 1 buy): in order.
    flags = np.empty((data.n, 2), dtype=bool)
    np.greater(sell_q, 0, out=flags[:, 0])
    np.greater(buy_q, 0, out=flags[:, 1])
    keys = np.flatnonzero(flags)
    idx, is_sell = keys >> 1, (keys & 1) == 0
    qty = np.where(is_sell, sell_q[idx], buy_q[idx])
    value = qty * data.price[idx]
    traded = value / data.nav
    cost = (data.cost[idx] * traded + data.impact[idx] * traded**1.5) * data.nav
    cost_bps = np.where(value > 0, cost / np.where(value > 0, value, 1.0) * 1e4, 0.0)
    effects = risk_effect_arrays(data, before, idx, np.where(is_sell, -traded, traded))
    loss_rows = np.flatnonzero((s.lot * data.lot_loss).sum(axis=1) > 0).tolist()
    loss_groups = {data.groups[i] for i in loss_rows}
    why = Explainer(req, data, before, after, loss_groups)
    loss_k = np.where(is_sell, loss_by[idx], 0.0)
    loss_tax_k = np.where(is_sell, loss_tax_by[idx], 0.0)
    reasons, texts = why.explain_all(idx, is_sell, loss_k, loss_tax_k, effects)
    tax_k = np.where(is_sell, tax_by[idx], 0.0).tolist()
    ids, bef, aft, tgt = data.ids, before.tolist(), after.tolist(), data.target.tolist()
    buy_sell = (Side.BUY, Side.SELL)
    no_lots: list[dict[str, Any]] = []
    # the sales are in lot order, so instrument idx[k]'s are sales[lo[k]:hi[k]]
    out: list[dict[str, Any]] = [
        {
            "instrument": ids[i],
            "side": buy_sell[sell],
            "quantity": q,
            "value": v,
            "lots": sales[lo:hi] if sell else no_lots,
            "reasons": why_k,
            "explanation": text,
            "tax_currency": tx,
            "cost_bps": bps,
            "risk_effect": eff,
            "weight_before": bef[i],
            "weight_after": aft[i],
            "target": tgt[i],
        }
        for i, sell, lo, hi, q, v, bps, why_k, text, tx, eff in zip(
            idx.tolist(),
            is_sell.tolist(),
            np.searchsorted(r, idx, "left").tolist(),
            np.searchsorted(r, idx, "right").tolist(),
            qty.tolist(),
            value.tolist(),
            cost_bps.tolist(),
            reasons,
            texts,
            tax_k,
            effects.fields(),
            strict=True,
        )
    ]
    return out, sums


def build_response(
    req: AnalyzeRequest, data: ProblemData, prob: CompiledProblem, o: Outcome
) -> AnalyzeResponse:
    """Render the final answer: plain fields throughout, validated once at the end (one
    pass of pydantic-core over the whole response costs less than a model per part)."""
    final = o.final if o.final is not None else o.shares.trade(data)
    after = weights_after(data, o.shares, final)
    cash_after_w = data.cash / data.nav - float(final.z.sum())
    p0, p1 = o.parts or (prob.parts(data, TradeVec.zero(data.shape)), prob.parts(data, final))
    trades, sums = _trades(req, data, o.shares, after)
    net = (sum(p0.values()) - sum(p1.values())) * data.nav
    checks = o.checks if o.checks is not None else prob.checks(data, final)
    orders = _drift_orders(data)
    body: dict[str, Any] = {
        "decision": o.decision,
        "nav": data.nav,
        "cash_before": data.cash,
        "cash_after": cash_after_w * data.nav,
        "trades": trades,
        "objective": _breakdown(p1, data.nav),
        "objective_before": _breakdown(p0, data.nav),
        "net_benefit": net,
        "drift_before": _drift_fields(data, data.w, data.cash / data.nav, orders),
        "drift_after": _drift_fields(data, after, cash_after_w, orders),
        "risk": _risk_fields(data, data.w, after),
        "tax": _tax_fields(data, sums),
        "cost_benefit": {
            "opportunity_cost_of_not_trading": p0["tracking"] * data.nav,
            "tracking_cost_after": p1["tracking"] * data.nav,
            "spread_and_fees": p1["spread_and_fees"] * data.nav,
            "impact": p1["impact"] * data.nav,
            "tax": p1["tax"] * data.nav,
            "net_benefit": net,
        },
        "constraints": [
            {
                "name": c.name,
                "fields": list(c.fields),
                "subject": c.subject,
                "value": c.value,
                "limit": c.limit,
                "slack": c.slack,
                "binding": c.slack <= 1e-6 * max(1.0, abs(c.limit)),
            }
            for c in checks
            if c.limit < BIG
        ],
        "solver": _solver_fields(o),
        "messages": o.messages,
    }
    return AnalyzeResponse.model_validate(body)


def _tax_fields(data: ProblemData, sums: dict[str, float]) -> dict[str, Any]:
    """:class:`TaxSummary` fields: the sums of the lot sales, deferred and blocked lots."""
    return {
        **sums,
        "deferred_lots": [
            {
                "lot_id": d.lot_id,
                "instrument": d.instrument,
                "long_term_on": d.long_term_on,
                "days": d.days,
                "tax_saved_currency": d.tax_saved,
                "waiting_cost_currency": d.waiting_cost,
            }
            for d in data.deferred
        ],
        "blocked_by_wash_sale": list(data.lot_blocked_wash),
    }


def _solver_fields(o: Outcome) -> dict[str, Any]:
    """:class:`SolverReport` fields of the outcome."""
    r = o.result
    return {
        "name": r.solver,
        "status": r.status,
        "iterations": r.iterations,
        "solve_time_ms": r.solve_time_ms,
        "total_time_ms": o.total_ms,
        "compiled_cache_hit": o.cache_hit,
        "solves": o.solves,
        "fallbacks": [{"solver": s, "reason": why} for s, why in r.fallbacks],
    }


__all__ = ["Outcome", "Reason", "build_response", "drift_report", "risk_report"]
