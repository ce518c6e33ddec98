"""The household recommender: solve all accounts at once, settle cross-account wash sales,
round and re-check per account, render one approvable answer per account."""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from typing import cast

import numpy as np

from rebalancer.domain.errors import InfeasibleRebalance, ValidationFailed
from rebalancer.optimizer.data import BIG, ProblemData
from rebalancer.optimizer.engine import DEFAULT_CHAIN, Recommender
from rebalancer.optimizer.enums import Decision, SolverName, SolveStatus
from rebalancer.optimizer.household import wash
from rebalancer.optimizer.household.data import AccountPart, HouseholdData, build_household
from rebalancer.optimizer.household.data import check_household as check_household
from rebalancer.optimizer.household.problem import HouseholdProblem, HouseholdTrade, structure_key
from rebalancer.optimizer.household.report import (
    breakdown,
    drift,
    household_te_check,
    location,
    objective,
    parts,
    x_after,
    zero_trade,
)
from rebalancer.optimizer.household.schemas import (
    AccountAnswer,
    HouseholdRequest,
    HouseholdResponse,
    HouseholdSolver,
    TransferOut,
    WashSaleReport,
)
from rebalancer.optimizer.household.terms import AccountTerms
from rebalancer.optimizer.problem import CompiledProblem, SolveResult
from rebalancer.optimizer.report import Outcome, build_response
from rebalancer.optimizer.rounding import Shares, repair, round_shares
from rebalancer.optimizer.terms.base import Check, TradeVec
from rebalancer.optimizer.terms.constraints import AdvCap, CashFloor, Turnover
from rebalancer.optimizer.terms.risk import StressLimit, TrackingErrorLimit, VarLimit

_ROUNDS = 5
_WASH_TOL = 1e-7
_OBJ_RTOL, _OBJ_ATOL = 1e-3, 1e-7
_TRADING = (AdvCap, Turnover, CashFloor)
_RISK = (TrackingErrorLimit, VarLimit, StressLimit)


class _AccountView:
    """What :func:`rebalancer.optimizer.report.build_response` needs of a compiled problem:
    the account's terms in NumPy, with the cash floor checked after net transfers."""

    def __init__(self, terms: AccountTerms, funded: ProblemData) -> None:
        self.terms = terms
        self.funded = funded

    def parts(self, data: ProblemData, t: TradeVec) -> dict[str, float]:
        return self.terms.parts(data, t)

    def checks(self, data: ProblemData, t: TradeVec, only: tuple[type, ...] = ()) -> list[Check]:
        return self.terms.checks(self.funded, t, only)


_Solved = tuple[HouseholdTrade, int, float, SolverName, SolveStatus, list[str]]
"""Answer, solves, solve time (ms), solver, status and wash-settled groups."""


def _round_all(
    hh: HouseholdData, prob: HouseholdProblem, funded: list[ProblemData], ht: HouseholdTrade
) -> list[Shares]:
    """Round every account's trade to shares, then repair per account what rounding broke:
    its trading limits (after transfers), its risk limits and the household tracking-error
    limit (evaluated with the other accounts' current trades)."""
    current = list(ht.trades)
    shares: list[Shares] = []
    for n, (terms, f, t) in enumerate(zip(prob.accounts, funded, ht.trades, strict=True)):

        def trading(x: TradeVec, terms: AccountTerms = terms, f: ProblemData = f) -> list[Check]:
            return terms.checks(f, x, _TRADING)

        def risk(
            x: TradeVec, terms: AccountTerms = terms, f: ProblemData = f, n: int = n
        ) -> list[Check]:
            out = terms.checks(f, x, _RISK)
            if hh.te_limit is not None:
                out.append(household_te_check(hh, [*current[:n], x, *current[n + 1 :]]))
            return out

        s = repair(f, round_shares(f, t, f.min_trade_value), t, trading, risk)
        current[n] = s.trade(hh.accounts[n].data)
        shares.append(s)
    return shares


def _funded(a: AccountPart, net_in: float, hh_nav: float) -> ProblemData:
    """The account's data with the net transfer added to its cash (currency)."""
    return dataclasses.replace(a.data, cash=a.data.cash + net_in * hh_nav)


