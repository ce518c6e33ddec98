"""Sleeves inside one account (multi-strategy): one optimization per account, netted.

Each sleeve follows its own model with a share of the account and owns an attribution of the
pooled holdings (shares per instrument) and of the cash. Two modes, chosen by ``mode``:

``unified``
    One single-account optimization against the blended target ``sum_s share_s * model_s``.
    Trades that would cancel between sleeves (A sells X while B buys X) are never sent: after
    the account trades, each instrument's pooled position is attributed to the sleeves pro
    rata to what each should hold (``share_s * NAV * model_s[i] / price_i``), so the sleeve
    that wanted X receives it from the sleeve that wanted to sell it, at market price, with
    no cost and no tax (the lots stay in the account). Only the net account trade trades.
``strategy``
    One sleeve alone (``sleeve_id``) is rebalanced to its model within its own value; the
    other sleeves' holdings are frozen (they are targets at their current weights).

In ``unified`` mode the account's cash after trading is attributed like the holdings (pro
rata to ``share * model cash weight``, by ``share`` when no model holds cash), so the sleeves
move toward their shares and ``value_transfer`` reports the value moved between them; in
``strategy`` mode sleeve values are conserved (the sleeve pays from its own cash). Costs and
taxes of each account trade are attributed to the sleeves that bought or sold it, pro rata.
Units: shares, currency; drift as fractions of the account NAV.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import CASH, WEIGHT_TOLERANCE, validate_targets
from rebalancer.optimizer.engine import Recommender
from rebalancer.optimizer.enums import Decision, Side
from rebalancer.optimizer.response_schemas import AnalyzeResponse
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.optimizer.validation import check_request

_QTY_TOL = 1e-6


class SleeveMode(StrEnum):
    """``unified``: one decision for the whole account over all sleeves, netted;
    ``strategy``: one sleeve (``sleeve_id``) rebalanced alone, the others frozen."""

    UNIFIED = "unified"
    STRATEGY = "strategy"


class SleeveIn(BaseModel):
    """One strategy of the account with its attribution of the pooled holdings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1)
    share: float = Field(gt=0, le=1, description="Target fraction of the account NAV.")
    targets: dict[str, float] = Field(description='Model weights (with "CASH"), sum to 1.')
    holdings: dict[str, float] = Field(default_factory=dict, description="Shares attributed.")
    cash: float = Field(default=0.0, ge=0, description="Cash attributed (currency).")


class SleeveRequest(BaseModel):
    """An account request (its ``targets`` are replaced) and its sleeves."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    account: AnalyzeRequest
    sleeves: list[SleeveIn] = Field(min_length=1)
    mode: SleeveMode = SleeveMode.UNIFIED
    sleeve_id: str | None = Field(default=None, description="The sleeve of strategy mode.")


class Reattribution(BaseModel):
    """Shares moved from one sleeve to another without trading (at market price)."""

    instrument: str
    from_sleeve: str
    to_sleeve: str
    quantity: float
    value: float


class SleeveResult(BaseModel):
    """One strategy's part of the decision (its performance impact)."""

    id: str
    drift_before: float = Field(description="Half sum |sleeve weight - share * model|.")
    drift_after: float
    drift_removed_share: float = Field(description="Share of all sleeves' drift removed.")
    holdings_after: dict[str, float]
    cash_before: float
    cash_after: float
    value_transfer: float = Field(
        description="Value moved into the sleeve from the other sleeves at market price, "
        "trades valued at mid like cash_after (currency; unified mode brings sleeves toward "
        "their shares; 0 in strategy mode)."
    )
    traded_value: float = Field(description="Value of account trades attributed (currency).")
    reattributed_value: float = Field(description="Value received plus given (currency).")
    cost_currency: float
    tax_currency: float


class SleeveResponse(BaseModel):
    """Body of the ``POST /v1/analyze/sleeves`` answer: the account's net trades
    (``analysis``), each sleeve's part and the re-attributions that replaced trades."""

    mode: SleeveMode
    decision: Decision
    analysis: AnalyzeResponse
    sleeves: list[SleeveResult]
    reattributions: list[Reattribution]
    trades_avoided_value: float = Field(
        description="Value each sleeve alone would trade minus what the account trades."
    )
    attribution: str | None = Field(
        default=None,
        description="Stored accounts: where the sleeves' holdings came from (stored, or "
        "pro_rata_to_targets when none is stored or it no longer adds up).",
    )


