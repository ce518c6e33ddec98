"""Run a backtest: the sample book on real S&P 500 history, every policy, every account.

Work items are (policy, account) pairs; they are independent, so they run in ``workers``
forked processes, each with its own :class:`~rebalancer.optimizer.Recommender` (compiled
problems are cached per process). The logs are gathered into Polars frames.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl

from rebalancer.backtest.engine import replay_account
from rebalancer.backtest.logs import AccountResult
from rebalancer.backtest.market import MarketHistory, history_from_feed
from rebalancer.backtest.metrics import policy_metrics
from rebalancer.backtest.policies import DEFAULT_POLICIES, RebalancePolicy, parse_policy
from rebalancer.backtest.tax import TaxRates
from rebalancer.domain.calendar import Frequency, period_bounds
from rebalancer.domain.model import Account, Instrument, ModelPortfolio
from rebalancer.optimizer import DEFAULT_CHAIN, FAST_CHAIN, Recommender, SolverName
from rebalancer.sample_book import build_sample_book

FRONTIER_BANDS = (0.025, 0.10)
"""Extra absolute band widths (fractions of NAV) run for the cost-vs-drift frontier."""


@dataclass(frozen=True)
class BacktestConfig:
    """What to replay.

    Attributes
    ----------
    start, end
        Period (inside 1990-01-02 .. 2022-12-28 for real closes).
    accounts
        Accounts of the sample book (the first ``accounts`` of ``build_sample_book``).
    policies
        Policy specs (see :mod:`rebalancer.backtest.policies`); ``never`` is always added: it
        is the shadow portfolio of the tax alpha.
    frontier_bands
        Extra absolute band widths for the frontier chart.
    decision_frequency
        How often ``optimizer`` policies decide (weekly: first trading day of each week).
    deposit_rate, withdrawal_rate
        Monthly deposit / quarterly withdrawal as a fraction of the starting NAV, for one third
        of the accounts each (the last third has no flows).
    workers
        Processes (1: run in this process).
    seed
        Seed of the sample book and of the simulated bond prices.
    fast
        Solve with the optimizer's JAX fast path first (``FAST_CHAIN``; the conic solvers
        remain the fallback). Off by default: its one-off compile per problem size costs more
        than it saves in a short run.
    """

    start: date = date(2020, 1, 2)
    end: date = date(2020, 12, 31)
    accounts: int = 4
    policies: tuple[str, ...] = DEFAULT_POLICIES
    frontier_bands: tuple[float, ...] = FRONTIER_BANDS
    decision_frequency: Frequency = Frequency.WEEKLY
    deposit_rate: float = 0.01
    withdrawal_rate: float = 0.03
    workers: int = 2
    seed: int = 7
    fast: bool = False
    rates: TaxRates = field(default_factory=TaxRates)

    def policy_specs(self) -> list[str]:
        """Policies to run, ``never`` first, frontier bands added, no duplicates."""
        specs = ["never", *self.policies]
        specs += [f"band-abs-{w * 100:g}" for w in self.frontier_bands]
        return list(dict.fromkeys(parse_policy(s).name for s in specs))


@dataclass
class BacktestResult:
    """Logs (``daily``, ``trades``, ``realized``, ``decisions``, ``start_lots``, ``final_lots``)
    and the per-policy ``metrics``."""

    config: BacktestConfig
    frames: dict[str, pl.DataFrame]
    metrics: pl.DataFrame
    replayed: list[str]
    simulated: list[str]


def first_days(dates: Sequence[date], frequency: Frequency) -> frozenset[date]:
    """Trading dates that open a new period (the first date itself excluded)."""
    return frozenset(
        d
        for prev, d in itertools.pairwise(dates)
        if period_bounds(frequency, d) != period_bounds(frequency, prev)
    )


def cash_flows(
    accounts: Sequence[Account],
    prices: Mapping[str, float],
    dates: Sequence[date],
    deposit_rate: float,
    withdrawal_rate: float,
) -> dict[str, dict[date, float]]:
    """Account id -> {date: amount}: monthly deposits, quarterly withdrawals, or none."""
    months = sorted(first_days(dates, Frequency.MONTHLY))
    quarters = sorted(first_days(dates, Frequency.QUARTERLY))
    out: dict[str, dict[date, float]] = {}
    for a in accounts:
        nav = a.nav(prices)
        kind = zlib.crc32(a.id.encode()) % 3
        if kind == 0:
            out[a.id] = {d: round(deposit_rate * nav, 2) for d in months}
        elif kind == 1:
            out[a.id] = {d: -round(withdrawal_rate * nav, 2) for d in quarters}
        else:
            out[a.id] = {}
    return out


@dataclass
class _Job:
    accounts: dict[str, Account]
    models: dict[str, ModelPortfolio]
    instruments: dict[str, Instrument]
    history: MarketHistory
    policies: dict[str, RebalancePolicy]
    flows: dict[str, dict[date, float]]
    decision_days: frozenset[date]
    t_start: int
    t_end: int
    solvers: tuple[SolverName, ...] = DEFAULT_CHAIN


_JOB: _Job | None = None
_REC: Recommender | None = None


def _run_item(account: str, policies: tuple[str, ...]) -> list[AccountResult]:
    """Some policies of one account in one process (they share compiled problems: the shapes
    of one account's requests repeat across policies)."""
    global _REC
    job = _JOB
    assert job is not None, "the job is set before the pool starts"
    if _REC is None or _REC.solvers != job.solvers:
        _REC = Recommender(solvers=job.solvers, cache_size=512)
    return [
        replay_account(
            job.accounts[account],
            job.models,
            job.instruments,
            job.history,
            job.policies[name],
            _REC,
            t_start=job.t_start,
            t_end=job.t_end,
            flows=job.flows[account],
            decision_days=job.decision_days,
        )
        for name in policies
    ]


def work_items(job: _Job) -> list[tuple[str, tuple[str, ...]]]:
    """(account, policies) pairs, the expensive first: each account's ``optimizer`` policies
    (weekly decisions, each graded by a second solve) apart from its cheap trigger rules, so
    that the processes finish together."""
    heavy = tuple(n for n, p in job.policies.items() if p.kind == "optimizer")
    light = tuple(n for n in job.policies if n not in heavy)
    items = [(a, heavy) for a in job.accounts if heavy]
    return items + [(a, light) for a in job.accounts if light]


def prepare(cfg: BacktestConfig) -> _Job:
    """The book, market history, flows and decision dates of ``cfg``."""
    book = build_sample_book(seed=cfg.seed, n_accounts=cfg.accounts, start_date=cfg.start)
    history = history_from_feed(
        list(book.instruments), cfg.start, cfg.end, seed=cfg.seed, simulated=book.simulated
    )
    t0 = history.index_on_or_after(cfg.start)
    dates = history.dates[t0:]
    return _Job(
        {a.id: a for a in book.accounts},
        dict(book.models),
        dict(book.instruments),
        history,
        {s: parse_policy(s) for s in cfg.policy_specs()},
        cash_flows(book.accounts, history.prices(t0), dates, cfg.deposit_rate, cfg.withdrawal_rate),
        first_days(dates, cfg.decision_frequency),
        t0,
        len(history.dates) - 1,
        FAST_CHAIN if cfg.fast else DEFAULT_CHAIN,
    )


def _frames(results: Sequence[AccountResult]) -> dict[str, pl.DataFrame]:
    names = ("daily", "trades", "realized", "decisions", "start_lots", "final_lots")
    out: dict[str, pl.DataFrame] = {}
    for name in names:
        rows: list[dict[str, Any]] = [r for res in results for r in getattr(res, name)]
        out[name] = pl.DataFrame(rows, infer_schema_length=None) if rows else _EMPTY[name]()
    return out


def _empty_trades() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "policy": pl.Utf8, "account": pl.Utf8, "date": pl.Date, "fill_id": pl.Utf8,
            "instrument": pl.Utf8, "group": pl.Utf8, "side": pl.Utf8, "kind": pl.Utf8,
            "quantity": pl.Float64, "price": pl.Float64, "value": pl.Float64, "cost": pl.Float64,
        }
    )  # fmt: skip


