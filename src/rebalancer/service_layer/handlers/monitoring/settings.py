"""Monitoring settings of an account, parsed from the models of its sleeves."""

from __future__ import annotations

import dataclasses

from rebalancer.adapters.repositories.reference import ModelRecord
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import Account, ModelPortfolio
from rebalancer.domain.monitoring_config import (
    MonitoringConfig,
    combine,
    parse_config,
    parse_trigger_rule,
)
from rebalancer.domain.rules import RuleDefinition
from rebalancer.service_layer.unit_of_work import UnitOfWork


@dataclasses.dataclass(frozen=True)
class AccountSettings:
    """Monitoring settings of one account (from the models of its sleeves).

    ``problems`` lists stored configuration that no longer parses (defaults are used instead);
    it is copied into the inputs of every evaluation of the account.
    """

    config: MonitoringConfig
    rule: RuleDefinition | None
    main_model: str | None
    problems: tuple[str, ...] = ()


class _Models:
    """Per-call cache of model records and their parsed monitoring settings."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.records: dict[str, ModelRecord] = {}
        self.parsed: dict[str, tuple[MonitoringConfig, RuleDefinition | None, list[str]]] = {}

    def record(self, model_id: str) -> ModelRecord:
        if model_id not in self.records:
            self.records[model_id] = self.uow.models.get(model_id)
        return self.records[model_id]

    def models(self, account: Account) -> dict[str, ModelPortfolio]:
        return {s.model_id: self.record(s.model_id).model for s in account.sleeves}

    def _parsed(self, model_id: str) -> tuple[MonitoringConfig, RuleDefinition | None, list[str]]:
        if model_id not in self.parsed:
            rec = self.record(model_id)
            problems = []
            try:
                config = parse_config(rec.bands)
            except InvalidInput as exc:
                config = parse_config({})
                problems.append(f"model {model_id} bands ignored: {exc.detail}")
            try:
                rule = parse_trigger_rule(rec.trigger_rule)
            except InvalidInput as exc:
                rule = None
                problems.append(f"model {model_id} trigger_rule ignored: {exc.detail}")
            self.parsed[model_id] = (config, rule, problems)
        return self.parsed[model_id]

    def settings(self, account: Account) -> AccountSettings:
        if not account.sleeves:
            return AccountSettings(parse_config({}), None, None)
        parts = [(s.share, s.model_id, *self._parsed(s.model_id)) for s in account.sleeves]
        main = max(parts, key=lambda p: p[0])
        rule = main[3] or next((p[3] for p in parts if p[3] is not None), None)
        problems = tuple(dict.fromkeys(x for p in parts for x in p[4]))
        return AccountSettings(combine([(p[0], p[2]) for p in parts]), rule, main[1], problems)


def account_settings(uow: UnitOfWork, account: Account) -> AccountSettings:
    """The monitoring settings of ``account`` (bands, alerts, schedules, signals, policy, rule)."""
    return _Models(uow).settings(account)
