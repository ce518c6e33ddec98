"""A book of accounts as matrices: current weights from holdings and prices, drift for all of
them in one :func:`~rebalancer.domain.drift.book_drift` call, and a vectorised screen of drift
bands that tells which accounts need a detailed (per-key) evaluation.

Shapes: ``m`` accounts (rows) by ``n`` columns = instruments in sorted order followed by
:data:`~rebalancer.domain.model.CASH`. Weights are fractions of NAV; quantities are shares; prices
currency per share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rebalancer.domain.drift import (
    CASH_GROUP,
    BookDrift,
    FloatArray,
    RiskModel,
    book_drift,
    group_matrix,
)
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import CASH, Account, Instrument
from rebalancer.domain.triggers import Band

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class BookLayout:
    """Holdings and targets of ``m`` accounts over ``n`` columns (instruments, then cash)."""

    account_ids: tuple[str, ...]
    columns: tuple[str, ...]
    quantities: FloatArray
    """(m, n) shares held; the cash column is 0."""
    cash: FloatArray
    """(m,) cash in account currency."""
    targets: FloatArray
    """(m, n) target weights, cash included (rows sum to 1)."""

    @property
    def cash_col(self) -> int:
        """Index of the cash column (the last one)."""
        return len(self.columns) - 1


def build_layout(
    ids: Sequence[str],
    holdings: Sequence[Mapping[str, float]],
    cash: Sequence[float],
    targets: Sequence[Mapping[str, float]],
) -> BookLayout:
    """Matrices from per-account holdings (shares per instrument) and targets (with cash)."""
    if not (len(ids) == len(holdings) == len(cash) == len(targets)):
        raise InvalidInput("one holdings, cash and targets entry per account", ["accounts"])
    insts = sorted({k for h in holdings for k in h} | {k for t in targets for k in t} - {CASH})
    cols = (*insts, CASH)
    pos = {c: j for j, c in enumerate(cols)}
    m, n = len(ids), len(cols)
    Q = np.zeros((m, n))
    T = np.zeros((m, n))
    for i, (h, t) in enumerate(zip(holdings, targets, strict=True)):
        for k, q in h.items():
            Q[i, pos[k]] = q
        for k, w in t.items():
            T[i, pos[k]] = w
    return BookLayout(tuple(ids), cols, Q, np.asarray(cash, dtype=np.float64), T)


def layout_of_accounts(
    accounts: Sequence[Account], targets: Sequence[Mapping[str, float]]
) -> BookLayout:
    """:func:`build_layout` from domain accounts and their blended targets."""
    return build_layout(
        [a.id for a in accounts],
        [{k: float(q) for k, q in a.quantities().items()} for a in accounts],
        [float(a.cash) for a in accounts],
        targets,
    )


def weights_matrix(layout: BookLayout, prices: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Current weights (m, n) and NAV (m,) from prices (n,) in column order (cash price unused).

    An account with NAV <= 0 is all cash (weight 1 on the cash column), as in
    :meth:`~rebalancer.domain.model.Account.weights`.
    """
    p = np.asarray(prices, dtype=np.float64).copy()
    if p.shape != (len(layout.columns),):
        raise InvalidInput(f"need {len(layout.columns)} prices in column order", ["prices"])
    p[layout.cash_col] = 0.0
    values = layout.quantities * p
    nav = values.sum(axis=1) + layout.cash
    values[:, layout.cash_col] = layout.cash
    ok = nav > 0
    W = np.zeros_like(values)
    W[ok] = values[ok] / nav[ok, None]
    W[~ok, layout.cash_col] = 1.0
    return W, nav


def level_groups(
    columns: Sequence[str], instruments: Mapping[str, Instrument]
) -> dict[str, tuple[tuple[str, ...], FloatArray]]:
    """Group matrices for the ``sector`` and ``asset_class`` levels (cash in group ``cash``)."""
    out = {}
    for lvl in ("sector", "asset_class"):
        labels = [CASH_GROUP if c == CASH else getattr(instruments[c], lvl) for c in columns]
        out[lvl] = group_matrix(labels)
    return out


