"""Cross-field checks of an :class:`AnalyzeRequest` (the per-field ones live in the models).

The checks read the request's instrument and lot fields once, as columns
(:func:`request_columns`), and hand them to :func:`rebalancer.optimizer.data.build_data`.
"""

from __future__ import annotations

from collections.abc import Container, KeysView, Sequence
from dataclasses import dataclass, replace
from datetime import date
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import CASH, WEIGHT_TOLERANCE, validate_targets
from rebalancer.optimizer.memo import by_content, derived, frozen
from rebalancer.optimizer.schemas import AnalyzeRequest, CovarianceRiskModel, FactorRiskModel

_PSD_TOL = 1e-10
Arr = NDArray[np.float64]


def _finite(values: list[float] | np.ndarray, field: str) -> None:
    if not bool(np.isfinite(np.asarray(values, dtype=float)).all()):
        raise InvalidInput(f"{field} contains a value that is not a finite number", [field])


def _all_finite(*arrays: np.ndarray) -> bool:
    """Whether every number of ``arrays`` is finite, by one sum each: a NaN or an infinity
    makes its sum NaN or infinite. False may also mean only that a sum overflowed; callers
    then check value by value."""
    return bool(np.isfinite(sum(float(np.add.reduce(a, axis=None)) for a in arrays)))


def check_request(req: AnalyzeRequest) -> RequestColumns:
    """Check the rules relating several fields of ``req``.

    Returns
    -------
    RequestColumns
        The instrument and lot columns and the risk model's matrix as read for the checks
        (pass them to :func:`~rebalancer.optimizer.data.build_data` so they are not read
        again).

    Raises
    ------
    InvalidInput
        With ``fields`` naming the offending request fields, e.g. ``targets.AAPL`` or
        ``risk_model.factor_exposures``.
    """
    cols = request_columns(req)
    inst = cols.inst
    ids = inst.ids
    known = inst.row.keys()
    if len(known) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise InvalidInput(f"instruments lists {dup} more than once", ["instruments"])
    if CASH in known:
        raise InvalidInput(f'"{CASH}" is reserved for the cash target', ["instruments"])
    _check_targets(req, known)
    _check_instruments(inst)
    if cols.lot_row is None or len(set(cols.lot_id)) != len(cols.lot_id):
        _first_bad_lot(req, known)
    for n, buy in enumerate(req.recent_buys):
        if buy.instrument not in known:
            raise InvalidInput(
                f"recent buy of {buy.instrument}, which is not in instruments",
                [f"recent_buys[{n}].instrument"],
            )
    _check_policy(req, inst)
    risk = _check_risk_model(req, ids)
    return replace(cols, risk=risk)


def _check_targets(req: AnalyzeRequest, known: KeysView[str]) -> None:
    """Target weights (:func:`validate_targets`) and that each names an instrument or cash."""
    weights = req.targets.values()
    # validate_targets only when its rules may fail (it then reports the first failure):
    # weights >= 0 (False for NaN) and a sum of 1 within the tolerance, summed as it sums
    if not (
        weights
        and bool((np.fromiter(weights, float, len(weights)) >= 0.0).all())
        and abs(float(sum(weights)) - 1.0) <= WEIGHT_TOLERANCE
    ):
        validate_targets(req.targets, "targets")
    if not req.targets.keys() - known <= {CASH}:
        for key in req.targets:
            if key != CASH and key not in known:
                raise InvalidInput(
                    f"target {key} is not in instruments; add its market data", [f"targets.{key}"]
                )


