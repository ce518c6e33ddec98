"""Reference data and account state: instruments, models, accounts, portfolio-state updates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rebalancer.contracts import EventType, ModelChangedV1, PortfolioStateUpdatedV1, new_event
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import Account, Instrument, ModelPortfolio, Sleeve, TaxLot
from rebalancer.domain.monitoring_config import validate_model_config
from rebalancer.service_layer.handlers import monitoring
from rebalancer.service_layer.unit_of_work import UnitOfWork


def upsert_instrument(uow: UnitOfWork, inst: Instrument, name: str = "") -> Instrument:
    """Create or update one instrument of the security master.

    Substitutes may name instruments not created yet (pairs reference each other); unknown
    substitutes are ignored by the optimizer until they exist and have a price.
    """
    if inst.id in inst.substitutes:
        raise InvalidInput(f"{inst.id} cannot be its own substitute", ["substitutes"])
    uow.instruments.upsert(inst, name)
    uow.commit()
    return inst


def save_model(
    uow: UnitOfWork,
    model: ModelPortfolio,
    bands: Mapping[str, Any] | None = None,
    trigger_rule: Mapping[str, Any] | None = None,
) -> ModelPortfolio:
    """Create a model or store a new version of it; emits ``model_changed``.

    ``bands`` and ``trigger_rule`` are validated first (see ``docs/monitoring.md``): a bad part
    raises :class:`InvalidInput` naming it, e.g. ``trigger_rule.rule.all[1].op``.
    """
    validate_model_config(bands, trigger_rule)
    uow.tenants.ensure(uow.tenant_id)
    uow.instruments.get_many(model.targets, field="targets")
    stored = uow.models.save(model, bands, trigger_rule)
    uow.publish(
        new_event(
            EventType.MODEL_CHANGED,
            ModelChangedV1(
                model_id=stored.id,
                version=stored.version,
                targets=dict(stored.targets),
                cash_target=stored.cash_target,
            ),
            tenant_id=uow.tenant_id,
            key=stored.id,
        )
    )
    uow.commit()
    return stored


def _check_account(uow: UnitOfWork, account: Account) -> None:
    if account.cash < 0:
        raise InvalidInput("cash must be >= 0", ["cash"])
    uow.instruments.get_many((lot.instrument for lot in account.lots), field="lots")
    models = uow.models.get_many(s.model_id for s in account.sleeves)
    del models  # existence check only
    total = sum(s.share for s in account.sleeves)
    if account.sleeves and abs(total - 1.0) > 1e-6:
        raise InvalidInput(f"sleeve shares sum to {total:.6f}; they must sum to 1", ["sleeves"])
    ids = [lot.lot_id for lot in account.lots]
    if len(ids) != len(set(ids)):
        raise InvalidInput("lot ids must be unique within the account", ["lots"])


def create_account(uow: UnitOfWork, account: Account) -> Account:
    """Create an account with its sleeves, lots and cash."""
    uow.tenants.ensure(uow.tenant_id)
    _check_account(uow, account)
    uow.accounts.add(account)
    uow.commit()
    return uow_get(uow, account.id)


def replace_account(uow: UnitOfWork, account: Account) -> Account:
    """Replace an account's sleeves, lots and cash (a full state update)."""
    _check_account(uow, account)
    uow.accounts.replace(account)
    uow.commit()
    return uow_get(uow, account.id)


def uow_get(uow: UnitOfWork, account_id: str) -> Account:
    with UnitOfWork(uow.engine, uow.tenant_id) as fresh:
        return fresh.accounts.get(account_id)


def apply_portfolio_state(uow: UnitOfWork, event: PortfolioStateUpdatedV1) -> None:
    """Inbound ``portfolio_state_updated``: replace lots and cash of a known account."""
    current = uow.accounts.get(event.account_id, lock=True)
    lots = [
        TaxLot(lot.lot_id, lot.instrument, lot.quantity, lot.cost_basis, lot.acquired)
        for lot in event.lots
    ]
    if not event.replace:
        known = {lot.lot_id for lot in lots}
        lots = [lot for lot in current.lots if lot.lot_id not in known] + lots
    updated = Account(
        id=current.id,
        tenant_id=current.tenant_id,
        cash=event.cash,
        lots=lots,
        sleeves=[Sleeve(s.id, s.model_id, s.share) for s in current.sleeves],
        household_id=current.household_id,
        tax_type=current.tax_type,
        name=current.name,
    )
    _check_account(uow, updated)
    uow.accounts.replace(updated)
    monitoring.refresh_account(uow, updated.id)  # drift snapshot and alerts after the change
    uow.commit()