def evaluate_book_drift(
    layout: BookLayout,
    prices: FloatArray,
    instruments: Mapping[str, Instrument],
    risk_model: RiskModel | None = None,
) -> tuple[BookDrift, FloatArray, FloatArray]:
    """Drift of every account at the instrument, sector and asset-class levels (and tracking
    error with a risk model) in one pass; returns ``(drift, weights, nav)``."""
    W, nav = weights_matrix(layout, prices)
    book = book_drift(
        W,
        layout.targets,
        layout.columns,
        groups=level_groups(layout.columns, instruments),
        risk_model=risk_model,
    )
    return book, W, nav


# --------------------------------------------------------------------------- band screen
@dataclass(frozen=True)
class BandScreen:
    """Per band (rows) and account (columns): the largest drift the band looks at and whether
    the band is breached, computed for the whole book at once."""

    bands: tuple[Band, ...]
    value: FloatArray
    """(b, m): largest |absolute drift| (level bands) or the metric (account bands)."""
    breached: BoolArray
    """(b, m): the band fires (same rule as :func:`~rebalancer.domain.triggers.evaluate_bands`)."""


def screen_bands(
    book: BookDrift,
    targets: FloatArray,
    bands: Sequence[Band],
    groups: Mapping[str, tuple[tuple[str, ...], FloatArray]],
) -> BandScreen:
    """Evaluate ``bands`` for every account of ``book`` without a loop over accounts.

    Bands on the ``sleeve`` level cannot be screened from the book; they are reported as
    breached so that the caller evaluates them in detail.
    """
    m = book.active.shape[0]
    T = np.broadcast_to(np.asarray(targets, dtype=np.float64), book.active.shape)
    value = np.zeros((len(bands), m))
    breached = np.zeros((len(bands), m), dtype=bool)
    cache: dict[str, tuple[tuple[str, ...], FloatArray, FloatArray]] = {}
    for b_i, b in enumerate(bands):
        if b.level == "account":
            metric = (
                book.tracking_error
                if b.metric == "tracking_error"
                else getattr(book, b.metric, None)
            )
            if metric is None:
                continue
            value[b_i] = metric
            if b.absolute is not None:
                breached[b_i] = metric >= b.absolute
            continue
        if b.level == "sleeve":
            breached[b_i] = True
            continue
        if b.level not in cache:
            if b.level == "instrument":
                cache[b.level] = (book.instruments, book.active, T)
            else:
                labels, G = groups[b.level]
                cache[b.level] = (labels, book.levels[b.level].active, T @ G)
        labels, A, TL = cache[b.level]
        if b.key is not None:
            if b.key not in labels:
                continue
            j = labels.index(b.key)
            A, TL = A[:, j : j + 1], TL[:, j : j + 1]
        absA = np.abs(A)
        value[b_i] = absA.max(axis=1) if absA.shape[1] else 0.0
        hit = np.zeros(m, dtype=bool)
        if b.absolute is not None:
            hit |= (absA >= b.absolute).any(axis=1)
        if b.relative is not None:
            ok = (TL > 0) & (b.min_target <= TL)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(ok, absA / np.where(ok, TL, 1.0), 0.0)
            hit |= (ok & (rel >= b.relative)).any(axis=1)
        breached[b_i] = hit
    return BandScreen(tuple(bands), value, breached)


def value_paths(closes: FloatArray, layout: BookLayout) -> FloatArray:
    """Value of each account's *current* holdings along the price history.

    ``closes`` has shape (t, n) in column order (the cash column is ignored); returns (t, m):
    ``closes @ quantities' + cash``.
    """
    C = np.asarray(closes, dtype=np.float64).copy()
    C[:, layout.cash_col] = 0.0
    out: FloatArray = C @ layout.quantities.T + layout.cash[None, :]
    return out
