"""CVXPY atoms with precise types (cvxpy's own annotations are incomplete under mypy strict)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cvxpy as cp

_cp: Any = cp
Atom = Callable[..., cp.Expression]

sum_: Atom = _cp.sum
multiply: Atom = _cp.multiply
sum_squares: Atom = _cp.sum_squares
power: Atom = _cp.power
norm: Atom = _cp.norm
hstack: Atom = _cp.hstack