def _check(req: SleeveRequest) -> tuple[list[str], np.ndarray, np.ndarray]:
    acct = req.account
    try:
        check_request(acct)  # lots, targets and risk model of the account itself
    except InvalidInput as exc:
        raise InvalidInput(str(exc), [f"account.{f}" for f in exc.fields] or ["account"]) from exc
    ids = [i.id for i in acct.instruments]
    price = np.array([i.price for i in acct.instruments])
    pooled = np.zeros(len(ids))
    for lot in acct.portfolio.lots:
        pooled[ids.index(lot.instrument)] += lot.quantity
    if abs(sum(s.share for s in req.sleeves) - 1.0) > WEIGHT_TOLERANCE:
        raise InvalidInput("sleeve shares must sum to 1", ["sleeves"])
    held = np.zeros(len(ids))
    for n, s in enumerate(req.sleeves):
        validate_targets(s.targets, f"sleeves[{n}].targets")
        for key in [*s.targets, *s.holdings]:
            if key != CASH and key not in ids:
                raise InvalidInput(f"{key} is not in instruments", [f"sleeves[{n}]"])
        for key, q in s.holdings.items():
            held[ids.index(key)] += q
    if np.abs(held - pooled).max(initial=0.0) > _QTY_TOL:
        raise InvalidInput("sleeve holdings must add up to the account's lots", ["sleeves"])
    if abs(sum(s.cash for s in req.sleeves) - acct.portfolio.cash) > 0.01:
        raise InvalidInput("sleeve cash must add up to the account's cash", ["sleeves"])
    if req.mode is SleeveMode.STRATEGY and req.sleeve_id not in {s.id for s in req.sleeves}:
        raise InvalidInput("strategy mode needs the sleeve_id of one sleeve", ["sleeve_id"])
    return ids, price, pooled


def check_sleeves(req: SleeveRequest) -> None:
    """The sleeves' shares, targets, holdings and cash must add up to the account.

    Raises
    ------
    InvalidInput
        ``fields`` name the sleeves (or ``sleeve_id``).
    """
    _check(req)


def sleeve_drifts(req: SleeveRequest) -> dict[str, float]:
    """Sleeve id -> drift: half sum of |weight - share * model| over its holdings and cash
    (fractions of the account NAV; the attribution must add up, see :func:`check_sleeves`)."""
    ids, price, _ = _check(req)
    h = np.array([[s.holdings.get(i, 0.0) for i in ids] for s in req.sleeves])
    nav = float((h @ price).sum() + sum(s.cash for s in req.sleeves))
    if nav <= 0:
        raise InvalidInput("the account's NAV is zero", ["account.portfolio"])
    return {s.id: _drift(h[n], s.cash, s, ids, price, nav) for n, s in enumerate(req.sleeves)}


def _drift(
    h: np.ndarray, cash: float, s: SleeveIn, ids: list[str], p: np.ndarray, nav: float
) -> float:
    want = np.array([s.targets.get(i, 0.0) for i in ids]) * s.share
    d = np.abs(h * p / nav - want).sum() + abs(cash / nav - s.share * s.targets.get(CASH, 0.0))
    return 0.5 * float(d)


def analyze_sleeves(req: SleeveRequest, recommender: Recommender | None = None) -> SleeveResponse:
    """Rebalance an account's sleeves (``unified`` or one ``strategy``); see the module doc.

    Raises
    ------
    InvalidInput
        Shares, holdings or cash of the sleeves do not add up to the account.
    """
    ids, price, pooled = _check(req)
    n_s = len(req.sleeves)
    h = np.array([[s.holdings.get(i, 0.0) for i in ids] for s in req.sleeves])
    cash = np.array([s.cash for s in req.sleeves])
    value = h @ price + cash
    nav = float(value.sum())
    if req.mode is SleeveMode.UNIFIED:
        tg: dict[str, float] = {}
        for s in req.sleeves:
            for k, w in s.targets.items():
                tg[k] = tg.get(k, 0.0) + s.share * w
    else:
        k_s = next(n for n, s in enumerate(req.sleeves) if s.id == req.sleeve_id)
        own = req.sleeves[k_s]
        rest = h.sum(axis=0) - h[k_s]
        tg = {i: float(rest[n] * price[n] / nav) for n, i in enumerate(ids)}
        for k, w in own.targets.items():
            tg[k] = tg.get(k, 0.0) + w * float(value[k_s]) / nav
        tg[CASH] = tg.get(CASH, 0.0) + float(cash.sum() - cash[k_s]) / nav
    tg = {k: v for k, v in tg.items() if v > 0 or k == CASH}
    resp = (recommender or Recommender()).analyze(req.account.model_copy(update={"targets": tg}))
    z = np.zeros(len(ids))
    for t in resp.trades:
        z[ids.index(t.instrument)] += t.quantity if t.side is Side.BUY else -t.quantity
    after = pooled + z
    if req.mode is SleeveMode.UNIFIED:
        want = np.array([[s.share * s.targets.get(i, 0.0) for i in ids] for s in req.sleeves])
        tot = want.sum(axis=0)
        base = np.where(pooled > 0, h / np.where(pooled > 0, pooled, 1.0), 1.0 / n_s)
        frac = np.where(tot > 0, want / np.where(tot > 0, tot, 1.0), base)
        h_after = frac * after
    else:
        h_after = h.copy()
        h_after[k_s] = h[k_s] + z
        short = np.minimum(h_after[k_s], 0.0)  # sold more than it held: others give it
        if short.any():
            h_after[k_s] -= short
            others = h_after.sum(axis=0) - h_after[k_s]
            for o in range(n_s):
                if o != k_s:
                    h_after[o] += short * np.where(
                        others > 0, h_after[o] / np.where(others > 0, others, 1), 0
                    )
    move = h_after - h
    if req.mode is SleeveMode.UNIFIED:
        # the unified decision brings the sleeves toward their shares: the account's cash
        # after trading is attributed like the holdings, pro rata to what each should hold
        want_cash = np.array([s.share * s.targets.get(CASH, 0.0) for s in req.sleeves])
        if want_cash.sum() <= 0:
            want_cash = np.array([s.share for s in req.sleeves])
        cash_after = resp.cash_after * want_cash / want_cash.sum()
    else:
        cash_after = value - h_after @ price
    return _render(req, resp, ids, price, nav, h, h_after, move, cash, cash_after, z)


