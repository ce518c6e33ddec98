"""Reference data: instruments (shared security master) and versioned model portfolios."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, cast

from fastapi import APIRouter, Path, Response, status

from rebalancer.domain.errors import Conflict, InvalidInput, NotFound
from rebalancer.domain.model import CASH, Instrument, ModelPortfolio, validate_targets
from rebalancer.entrypoints.api.deps import AdminCtx, ReadCtx
from rebalancer.entrypoints.api.errors import ERROR_RESPONSES
from rebalancer.entrypoints.api.schemas import (
    ID_PATTERN,
    InstrumentBody,
    InstrumentCreate,
    InstrumentOut,
    ModelBody,
    ModelCreate,
    ModelOut,
    ModelVersionOut,
)
from rebalancer.service_layer.handlers.portfolio import save_model, upsert_instrument
from rebalancer.service_layer.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

InstrumentId = Annotated[str, Path(pattern=ID_PATTERN, description="Instrument id.")]
ModelId = Annotated[str, Path(pattern=ID_PATTERN, description="Model id.")]


def _instrument(uow: UnitOfWork, instrument_id: str) -> Instrument:
    """The instrument, or 404 naming the path parameter."""
    try:
        return uow.instruments.get(instrument_id)
    except NotFound as exc:
        exc.fields = ["instrument_id"]
        raise


def _instrument_exists(uow: UnitOfWork, instrument_id: str) -> bool:
    try:
        uow.instruments.get(instrument_id)
    except NotFound:
        return False
    return True


def _model_exists(uow: UnitOfWork, model_id: str) -> bool:
    try:
        uow.models.get(model_id)
    except NotFound:
        return False
    return True


def checked_model(body: ModelBody, model_id: str) -> ModelPortfolio:
    """The domain model of ``body``; 422 naming the field when the weights are wrong.

    Raises
    ------
    InvalidInput
        ``CASH`` among the targets, or targets + cash_target not summing to 1 within 1e-6.
    """
    if CASH in body.targets:
        raise InvalidInput(
            f"put the cash weight in cash_target, not in targets[{CASH!r}]", [f"targets.{CASH}"]
        )
    try:
        validate_targets({**body.targets, CASH: body.cash_target}, "targets")
    except InvalidInput as exc:
        if exc.fields == ["targets"]:
            exc.fields = ["targets", "cash_target"]
        raise
    return body.to_domain(model_id)


# ---------------------------------------------------------------------------- instruments
@router.post(
    "/instruments",
    response_model=InstrumentOut,
    status_code=status.HTTP_201_CREATED,
    tags=["instruments"],
    summary="Create an instrument (an existing id is updated: 200)",
)
def create_instrument(body: InstrumentCreate, ctx: AdminCtx, response: Response) -> InstrumentOut:
    """Add an instrument to the security master shared by all tenants."""
    with ctx.uow() as uow:
        if _instrument_exists(uow, body.id):
            response.status_code = status.HTTP_200_OK
        uow.audit.record(ctx.actor, "upsert", "instrument", body.id, {"name": body.name})
        return InstrumentOut.of(upsert_instrument(uow, body.to_domain(body.id), body.name))


@router.get("/instruments", response_model=list[InstrumentOut], tags=["instruments"])
def list_instruments(ctx: ReadCtx) -> list[InstrumentOut]:
    """All instruments, ordered by id."""
    with ctx.uow() as uow:
        return [InstrumentOut.of(i) for i in uow.instruments.list()]


@router.get("/instruments/{instrument_id}", response_model=InstrumentOut, tags=["instruments"])
def get_instrument(instrument_id: InstrumentId, ctx: ReadCtx) -> InstrumentOut:
    """One instrument; 404 naming the id when unknown."""
    with ctx.uow() as uow:
        return InstrumentOut.of(_instrument(uow, instrument_id))


@router.put("/instruments/{instrument_id}", response_model=InstrumentOut, tags=["instruments"])
def update_instrument(
    instrument_id: InstrumentId, body: InstrumentBody, ctx: AdminCtx
) -> InstrumentOut:
    """Replace an existing instrument's attributes; 404 when unknown (create it with POST)."""
    with ctx.uow() as uow:
        _instrument(uow, instrument_id)
        uow.audit.record(ctx.actor, "update", "instrument", instrument_id, {"name": body.name})
        return InstrumentOut.of(upsert_instrument(uow, body.to_domain(instrument_id), body.name))


# ---------------------------------------------------------------------------- models
@router.post(
    "/models",
    response_model=ModelOut,
    status_code=status.HTTP_201_CREATED,
    tags=["models"],
    summary="Create a model portfolio (version 1)",
)
def create_model(body: ModelCreate, ctx: AdminCtx) -> ModelOut:
    """Create a model; 409 when the id exists (use PUT for a new version)."""
    model = checked_model(body, body.id)
    with ctx.uow() as uow:
        if _model_exists(uow, body.id):
            raise Conflict(
                f"model {body.id!r} already exists; PUT /v1/models/{body.id} adds a version",
                ["id"],
            )
        uow.audit.record(ctx.actor, "create", "model", body.id, {"version": 1})
        stored = save_model(uow, model, body.bands or {}, body.trigger_rule)
    return ModelOut.of(stored, body.bands, body.trigger_rule)


@router.get("/models", response_model=list[ModelOut], tags=["models"])
def list_models(ctx: ReadCtx) -> list[ModelOut]:
    """The tenant's models at their current versions, ordered by id."""
    with ctx.uow() as uow:
        return [ModelOut.of(r.model, r.bands, r.trigger_rule) for r in uow.models.list()]


@router.get("/models/{model_id}", response_model=ModelOut, tags=["models"])
def get_model(model_id: ModelId, ctx: ReadCtx) -> ModelOut:
    """A model at its current version; 404 naming the id when unknown."""
    with ctx.uow() as uow:
        rec = uow.models.get(model_id)
    return ModelOut.of(rec.model, rec.bands, rec.trigger_rule)


@router.put("/models/{model_id}", response_model=ModelOut, tags=["models"])
def update_model(model_id: ModelId, body: ModelBody, ctx: AdminCtx) -> ModelOut:
    """Store a new version of an existing model (accounts following it see it at once)."""
    model = checked_model(body, model_id)
    with ctx.uow() as uow:
        uow.models.get(model_id)
        uow.audit.record(ctx.actor, "update", "model", model_id, {"targets": len(body.targets)})
        save_model(uow, model, body.bands, body.trigger_rule)
    with ctx.uow() as uow:
        rec = uow.models.get(model_id)
    return ModelOut.of(rec.model, rec.bands, rec.trigger_rule)


@router.get("/models/{model_id}/versions", response_model=list[ModelVersionOut], tags=["models"])
def list_model_versions(model_id: ModelId, ctx: ReadCtx) -> list[ModelVersionOut]:
    """Every stored version of a model, oldest first."""
    with ctx.uow() as uow:
        # ModelRepository.list shadows the builtin in its annotations: help mypy.
        versions = cast(Sequence[ModelPortfolio], uow.models.versions(model_id))
    return [
        ModelVersionOut(version=m.version, targets=dict(m.targets), cash_target=m.cash_target)
        for m in versions
    ]