def _empty_realized() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "policy": pl.Utf8, "account": pl.Utf8, "date": pl.Date, "fill_id": pl.Utf8,
            "lot_id": pl.Utf8, "instrument": pl.Utf8, "group": pl.Utf8, "acquired": pl.Date,
            "quantity": pl.Float64, "gain": pl.Float64, "term": pl.Utf8, "taxable": pl.Boolean,
            "wash_sale_loss": pl.Boolean,
        }
    )  # fmt: skip


def _empty_lots() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "policy": pl.Utf8, "account": pl.Utf8, "date": pl.Date, "lot_id": pl.Utf8,
            "instrument": pl.Utf8, "acquired": pl.Date, "quantity": pl.Float64,
            "cost_basis": pl.Float64, "price": pl.Float64, "taxable": pl.Boolean,
        }
    )  # fmt: skip


def _empty_decisions() -> pl.DataFrame:
    f = pl.Float64
    return pl.DataFrame(
        schema={
            "policy": pl.Utf8, "account": pl.Utf8, "date": pl.Date, "reason": pl.Utf8,
            "graded": pl.Boolean, "decision": pl.Utf8, "error": pl.Utf8, "nav": f,
            "objective_before": f, "objective": f, "best_objective": f, "net_benefit": f,
            "min_net_benefit": f, "drift_before": f, "drift_after": f, "trades": pl.Int64,
            "solve_ms": f,
        }
    )  # fmt: skip


