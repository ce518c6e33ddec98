"""Cross-field checks of an :class:`AnalyzeRequest` (the per-field ones live in the models)."""

from __future__ import annotations

from itertools import chain
from operator import attrgetter

import numpy as np

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import CASH, validate_targets
from rebalancer.optimizer.data import RequestColumns, request_columns
from rebalancer.optimizer.memo import derived, frozen
from rebalancer.optimizer.schemas import AnalyzeRequest, CovarianceRiskModel, FactorRiskModel

_PSD_TOL = 1e-10


def _finite(values: list[float] | np.ndarray, field: str) -> None:
    if not bool(np.isfinite(np.asarray(values, dtype=float)).all()):
        raise InvalidInput(f"{field} contains a value that is not a finite number", [field])


def check_request(req: AnalyzeRequest) -> RequestColumns:
    """Check the rules relating several fields of ``req``.

    Returns
    -------
    RequestColumns
        The lot columns and the risk model's matrix as read for the checks (pass them to
        :func:`~rebalancer.optimizer.data.build_data` so they are not read again).

    Raises
    ------
    InvalidInput
        With ``fields`` naming the offending request fields, e.g. ``targets.AAPL`` or
        ``risk_model.factor_exposures``.
    """
    ids = [i.id for i in req.instruments]
    known = set(ids)
    if len(known) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise InvalidInput(f"instruments lists {dup} more than once", ["instruments"])
    if CASH in known:
        raise InvalidInput(f'"{CASH}" is reserved for the cash target', ["instruments"])
    validate_targets(req.targets, "targets")
    for key in req.targets:
        if key != CASH and key not in known:
            raise InvalidInput(
                f"target {key} is not in instruments; add its market data", [f"targets.{key}"]
            )
    fields = attrgetter("price", "adv_shares", "daily_volatility")
    n_inst = len(req.instruments)
    market = np.fromiter(chain.from_iterable(map(fields, req.instruments)), float, 3 * n_inst)
    market = market.reshape(n_inst, 3)
    bad = np.flatnonzero(~np.isfinite(market).all(axis=1))
    first_bad = int(bad[0]) if bad.size else -1
    by_id = {i.id: i for i in req.instruments}
    for n, inst in enumerate(req.instruments):
        if n == first_bad:
            _finite(market[n], f"instruments[{n}]")
        for sub in inst.substitutes:
            if sub not in known:
                raise InvalidInput(
                    f"substitute {sub} of {inst.id} is not in instruments",
                    [f"instruments[{n}].substitutes"],
                )
            other = by_id[sub]
            if (other.wash_sale_group or other.id) == (inst.wash_sale_group or inst.id):
                raise InvalidInput(
                    f"substitute {sub} of {inst.id} is in the same wash-sale group; a "
                    "substantially identical instrument cannot be a substitute",
                    [f"instruments[{n}].substitutes"],
                )
    lots = req.portfolio.lots
    cols = request_columns(req)
    if not set(cols.lot_instrument) <= known or len(set(cols.lot_id)) != len(lots):
        _first_bad_lot(req, known)
    for n, buy in enumerate(req.recent_buys):
        if buy.instrument not in known:
            raise InvalidInput(
                f"recent buy of {buy.instrument}, which is not in instruments",
                [f"recent_buys[{n}].instrument"],
            )
    _check_policy(req, known)
    risk = _check_risk_model(req, ids)
    return RequestColumns(
        cols.lot_instrument,
        cols.lot_quantity,
        cols.lot_cost_basis,
        cols.lot_acquired,
        cols.lot_id,
        risk,
    )


def _first_bad_lot(req: AnalyzeRequest, known: set[str]) -> None:
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


def _check_policy(req: AnalyzeRequest, known: set[str]) -> None:
    pol = req.policy
    for name, lst in (("no_buy", pol.no_buy), ("no_sell", pol.no_sell)):
        for inst in lst:
            if inst not in known:
                raise InvalidInput(f"policy.{name} names unknown {inst}", [f"policy.{name}"])
    sectors = {i.sector for i in req.instruments}
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
    if sorted(rm.instruments) != sorted(ids) or len(set(rm.instruments)) != len(ids):
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
        cov = np.asarray(rm.covariance, dtype=float) if rm.covariance else np.zeros((0, 0))
        if cov.shape != (n, n):
            raise InvalidInput(
                f"risk_model.covariance is {cov.shape}; it must be {n} x {n}",
                ["risk_model.covariance"],
            )
        _finite(cov, "risk_model.covariance")
        if not np.allclose(cov, cov.T, atol=1e-12, rtol=1e-9):
            raise InvalidInput("risk_model.covariance is not symmetric", ["risk_model.covariance"])
        if n and np.linalg.eigvalsh(cov).min() < -_PSD_TOL * max(1.0, float(np.abs(cov).max())):
            raise InvalidInput(
                "risk_model.covariance is not positive semidefinite", ["risk_model.covariance"]
            )
        return cov
    b = np.asarray(rm.factor_exposures, dtype=float)
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
    for name, arr in (("factor_exposures", b), ("factor_covariance", f), ("specific_variance", d)):
        _finite(arr, f"risk_model.{name}")
    if (d < 0).any():
        raise InvalidInput(
            "risk_model.specific_variance must be >= 0", ["risk_model.specific_variance"]
        )
    if not np.allclose(f, f.T, atol=1e-12, rtol=1e-9) or np.linalg.eigvalsh(
        f
    ).min() < -_PSD_TOL * max(1.0, float(np.abs(f).max())):
        raise InvalidInput(
            "risk_model.factor_covariance must be symmetric positive semidefinite",
            ["risk_model.factor_covariance"],
        )
    return b