def _check_instruments(inst: InstrumentColumns) -> None:
    """Market data are finite numbers and substitutes are known and not substantially
    identical; the first failure in instrument order is reported (market data first)."""
    market = (inst.price, inst.adv_shares, inst.daily_volatility)
    first_bad = -1
    if not _all_finite(*market):
        bad = np.flatnonzero(
            ~(np.isfinite(market[0]) & np.isfinite(market[1]) & np.isfinite(market[2]))
        )
        first_bad = int(bad[0]) if bad.size else -1
    row, groups = inst.row, inst.wash_sale_group
    for n, subs in enumerate(inst.substitutes):
        if not subs:
            continue
        if 0 <= first_bad <= n:
            break
        own = groups[n] or inst.ids[n]
        for sub in subs:
            if sub not in row:
                raise InvalidInput(
                    f"substitute {sub} of {inst.ids[n]} is not in instruments",
                    [f"instruments[{n}].substitutes"],
                )
            if (groups[row[sub]] or sub) == own:
                raise InvalidInput(
                    f"substitute {sub} of {inst.ids[n]} is in the same wash-sale group; a "
                    "substantially identical instrument cannot be a substitute",
                    [f"instruments[{n}].substitutes"],
                )
    if first_bad >= 0:
        _finite([m[first_bad] for m in market], f"instruments[{first_bad}]")


def _first_bad_lot(req: AnalyzeRequest, known: Container[str]) -> None:
    """Raise for the first lot of an unknown instrument or with a repeated id."""
    lot_ids: set[str] = set()
    for n, lot in enumerate(req.portfolio.lots):
        if lot.instrument not in known:
            raise InvalidInput(
                f"lot {lot.lot_id} holds {lot.instrument}, which is not in instruments",
                [f"portfolio.lots[{n}].instrument"],
            )
        if lot.lot_id in lot_ids:
            raise InvalidInput(f"lot id {lot.lot_id} is repeated", [f"portfolio.lots[{n}].lot_id"])
        lot_ids.add(lot.lot_id)


def _check_policy(req: AnalyzeRequest, columns: InstrumentColumns) -> None:
    pol = req.policy
    known = columns.row
    for name, lst in (("no_buy", pol.no_buy), ("no_sell", pol.no_sell)):
        for inst in lst:
            if inst not in known:
                raise InvalidInput(f"policy.{name} names unknown {inst}", [f"policy.{name}"])
    sectors = set(columns.sector) if pol.max_sector_risk_share else set()
    for sector, share in pol.max_sector_risk_share.items():
        if sector not in sectors:
            raise InvalidInput(
                f"no instrument is in sector {sector}", [f"policy.max_sector_risk_share.{sector}"]
            )
        if not 0.0 < share <= 1.0:
            raise InvalidInput(
                f"risk share limit of {sector} is {share}; it must be in (0, 1]",
                [f"policy.max_sector_risk_share.{sector}"],
            )
    names: set[str] = set()
    for n, sc in enumerate(pol.stress_scenarios):
        if sc.name in names:
            raise InvalidInput(
                f"stress scenario {sc.name} is repeated", [f"policy.stress_scenarios[{n}].name"]
            )
        names.add(sc.name)
        for inst in sc.returns:
            if inst not in known:
                raise InvalidInput(
                    f"stress scenario {sc.name} shocks unknown {inst}",
                    [f"policy.stress_scenarios[{n}].returns.{inst}"],
                )


def _check_risk_model(req: AnalyzeRequest, ids: list[str]) -> np.ndarray:
    """Check the risk model; returns its covariance or factor exposures as floats."""
    rm = req.risk_model
    # equal lists (the usual case) match when the ids are distinct, without sorting
    same = rm.instruments == ids and len(set(ids)) == len(ids)
    if not same and (sorted(rm.instruments) != sorted(ids) or len(set(rm.instruments)) != len(ids)):
        missing = sorted(set(ids) - set(rm.instruments))
        extra = sorted(set(rm.instruments) - set(ids))
        raise InvalidInput(
            f"risk_model.instruments must match instruments exactly; missing {missing}, "
            f"extra {extra}",
            ["risk_model.instruments"],
        )
    memo = derived(rm)
    checked = memo.get("checked")
    if checked is None:
        checked = _checked_arrays(rm, len(ids))
        frozen(checked)
        memo["checked"] = checked
    return checked


