"""Domain error families.

Each family maps to exactly one HTTP status in ``entrypoints.api.errors``. Every error carries a
human ``detail`` that says what to fix and the request ``fields`` it concerns.
"""

from __future__ import annotations


class RebalancerError(Exception):
    """Base class of every error the service reports to its users.

    Parameters
    ----------
    detail
        What went wrong and, where possible, how to fix it.
    fields
        Dotted paths of the request fields concerned (e.g. ``"policy.max_turnover"``).
    """

    code: str = "error"

    def __init__(self, detail: str, fields: list[str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields = list(fields or [])


class NotFound(RebalancerError):
    """A referenced entity (account, instrument, model, ...) does not exist for this tenant."""

    code = "not_found"


class UnknownAccount(NotFound):
    code = "unknown_account"


class UnknownInstrument(NotFound):
    code = "unknown_instrument"


class InvalidInput(RebalancerError):
    """Well-formed input that violates a business rule (e.g. weights not summing to 1)."""

    code = "invalid"


class Conflict(RebalancerError):
    """The request conflicts with the current state (e.g. approving a rejected recommendation)."""

    code = "conflict"


class InfeasibleRebalance(RebalancerError):
    """The constraints of a rebalance cannot all hold at once; ``fields`` names the conflict."""

    code = "infeasible"


class WashSaleViolation(RebalancerError):
    """A proposed trade set would realize a loss inside a wash-sale window."""

    code = "wash_sale_violation"


class IllegalTransition(RebalancerError):
    """An order or rebalance state machine refused a transition."""

    code = "illegal_transition"


class ValidationFailed(RebalancerError):
    """The independent re-check of an optimizer answer found a violated constraint."""

    code = "validation_failed"