_EMPTY: dict[str, Callable[[], pl.DataFrame]] = {
    "trades": _empty_trades,
    "realized": _empty_realized,
    "decisions": _empty_decisions,
    "start_lots": _empty_lots,
    "final_lots": _empty_lots,
    "daily": lambda: pl.DataFrame(),
}


def run_job(
    job: _Job,
    cfg: BacktestConfig,
    progress: Callable[[str], None] | None = None,
) -> BacktestResult:
    """Replay every (policy, account) of ``job`` and compute the metrics.

    ``progress(label)`` is called as each work item finishes with ``"<account> optimizer"``
    or ``"<account> trigger rules"`` (see :func:`work_items`; ``len(work_items(job))`` calls).
    """
    global _JOB
    _JOB = job
    results: dict[tuple[str, str], AccountResult] = {}
    items = work_items(job)

    def done(item: tuple[str, tuple[str, ...]], out: list[AccountResult]) -> None:
        for name, res in zip(item[1], out, strict=True):
            results[(item[0], name)] = res
        if progress:
            heavy = all(job.policies[n].kind == "optimizer" for n in item[1])
            progress(f"{item[0]} {'optimizer' if heavy else 'trigger rules'}")

    if cfg.workers <= 1:
        for item in items:
            done(item, _run_item(*item))
    else:
        ctx = mp.get_context("fork")
        with ProcessPoolExecutor(cfg.workers, mp_context=ctx) as pool:
            futs = {pool.submit(_run_item, *item): item for item in items}
            for fut in as_completed(futs):
                done(futs[fut], fut.result())
    ordered = [results[(a, name)] for name in job.policies for a in job.accounts]
    frames = _frames(ordered)
    metrics = policy_metrics(frames, cfg.rates)
    h = job.history
    return BacktestResult(cfg, frames, metrics, sorted(h.replayed), sorted(set(h.ids) - h.replayed))


def run_backtest(
    cfg: BacktestConfig, progress: Callable[[str], None] | None = None
) -> BacktestResult:
    """Prepare and run ``cfg`` (see :class:`BacktestConfig`)."""
    return run_job(prepare(cfg), cfg, progress)