def _checked_arrays(rm: CovarianceRiskModel | FactorRiskModel, n: int) -> np.ndarray:
    """The covariance or factor exposures of ``rm`` as floats, after every check of its
    numbers (symmetry, semidefiniteness, shapes, signs)."""
    if isinstance(rm, CovarianceRiskModel):
        cov = _matrix(rm.covariance) if rm.covariance else np.zeros((0, 0))
        if cov.shape != (n, n):
            raise InvalidInput(
                f"risk_model.covariance is {cov.shape}; it must be {n} x {n}",
                ["risk_model.covariance"],
            )
        _finite(cov, "risk_model.covariance")
        if not _symmetric(cov):
            raise InvalidInput("risk_model.covariance is not symmetric", ["risk_model.covariance"])
        if n and np.linalg.eigvalsh(cov).min() < -_PSD_TOL * max(1.0, float(np.abs(cov).max())):
            raise InvalidInput(
                "risk_model.covariance is not positive semidefinite", ["risk_model.covariance"]
            )
        return cov
    b = _matrix(rm.factor_exposures)
    k = b.shape[1] if b.ndim == 2 else -1
    if b.ndim != 2 or b.shape[0] != n or k < 1:
        raise InvalidInput(
            f"risk_model.factor_exposures must be {n} x k with k >= 1",
            ["risk_model.factor_exposures"],
        )
    f = np.asarray(rm.factor_covariance, dtype=float)
    if f.shape != (k, k):
        raise InvalidInput(
            f"risk_model.factor_covariance is {f.shape}; it must be {k} x {k} (k = number of "
            "columns of factor_exposures)",
            ["risk_model.factor_covariance", "risk_model.factor_exposures"],
        )
    d = np.asarray(rm.specific_variance, dtype=float)
    if d.shape != (n,):
        raise InvalidInput(
            f"risk_model.specific_variance has {d.size} entries; it must have {n}",
            ["risk_model.specific_variance"],
        )
    if not _all_finite(b, f, d):
        for name, arr in (
            ("factor_exposures", b),
            ("factor_covariance", f),
            ("specific_variance", d),
        ):
            _finite(arr, f"risk_model.{name}")
    if (d < 0).any():
        raise InvalidInput(
            "risk_model.specific_variance must be >= 0", ["risk_model.specific_variance"]
        )
    if not by_content("symmetric_psd", f, _symmetric_psd):
        raise InvalidInput(
            "risk_model.factor_covariance must be symmetric positive semidefinite",
            ["risk_model.factor_covariance"],
        )
    return b


def _matrix(rows: list[list[float]]) -> np.ndarray:
    """``np.asarray(rows, dtype=float)``; rows of one length >= 1 by ``np.fromiter`` (a
    fifth faster on a 500 x 10 list; same numbers), others by ``np.asarray`` itself (same
    shape, or the same error for ragged rows)."""
    k = len(rows[0]) if rows else 0
    if k and set(map(len, rows)) == {k}:
        return np.fromiter(chain.from_iterable(rows), float, len(rows) * k).reshape(len(rows), k)
    return np.asarray(rows, dtype=float)


def _symmetric(a: np.ndarray) -> bool:
    """``np.allclose(a, a.T, atol=1e-12, rtol=1e-9)`` for a finite square ``a``; exactly
    symmetric matrices (the usual case) are recognised by one comparison."""
    return bool((a == a.T).all()) or bool(np.allclose(a, a.T, atol=1e-12, rtol=1e-9))


def _symmetric_psd(f: np.ndarray) -> bool:
    """Whether the finite square ``f`` is symmetric and positive semidefinite (eigenvalues
    down to ``-_PSD_TOL`` times its largest absolute entry, or 1 when that is smaller)."""
    return _symmetric(f) and not np.linalg.eigvalsh(f).min() < -_PSD_TOL * max(
        1.0, float(np.abs(f).max())
    )


