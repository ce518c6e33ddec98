"""Arrays derived from a frozen request part, computed once per object and reused.

A batch chunk builds every account's request around one shared risk-model object (see
``service_layer/handlers/batch/inputs.py``); without a memo each account converted its
covariance to floats, checked it (symmetry, an eigenvalue decomposition) and factored it again:
about 0.8 ms of CPU per account at 50 instruments. Request models are frozen pydantic models,
so what is derived from one object stays true while it lives.

Requests that each bring their own copy of a risk model (``POST /v1/analyze``) usually repeat
the same small factor covariance; :func:`by_content` keeps what is derived from such a small
array keyed by its bytes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

__all__ = ["CONTENT_ENTRIES", "by_content", "derived", "frozen"]

T = TypeVar("T")

_SLOTS: dict[int, tuple[weakref.ref[Any], dict[Hashable, Any]]] = {}

CONTENT_ENTRIES = 64
"""Most values :func:`by_content` keeps (all are dropped when one more is needed)."""
CONTENT_MAX_BYTES = 64 * 64 * 8
"""Largest array :func:`by_content` keys by content (bytes): a 64 x 64 float matrix."""
_CONTENT: dict[tuple[str, str, tuple[int, ...], bytes], Any] = {}


def derived(obj: object) -> dict[Hashable, Any]:
    """The memo of ``obj``: a dict that lives exactly as long as ``obj`` itself.

    Keyed by object identity (never by value: equal models built separately get separate
    memos), dropped by a weak-reference callback when ``obj`` is collected, before its id can
    be reused. Values must be treated as read-only (arrays are stored with ``writeable`` off).
    Thread-safe under the GIL: two threads may compute the same value once each; both agree.
    """
    key = id(obj)
    hit = _SLOTS.get(key)
    if hit is not None and hit[0]() is obj:
        return hit[1]
    slot: dict[Hashable, Any] = {}

    def forget(_ref: weakref.ref[Any]) -> None:
        _SLOTS.pop(key, None)

    _SLOTS[key] = (weakref.ref(obj, forget), slot)
    return slot


def frozen(*arrays: Any) -> None:
    """Mark NumPy arrays read-only (they are shared through a memo)."""
    for a in arrays:
        a.setflags(write=False)


def by_content(kind: str, array: np.ndarray, compute: Callable[[np.ndarray], T]) -> T:
    """``compute(array)``, reused for any later array of the same dtype, shape and bytes.

    For small arrays only (larger ones are computed every time: their bytes would cost more
    memory than the value saves time). ``compute`` must depend on nothing but the array's
    content; ``kind`` names it (one memo serves several derivations). Values are shared:
    treat them as read-only (mark arrays with :func:`frozen`). Thread-safe under the GIL.
    """
    if array.nbytes > CONTENT_MAX_BYTES:
        return compute(array)
    key = (kind, array.dtype.str, array.shape, array.tobytes())
    hit = _CONTENT.get(key, _CONTENT)
    if hit is _CONTENT:
        hit = compute(array)
        if len(_CONTENT) >= CONTENT_ENTRIES:
            _CONTENT.clear()
        _CONTENT[key] = hit
    return hit  # type: ignore[no-any-return]
