"""Which sales count as losses for the wash-sale rule.

A sale is at a loss when the **amount realized** (the proceeds net of selling costs: half the
bid-ask spread and the commission) is below the cost basis, as the tax law defines it. A lot
priced slightly above its basis can therefore be a loss sale once its selling costs are paid.

Units: prices and cost basis in currency per share; costs in basis points (1/10,000) of the
traded value.
"""

from __future__ import annotations

from typing import overload

import numpy as np

from rebalancer.domain.arrays import FloatArray

BoolArray = np.ndarray[tuple[int, ...], np.dtype[np.bool_]]


@overload
def is_wash_sale_loss(price: float, cost_basis: float, selling_cost_bps: float) -> bool: ...


@overload
def is_wash_sale_loss(
    price: FloatArray | float, cost_basis: FloatArray, selling_cost_bps: FloatArray | float
) -> BoolArray: ...


@overload
def is_wash_sale_loss(
    price: FloatArray, cost_basis: FloatArray | float, selling_cost_bps: FloatArray | float
) -> BoolArray: ...


def is_wash_sale_loss(
    price: FloatArray | float,
    cost_basis: FloatArray | float,
    selling_cost_bps: FloatArray | float,
) -> bool | BoolArray:
    """Whether selling at ``price`` realizes a loss for the wash-sale rule.

    The amount realized per share is ``price * (1 - selling_cost_bps / 1e4)``; the sale is a
    loss when that is below ``cost_basis``. Arrays broadcast (e.g. prices ``(n, 1)`` against
    lot bases ``(n, K)``).

    Parameters
    ----------
    price
        Sale price, currency per share.
    cost_basis
        Cost basis, currency per share.
    selling_cost_bps
        Costs of selling in bps of the traded value: half spread plus commission.

    Returns
    -------
    bool or numpy.ndarray of bool
        True where the sale is at a loss.
    """
    realized = np.multiply(price, 1.0 - np.divide(selling_cost_bps, 1e4))
    out = np.less(realized, cost_basis)
    if isinstance(out, np.ndarray):
        return out
    return bool(out)