def _render(
    req: SleeveRequest,
    resp: AnalyzeResponse,
    ids: list[str],
    price: np.ndarray,
    nav: float,
    h: np.ndarray,
    h_after: np.ndarray,
    move: np.ndarray,
    cash: np.ndarray,
    cash_after: np.ndarray,
    z: np.ndarray,
) -> SleeveResponse:
    n_s = len(req.sleeves)
    traded = np.zeros((n_s, len(ids)))  # shares each sleeve traded with the market
    reattr: list[Reattribution] = []
    for i, inst in enumerate(ids):
        m = move[:, i]
        up, down = np.clip(m, 0, None), np.clip(-m, 0, None)
        if z[i] >= 0:
            traded[:, i] = up * (z[i] / up.sum()) if up.sum() > 0 else 0.0
        else:
            traded[:, i] = down * (-z[i] / down.sum()) if down.sum() > 0 else 0.0
        give = down - (traded[:, i] if z[i] < 0 else 0.0)
        take = up - (traded[:, i] if z[i] >= 0 else 0.0)
        total = take.sum()
        if total <= _QTY_TOL:
            continue
        for g in np.flatnonzero(give > _QTY_TOL):
            for r in np.flatnonzero(take > _QTY_TOL):
                q = float(give[g] * take[r] / total)
                reattr.append(
                    Reattribution(
                        instrument=inst,
                        from_sleeve=req.sleeves[g].id,
                        to_sleeve=req.sleeves[r].id,
                        quantity=q,
                        value=q * float(price[i]),
                    )
                )
    cost = np.zeros(n_s)
    tax = np.zeros(n_s)
    for t in resp.trades:
        i = ids.index(t.instrument)
        part = traded[:, i] / t.quantity if t.quantity > 0 else np.zeros(n_s)
        cost += part * t.cost_bps * t.value / 1e4
        tax += part * t.tax_currency
    before = [_drift(h[s], cash[s], req.sleeves[s], ids, price, nav) for s in range(n_s)]
    after = [_drift(h_after[s], cash_after[s], req.sleeves[s], ids, price, nav) for s in range(n_s)]
    removed = np.clip(np.array(before) - np.array(after), 0, None)
    alone = float(np.abs(move).sum(axis=0) @ price)
    return SleeveResponse(
        mode=req.mode,
        decision=resp.decision,
        analysis=resp,
        sleeves=[
            SleeveResult(
                id=sl.id,
                drift_before=before[s],
                drift_after=after[s],
                drift_removed_share=float(removed[s] / removed.sum()) if removed.sum() else 0.0,
                holdings_after={
                    i: float(h_after[s, n]) for n, i in enumerate(ids) if h_after[s, n]
                },
                cash_before=float(cash[s]),
                cash_after=float(cash_after[s]),
                value_transfer=float(h_after[s] @ price + cash_after[s] - h[s] @ price - cash[s]),
                traded_value=float(traded[s] @ price),
                reattributed_value=float((np.abs(move[s]) - traded[s]) @ price),
                cost_currency=float(cost[s]),
                tax_currency=float(tax[s]),
            )
            for s, sl in enumerate(req.sleeves)
        ],
        reattributions=reattr,
        trades_avoided_value=alone - float(np.abs(z) @ price),
    )
