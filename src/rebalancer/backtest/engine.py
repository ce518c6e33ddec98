"""Replay one account under one policy through the live service's request builder, optimizer and
settlement rules.

Each trading day, at the close:

1. cash flows of the day (a deposit adds cash; a withdrawal larger than the cash first sells,
   through the optimizer with the service's default policy, ``raise_cash`` and a turnover cap
   just above the need, at least cost, impact and tax, whatever the rebalancing policy);
2. the policy's trigger; when it fires, :func:`rebalancer.analytics.requests.make_request`
   builds the request (the function the service uses), the optimizer answers, and a
   ``rebalance`` answer is executed;
3. executed trades settle the same day through :func:`rebalancer.domain.settlement.
   apply_settlement` at the close, with the optimizer's own spread + impact estimate
   (``TradeOut.cost_bps``) charged as a fee per share (it lowers sale proceeds and raises the
   cost basis of buys), sells before buys;
4. a snapshot of NAV, weights and drift.

Units: money in account currency, weights fractions of NAV, quantities shares.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from datetime import date, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np

from rebalancer.analytics.requests import LossSale, make_request
from rebalancer.backtest.logs import AccountResult, Row, decision_row
from rebalancer.backtest.market import MarketHistory
from rebalancer.backtest.policies import DayState, RebalancePolicy, Trigger
from rebalancer.domain.errors import RebalancerError
from rebalancer.domain.model import CASH, Account, Instrument, ModelPortfolio, blended_targets
from rebalancer.domain.orders import Side
from rebalancer.domain.settlement import SettledFill, apply_settlement
from rebalancer.domain.wash_sale import is_wash_sale_loss
from rebalancer.optimizer import Decision, Recommender
from rebalancer.optimizer.schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    Policy,
    RecentBuy,
    TradeOut,
)
from rebalancer.service_layer.handlers.recommending import default_policy

FEE_QUANTUM = Decimal("0.000001")
PRICE_QUANTUM = Decimal("0.0001")


def _dec(x: float, q: Decimal) -> Decimal:
    return Decimal(repr(float(x))).quantize(q, rounding=ROUND_HALF_UP)


class AccountReplay:
    """State and logs of one account under one policy (see the module docstring).

    Parameters
    ----------
    account
        Starting state; copied, never modified.
    models, instruments
        Model portfolios and the security master.
    history
        Market data; ``t_start`` .. ``t_end`` (inclusive) are replayed.
    policy
        The trigger rule.
    recommender
        The optimizer (one per process: it caches compiled problems).
    flows
        Cash flows by date.
    decision_days
        Dates on which ``optimizer`` policies decide.
    """

    def __init__(
        self,
        account: Account,
        models: Mapping[str, ModelPortfolio],
        instruments: Mapping[str, Instrument],
        history: MarketHistory,
        policy: RebalancePolicy,
        recommender: Recommender,
        flows: Mapping[date, float],
        decision_days: frozenset[date],
    ) -> None:
        self.account = copy.deepcopy(account)
        self.models, self.instruments, self.h = models, instruments, history
        self.policy, self.rec = policy, recommender
        self.flows, self.decision_days = flows, decision_days
        self.targets = blended_targets(account.sleeves, models)
        self._t_vec = np.array([self.targets.get(i, 0.0) for i in history.ids])
        self._t_cash = self.targets.get(CASH, 0.0)
        self._qty: np.ndarray | None = None
        self._request: AnalyzeRequest | None = None
        """The request of the answer being executed (prices and selling costs it assumed)."""
        self.out = AccountResult()
        self.buys: list[RecentBuy] = []
        self.loss_sales: list[LossSale] = []
        self._seq = 0
        self._tags = {"policy": policy.name, "account": account.id}

    # ------------------------------------------------------------------ helpers
    def _prices(self, t: int) -> dict[str, float]:
        return self.h.prices(t)

    def quantities(self) -> np.ndarray:
        """Shares held per instrument, in ``history.ids`` order (cached until the next fill)."""
        if self._qty is None:
            q = np.zeros(len(self.h.ids))
            for i, v in self.account.quantities().items():
                q[self.h.column(i)] = float(v)
            self._qty = q
        return self._qty

    def vector_valuation(self, t: int) -> tuple[float, np.ndarray, float]:
        """NAV (currency), instrument weights in ``history.ids`` order and the cash weight
        (fractions of NAV) at the close of day ``t``."""
        values = self.quantities() * self.h.close[t]
        cash = float(self.account.cash)
        nav = cash + float(values.sum())
        if nav <= 0:
            return nav, np.zeros_like(values), 1.0
        return nav, values / nav, cash / nav

    def valuation(self, t: int) -> tuple[float, dict[str, float]]:
        """NAV (currency) and weights (fractions of NAV) per held or targeted instrument and
        cash at the close of day ``t`` (as :meth:`Account.weights`, with one valuation)."""
        nav, w_vec, w_cash = self.vector_valuation(t)
        q = self.quantities()
        w = {i: float(w_vec[k]) for k, i in enumerate(self.h.ids) if q[k] != 0}
        w[CASH] = w_cash
        for k in self.targets:
            w.setdefault(k, 0.0)
        return nav, w

    def _ids(self) -> list[str]:
        return sorted({*self.account.quantities(), *(k for k in self.targets if k != CASH)})

    def _request_state(self, day: date) -> tuple[list[RecentBuy], list[LossSale]]:
        since = day - timedelta(days=31)
        self.buys = [b for b in self.buys if b.date >= since]
        self.loss_sales = [s for s in self.loss_sales if s.date >= since]
        return self.buys, self.loss_sales

    def ask(self, t: int, policy: Policy) -> tuple[Any, AnalyzeResponse]:
        """Build the request exactly as the service does and solve it."""
        day, ids = self.h.dates[t], self._ids()
        buys, losses = self._request_state(day)
        req = make_request(
            self.account,
            self.models,
            self.instruments,
            self.h.quotes(t, ids),
            self.h.closes(t, ids),
            day,
            policy,
            recent_buys=buys,
            recent_loss_sales=losses,
        )
        self._request = req
        return req, self.rec.analyze(req)

    def best_objective(self, req: Any, resp: AnalyzeResponse) -> float | None:
        """Best achievable objective (fraction of NAV) of ``req``: the least of doing nothing,
        the decision, and the optimizer's answer re-solved without the net-benefit gate and
        the minimum trade value (whole shares, every constraint kept)."""
        ungated = req.model_copy(
            update={
                "policy": req.policy.model_copy(
                    update={"min_net_benefit": 0.0, "min_trade_value": 0.0}
                )
            }
        )
        try:
            free = self.rec.analyze(ungated).objective.total
        except RebalancerError:
            return None
        return min(free, resp.objective.total, resp.objective_before.total)

    # ------------------------------------------------------------------ execution
    def _fill(self, t: int, trade: TradeOut, kind: str) -> None:
        day, price = (
            self.h.dates[t],
            _dec(self.h.close[t, self.h.column(trade.instrument)], PRICE_QUANTUM),
        )
        fee = (price * Decimal(repr(trade.cost_bps)) / Decimal(10_000)).quantize(FEE_QUANTUM)
        qty = Decimal(repr(trade.quantity))
        side = Side.BUY if str(trade.side) == "buy" else Side.SELL
        if side == Side.BUY:
            affordable = (self.account.cash / (price + fee)).to_integral_value(
                rounding="ROUND_FLOOR"
            )
            qty = min(qty, max(affordable, Decimal(0)))
            if qty <= 0:
                return
        self._seq += 1
        fid = f"{self.policy.name}:{self.account.id}:{day.isoformat()}:{self._seq}"
        lots = tuple((ls.lot_id, Decimal(repr(ls.quantity))) for ls in trade.lots)
        if side == Side.BUY or sum((q for _, q in lots), Decimal(0)) != qty:
            lots = ()
        fill = SettledFill(
            fid, fid, self.account.id, trade.instrument, side, qty, price, day, fee, lots
        )
        res = apply_settlement(self.account, fill)
        self._qty = None
        self.out.trades.append(
            {
                **self._tags,
                "date": day,
                "fill_id": fid,
                "instrument": trade.instrument,
                "group": self.instruments[trade.instrument].group,
                "side": str(side),
                "kind": kind,
                "quantity": float(qty),
                "price": float(price),
                "value": float(qty * price),
                "cost": float(qty * fee),
            }
        )
        if side == Side.BUY:
            self.buys.append(RecentBuy(instrument=trade.instrument, date=day, quantity=float(qty)))
        for g in res.realized:
            rule_loss = self._wash_sale_loss(g.instrument, float(g.cost_basis))
            self.out.realized.append(
                {
                    **self._tags,
                    "date": day,
                    "fill_id": fid,
                    "lot_id": g.lot_id,
                    "instrument": g.instrument,
                    "group": self.instruments[g.instrument].group,
                    "acquired": g.acquired,
                    "quantity": float(g.quantity),
                    "gain": float(g.gain),
                    "term": str(g.term),
                    "taxable": self.account.tax_type == "taxable",
                    "wash_sale_loss": rule_loss,
                }
            )
            # as the service: every sale with a realized loss after all costs blocks buying
            # the group back (a superset of the rule's losses, which exclude market impact)
            if g.gain < 0 or rule_loss:
                self.loss_sales.append(LossSale(g.instrument, day))

    def _wash_sale_loss(self, instrument: str, cost_basis: float) -> bool:
        """Whether selling a lot of ``instrument`` with basis ``cost_basis`` (currency per
        share) at the executed answer's price is a loss for the wash-sale rule: the amount
        realized net of selling costs (half spread + commission,
        :func:`rebalancer.domain.wash_sale.is_wash_sale_loss`) below the basis."""
        req = self._request
        assert req is not None, "fills execute an answer to a request"
        inst = next(i for i in req.instruments if i.id == instrument)
        selling_bps = inst.half_spread_bps + req.policy.commission_bps
        return is_wash_sale_loss(inst.price, cost_basis, selling_bps)

    def execute(self, t: int, response: AnalyzeResponse, kind: str) -> None:
        """Settle a rebalance answer: sells first, then buys (buys capped by the cash)."""
        for tr in sorted(response.trades, key=lambda x: str(x.side) != "sell"):
            self._fill(t, tr, kind)

    # ------------------------------------------------------------------ one day
    def _withdraw(self, t: int, amount: float) -> None:
        shortfall = amount - float(self.account.cash)
        if shortfall > 0 and self.account.lots:
            raise_cash = shortfall * 1.01 + 1.0
            nav, _ = self.valuation(t)
            pol = default_policy().model_copy(
                update={
                    "raise_cash": raise_cash,
                    "min_net_benefit": 0.0,
                    # sell what the withdrawal needs, not a harvest on the side
                    "max_turnover": min(1.0, 1.1 * raise_cash / nav + 1e-3),
                }
            )
            try:
                _, resp = self.ask(t, pol)
                self.execute(t, resp, "liquidity")
            except RebalancerError as exc:
                self._decision(t, "liquidity", None, None, None, error=exc.code)
        take = min(Decimal(repr(amount)), self.account.cash).quantize(Decimal("0.01"), ROUND_DOWN)
        self.account.cash -= max(take, Decimal(0))

    def _decision(
        self,
        t: int,
        reason: str,
        trig: Trigger | None,
        resp: AnalyzeResponse | None,
        best: float | None,
        *,
        error: str | None = None,
        ms: float = 0.0,
    ) -> None:
        row = decision_row(self.h.dates[t], reason, trig, resp, best, error=error, ms=ms)
        self.out.decisions.append({**self._tags, **row})

    def step(self, t: int, previous: date | None) -> None:
        """Flows, trigger, execution and snapshot of trading day ``t``."""
        day = self.h.dates[t]
        flow = self.flows.get(day, 0.0)
        if flow > 0:
            self.account.cash += _dec(flow, Decimal("0.01"))
        elif flow < 0:
            self._withdraw(t, -flow)
        trig = None
        if self.policy.kind != "never":
            nav, w_vec, w_cash = self.vector_valuation(t)
            active = np.append(w_vec - self._t_vec, w_cash - self._t_cash)
            target = np.append(self._t_vec, self._t_cash)
            if nav > 0 and self.policy.may_fire(active, target):
                weights = self.valuation(t)[1] if self.policy.needs_weights else {}
                state = DayState(
                    day, previous, day in self.decision_days, weights, self.targets,
                    self.instruments,
                )  # fmt: skip
                trig = self.policy.decide(state)
        if trig is not None:
            t0 = time.perf_counter()
            try:
                req, resp = self.ask(t, trig.policy)
                best = self.best_objective(req, resp) if trig.grade else None
                ms = (time.perf_counter() - t0) * 1e3
                self._decision(t, trig.reason, trig, resp, best, ms=ms)
                if resp.decision == Decision.REBALANCE:
                    self.execute(t, resp, "rebalance")
            except RebalancerError as exc:
                self._decision(t, trig.reason, trig, None, None, error=exc.code)
        self.snapshot(t, flow)

    def snapshot(self, t: int, flow: float) -> None:
        """Append the end-of-day row of day ``t`` (vectorised over the instruments)."""
        nav, w_vec, w_cash = self.vector_valuation(t)
        active = w_vec - self._t_vec
        active_cash = w_cash - self._t_cash
        abs_active = np.abs(active)
        nxt = t + 1 < len(self.h.dates)
        if nxt:
            ret_next = self.h.close[t + 1] / self.h.close[t] - 1.0
            active_next: float | None = float(active @ ret_next)
            target_next: float | None = float(self._t_vec @ ret_next)
        else:
            active_next = target_next = None
        self.out.daily.append(
            {
                **self._tags,
                "date": self.h.dates[t],
                "nav": nav,
                "cash": float(self.account.cash),
                "flow": flow,
                "drift": float(abs_active.sum() + abs(active_cash)) / 2.0,
                "max_drift": max(float(abs_active.max(initial=0.0)), abs(active_cash)),
                "active_return_next": active_next,
                "target_return_next": target_next,
            }
        )

    def lot_rows(self, t: int) -> list[Row]:
        """The open lots valued at the close of day ``t`` (for the liquidation tax)."""
        prices, day = self._prices(t), self.h.dates[t]
        return [
            {
                **self._tags,
                "date": day,
                "lot_id": lot.lot_id,
                "instrument": lot.instrument,
                "acquired": lot.acquired,
                "quantity": float(lot.quantity),
                "cost_basis": float(lot.cost_basis),
                "price": prices[lot.instrument],
                "taxable": self.account.tax_type == "taxable",
            }
            for lot in self.account.lots
        ]


def replay_account(
    account: Account,
    models: Mapping[str, ModelPortfolio],
    instruments: Mapping[str, Instrument],
    history: MarketHistory,
    policy: RebalancePolicy,
    recommender: Recommender,
    *,
    t_start: int,
    t_end: int,
    flows: Mapping[date, float] | None = None,
    decision_days: frozenset[date] = frozenset(),
) -> AccountResult:
    """Replay ``account`` under ``policy`` over trading days ``t_start`` .. ``t_end``."""
    r = AccountReplay(
        account, models, instruments, history, policy, recommender, flows or {}, decision_days
    )
    r.out.start_lots = r.lot_rows(t_start)
    previous: date | None = None
    for t in range(t_start, t_end + 1):
        r.step(t, previous)
        previous = history.dates[t]
    r.out.final_lots = r.lot_rows(t_end)
    return r.out