# Columns of a request, read once for the checks and build_data


@dataclass(frozen=True, slots=True)
class InstrumentColumns:
    """Fields of ``req.instruments`` in request order, read once (:func:`request_columns`)."""

    ids: list[str]
    row: dict[str, int]
    """Instrument id -> its row (the last one when an id repeats)."""
    price: Arr
    """Currency per share."""
    adv_shares: Arr
    """Average daily volume, shares per day."""
    daily_volatility: Arr
    """Daily return volatility (a fraction per day)."""
    half_spread_bps: Arr
    """Half bid-ask spread, basis points of the price."""
    wash_sale_group: list[str | None]
    sector: list[str]
    asset_class: list[str]
    lot_size: list[int]
    substitutes: list[list[str]]


@dataclass(frozen=True, slots=True)
class RequestColumns:
    """Columns of a request read once and shared by the request checks and
    :func:`~rebalancer.optimizer.data.build_data` (:func:`check_request` returns them)."""

    inst: InstrumentColumns
    lot_instrument: list[str]
    lot_quantity: Arr
    """Shares."""
    lot_cost_basis: Arr
    """Currency per share."""
    lot_acquired: list[date]
    lot_id: list[str]
    lot_row: NDArray[np.int64] | None
    """Row of each lot's instrument; None when a lot holds an unknown instrument."""
    risk: Arr | None = None
    """``risk_model.covariance`` or ``risk_model.factor_exposures`` as floats (request
    order), when already converted."""


_LOT_FIELDS = ("instrument", "quantity", "cost_basis", "acquired", "lot_id")
_INSTRUMENT_FIELDS = (
    "id",
    "price",
    "adv_shares",
    "daily_volatility",
    "half_spread_bps",
    "wash_sale_group",
    "sector",
    "asset_class",
    "lot_size",
    "substitutes",
)


def _columns(models: Sequence[BaseModel], names: tuple[str, ...]) -> list[list[Any]]:
    """Field ``name`` of every model, per name, in the order of ``models``.

    Read from the models' ``__dict__``, where pydantic keeps the field values (half the time
    of attribute access), however the model was made (validated, constructed or copied).
    """
    rows = [m.__dict__ for m in models]
    return [list(map(itemgetter(name), rows)) for name in names]


def _floats(values: list[Any]) -> Arr:
    # fromiter: a third faster than np.array on a list of Python floats, same values
    return np.fromiter(values, float, len(values))


def instrument_columns(req: AnalyzeRequest) -> InstrumentColumns:
    """The instrument fields of ``req`` in request order (numbers as float arrays)."""
    ids, price, adv, vol, spread, group, sector, asset, lot_size, subs = _columns(
        req.instruments, _INSTRUMENT_FIELDS
    )
    row = dict(zip(ids, range(len(ids)), strict=True))
    price_a, adv_a, vol_a, spread_a = map(_floats, (price, adv, vol, spread))
    return InstrumentColumns(
        ids, row, price_a, adv_a, vol_a, spread_a, group, sector, asset, lot_size, subs
    )


def _lot_rows(row: dict[str, int], instruments: list[str]) -> NDArray[np.int64] | None:
    """Row of each lot's instrument, or None when one is not in ``row``."""
    try:
        return np.fromiter(map(row.__getitem__, instruments), np.int64, len(instruments))
    except KeyError:
        return None


def request_columns(req: AnalyzeRequest, risk: Arr | None = None) -> RequestColumns:
    """The instrument and lot columns of ``req`` in request order (nothing checked)."""
    inst = instrument_columns(req)
    names, qty, basis, acq, ids = _columns(req.portfolio.lots, _LOT_FIELDS)
    rows = _lot_rows(inst.row, names)
    return RequestColumns(inst, names, _floats(qty), _floats(basis), acq, ids, rows, risk)
