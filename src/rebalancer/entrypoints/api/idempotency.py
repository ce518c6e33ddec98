"""``Idempotency-Key`` support for unsafe requests.

The first request with a key runs, and its successful response is stored (per tenant) together
with a fingerprint of the request (method, path and canonical JSON body). A later request with
the same key and the same fingerprint gets the stored response and does no work; with another
fingerprint it gets 422 naming ``header.Idempotency-Key``. Requests with one key are serialized by
a transaction-scoped advisory lock, so two concurrent retries cannot both do the work. Failed
requests (4xx/5xx) are not stored: nothing was done, so a retry may run again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

from rebalancer.adapters.repositories.messaging import request_fingerprint
from rebalancer.entrypoints.api.deps import Context
from rebalancer.entrypoints.api.errors import ApiError
from rebalancer.service_layer.unit_of_work import UnitOfWork

IDEMPOTENCY_FIELD = "header.Idempotency-Key"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Optional client-chosen key (1-255 characters). Repeating a request with "
        "the same key and body returns the first response and does nothing more; reusing the "
        "key with another body is a 422.",
    ),
]


def canonical_body(body: BaseModel | None) -> bytes:
    """Canonical JSON of a parsed body (key order and whitespace do not matter)."""
    if body is None:
        return b""
    return body.model_dump_json(exclude_unset=False).encode()


def run_idempotent(
    ctx: Context,
    key: str | None,
    method: str,
    path: str,
    body: BaseModel | None,
    work: Callable[[UnitOfWork], Any],
    *,
    status_code: int,
    work_commits: bool,
) -> Any:
    """Run ``work`` once per ``key``; return its JSON-ready result (or the stored one).

    Parameters
    ----------
    ctx
        Request context (tenant, engine).
    key
        The ``Idempotency-Key`` header; ``None`` runs ``work`` without any bookkeeping.
    method, path, body
        What the fingerprint is made of.
    work
        Does the work in the given unit of work and returns the response body.
    status_code
        Status stored with the response.
    work_commits
        ``False``: ``work`` leaves the commit to us, and the stored response is committed in the
        same transaction as the work. ``True``: the handler commits itself (it must then be
        idempotent on its own, as approval is), and the response is stored right after.
    """
    if key is None:
        with ctx.uow() as uow:
            result = jsonable_encoder(work(uow))
            if not work_commits:
                uow.commit()
            return result
    fingerprint = request_fingerprint(method, path, canonical_body(body))
    with ctx.uow() as uow:
        uow.idempotency.lock(key)
        stored = uow.idempotency.get(key)
        if stored is not None:
            if stored.request_hash != fingerprint:
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was already used with a different request; "
                    "use a new key for a new request",
                    [IDEMPOTENCY_FIELD],
                )
            return stored.body
        result = jsonable_encoder(work(uow))
        if not work_commits:
            uow.idempotency.save(key, method, path, fingerprint, status_code, result)
            uow.commit()
            return result
    with ctx.uow() as uow:
        uow.idempotency.save(key, method, path, fingerprint, status_code, result)
        uow.commit()
    return result


def post_idempotent(
    request: Request,
    ctx: Context,
    key: str | None,
    body: BaseModel | None,
    work: Callable[[UnitOfWork], Any],
    *,
    status_code: int = 200,
    work_commits: bool,
) -> Any:
    """:func:`run_idempotent` for the ``POST`` that ``request`` is (its path fingerprints it)."""
    return run_idempotent(
        ctx,
        key,
        "POST",
        request.url.path,
        body,
        work,
        status_code=status_code,
        work_commits=work_commits,
    )