class HouseholdRecommender:
    """Holds compiled household problems keyed by structure (reuse one per worker).

    Parameters
    ----------
    solvers
        Conic solvers tried in order (CLARABEL, SCS); the heuristic is not used here.
    cache_size
        Most compiled structures kept.
    """

    def __init__(self, solvers: tuple[SolverName, ...] = DEFAULT_CHAIN, cache_size: int = 8):
        self.solvers = tuple(s for s in solvers if s in (SolverName.CLARABEL, SolverName.SCS))
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[object, ...], HouseholdProblem] = OrderedDict()

    def problem_for(self, hh: HouseholdData) -> tuple[HouseholdProblem, bool]:
        key = structure_key(hh)
        prob = self._cache.get(key)
        if prob is not None:
            self._cache.move_to_end(key)
            return prob, prob.compiled
        prob = HouseholdProblem(hh)
        self._cache[key] = prob
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return prob, False

    # ------------------------------------------------------------------ solving
    def _solve(self, hh: HouseholdData, prob: HouseholdProblem) -> _Solved:
        settled: list[str] = []
        solves, ms = 0, 0.0
        ht: HouseholdTrade | None = None
        status, name = SolveStatus.FAILED, SolverName.CLARABEL
        for rounds in range(_ROUNDS + 1):
            prob.update(hh)
            status, name, ht, took = prob.solve(self.solvers)
            solves, ms = solves + 1, ms + took
            if ht is None:
                break
            self._clip(hh, ht)
            found = wash.conflicts(hh, ht.trades, _WASH_TOL)
            if not found:
                break
            settled += [g for g in found if g not in settled]
            if rounds == _ROUNDS - 1:
                wash.fix_directions(hh, ht.trades)
            else:
                wash.lock_sides(hh, ht.trades, _WASH_TOL)
                wash.settle(hh, found, last=rounds == _ROUNDS - 2)
        if ht is None:
            if status is SolveStatus.INFEASIBLE:
                raise self._infeasible(hh)
            raise ValidationFailed(f"every solver failed on the household ({status})", [])
        self._check_objective(hh, prob, ht)
        return ht, solves, ms, name, status, settled

    @staticmethod
    def _clip(hh: HouseholdData, ht: HouseholdTrade) -> None:
        for a, t in zip(hh.accounts, ht.trades, strict=True):
            t.buy = np.minimum(t.buy, a.data.buy_ub)
            t.lot_sell = np.minimum(t.lot_sell, a.data.lot_ub)
        ht.transfers = np.minimum(ht.transfers, hh.link_cap)

    @staticmethod
    def _check_objective(hh: HouseholdData, prob: HouseholdProblem, ht: HouseholdTrade) -> None:
        """The solver's value (plus the constant location of current holdings) must match the
        NumPy recomputation of its own answer."""
        theirs = prob.value
        theirs += sum(a.share * hh.horizon * float(a.drag @ a.data.w) for a in hh.accounts)
        mine = objective(hh, ht)
        if abs(mine - theirs) > _OBJ_ATOL + _OBJ_RTOL * abs(theirs):
            raise ValidationFailed(
                f"the household solver's objective {theirs:.8g} disagrees with the NumPy "
                f"recomputation {mine:.8g}",
                [],
            )

    @staticmethod
    def _infeasible(hh: HouseholdData) -> InfeasibleRebalance:
        """Name the account whose own limits conflict (the single-account diagnosis)."""
        single = Recommender()
        for n, a in enumerate(hh.accounts):
            try:
                single.relaxed_objective(a.request)
            except InfeasibleRebalance as exc:
                return InfeasibleRebalance(
                    f"account {a.id}: {exc.detail}",
                    [f"accounts[{n}].request.{f}" for f in exc.fields],
                )
        limited = [
            f"accounts[{n}].request.policy.{f}"
            for n, a in enumerate(hh.accounts)
            for f, on in (
                ("max_tracking_error", a.data.te_limit < BIG),
                ("max_var", a.data.var_limit < BIG),
                ("stress_scenarios", a.data.stress_returns.shape[0] > 0),
            )
            if on
        ]
        if hh.te_limit is not None:
            limited.append("policy.max_tracking_error")
        return InfeasibleRebalance(
            "the household limits cannot all hold: every account is feasible alone, so the "
            "cross-account wash-sale rule, the transfer limits or a risk limit (reachable only "
            "within each account's turnover and cash, after the rounding margin) leave no "
            "answer; loosen one of the fields named",
            ["recent_loss_sales", "links", *limited],
        )

    def relaxed(self, req: HouseholdRequest) -> tuple[float, HouseholdData, HouseholdTrade]:
        """Optimal continuous household objective (fraction of household NAV) with its data
        and answer, before rounding; raises like :meth:`analyze`."""
        check_household(req)
        hh = build_household(req)
        prob, _ = self.problem_for(hh)
        ht = self._solve(hh, prob)[0]
        return objective(hh, ht), hh, ht

    # ------------------------------------------------------------------ answer
    def analyze(self, req: HouseholdRequest) -> HouseholdResponse:
        """Recommend trades for every account of a household at once.

        Raises
        ------
        InvalidInput
            A household or account rule is broken (``fields`` names it).
        InfeasibleRebalance
            The limits conflict; ``fields`` names them (prefixed by the account).
        ValidationFailed
            The independent NumPy re-check of the rounded answer failed.
        """
        start = time.perf_counter()
        check_household(req)
        hh = build_household(req)
        prob, hit = self.problem_for(hh)
        ht, solves, ms, name, status, settled = self._solve(hh, prob)
        net_in = ht.net_in(hh)
        funded = [_funded(a, float(net_in[n]), hh.nav) for n, a in enumerate(hh.accounts)]
        shares = _round_all(hh, prob, funded, ht)
        final = HouseholdTrade(
            [s.trade(a.data) for s, a in zip(shares, hh.accounts, strict=True)], ht.transfers
        )
        self._recheck(hh, prob, funded, final)
        zero = zero_trade(hh)
        p0, p1 = parts(hh, zero), parts(hh, final)
        benefit = (sum(p0.values()) - sum(p1.values())) * hh.nav
        traded = any((s.buy > 0).any() or (s.lot > 0).any() for s in shares)
        messages: list[str] = []
        decision = Decision.REBALANCE
        if not traded or benefit <= hh.min_net_benefit:
            if traded:
                messages.append(
                    f"household net benefit {benefit:,.2f} is at or below "
                    f"policy.min_net_benefit {hh.min_net_benefit:,.2f}"
                )
            decision = Decision.NO_TRADE
            shares = [Shares(np.zeros_like(s.buy), np.zeros_like(s.lot)) for s in shares]
            final, p1 = zero, p0
            net_in = np.zeros(len(hh.accounts))
            funded = [_funded(a, 0.0, hh.nav) for a in hh.accounts]
        else:
            net_in = final.net_in(hh)
        total_ms = (time.perf_counter() - start) * 1e3
        result = SolveResult(status, name, None, 0, ms, None, [])
        answers = []
        for n, a in enumerate(hh.accounts):
            s = shares[n]
            acct_traded = bool((s.buy > 0).any() or (s.lot > 0).any())
            outcome = Outcome(
                Decision.REBALANCE if acct_traded else Decision.NO_TRADE,
                s,
                result,
                solves,
                hit,
                total_ms,
                [f"part of a household rebalance of {len(hh.accounts)} accounts"],
            )
            view = cast(CompiledProblem, _AccountView(prob.accounts[n], funded[n]))
            resp = build_response(a.request, a.data, view, outcome)
            transfer = float(net_in[n]) * hh.nav
            resp = resp.model_copy(update={"cash_after": resp.cash_after + transfer})
            answers.append(
                AccountAnswer(
                    account_id=a.id,
                    tax_type=a.tax_type,
                    nav=a.data.nav,
                    transfer_in=transfer,
                    analysis=resp,
                )
            )
        return HouseholdResponse(
            decision=decision,
            nav=hh.nav,
            accounts=answers,
            transfers=[
                TransferOut(
                    from_account=hh.accounts[src].id,
                    to_account=hh.accounts[dst].id,
                    amount=float(amt) * hh.nav,
                )
                for (src, dst), amt in zip(hh.links, final.transfers, strict=True)
                if amt > 0
            ],
            objective=breakdown(hh, p1),
            objective_before=breakdown(hh, p0),
            net_benefit=(sum(p0.values()) - sum(p1.values())) * hh.nav,
            drift_before=drift(hh, hh.x_before()),
            drift_after=drift(hh, x_after(hh, final.trades)),
            location_before=location(hh, zero.trades),
            location_after=location(hh, final.trades),
            wash_sale=WashSaleReport(
                blocked_loss_lots=hh.blocked_lots,
                blocked_buys=hh.blocked_buys,
                settled_groups=settled,
            ),
            solver=HouseholdSolver(
                name=name,
                status=status,
                solves=solves,
                solve_time_ms=ms,
                total_time_ms=total_ms,
                compiled_cache_hit=hit,
            ),
            messages=messages,
        )

    @staticmethod
    def _recheck(
        hh: HouseholdData, prob: HouseholdProblem, funded: list[ProblemData], ht: HouseholdTrade
    ) -> None:
        """Every per-account constraint and the household wash-sale rule, in NumPy, on the
        rounded answer; a violation is an error, never a silent answer."""
        bad: list[tuple[str, Check]] = []
        for a, terms, f, t in zip(hh.accounts, prob.accounts, funded, ht.trades, strict=True):
            bad += [(a.id, c) for c in terms.checks(f, t) if not c.holds()]
        bad += [("household", c) for c in wash.check(hh, ht.trades) if not c.holds()]
        if hh.te_limit is not None:
            c = household_te_check(hh, ht.trades)
            bad += [("household", c)] if not c.holds() else []
        if (ht.transfers > hh.link_cap * (1 + 1e-9) + 1e-12).any():
            raise ValidationFailed("a transfer exceeds its link's max_amount", ["links"])
        if bad:
            who, c = bad[0]
            raise ValidationFailed(
                f"the rounded answer of {who} breaks {c.name.value}"
                f"{' of ' + c.subject if c.subject else ''}: value {c.value:.6g}, "
                f"limit {c.limit:.6g}",
                list(c.fields),
            )
