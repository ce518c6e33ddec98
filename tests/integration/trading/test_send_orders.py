"""An approval sends its first wave with one ``UPDATE`` of the orders: each order is marked
``sent`` once (one more send attempt, ``sent_at`` stamped), and each gets its
``order_placed`` and status events, in the orders' order."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from tradehelpers import make_book, make_recommendation, rows

from rebalancer.adapters import orm
from rebalancer.contracts import decode
from rebalancer.service_layer.handlers import trading
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration


def test_an_approval_marks_its_first_wave_sent_in_one_statement(
    engine: sa.Engine, sql_log: list[str]
) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    acct = book.accounts[0]
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 10), (book.b, "sell", 20)])
    with engine.connect() as conn:
        after = int(conn.execute(sa.select(sa.func.max(orm.outbox.c.id))).scalar() or 0)
    sql_log.clear()
    with UnitOfWork(engine, book.tenant) as uow:
        sent = trading.approve(uow, rec, "t")
    assert sum(q.upper().startswith("UPDATE ORDERS SET STATUS") for q in sql_log) == 1
    stored = rows(engine, orm.orders, account_id=acct)
    assert len(sent) == len(stored) == 2
    assert all(o.status == "sent" and o.send_attempts == 1 and o.sent_at for o in stored)

    o = orm.outbox
    with engine.connect() as conn:
        bodies = conn.execute(sa.select(o.c.body).where(o.c.id > after).order_by(o.c.id)).scalars()
        envs = [decode(bytes(b)) for b in bodies if decode(bytes(b)).tenant_id == book.tenant]
    events = [
        (str(e.type), e.payload.get("order_id") or e.payload.get("entity_id"))
        for e in envs
        if str(e.type) in ("order_placed", "status_updated")
        and e.payload.get("entity", "order") == "order"
    ]
    # per order its placement, then its status: pairs in the order the orders were sent
    pairs = [(events[k], events[k + 1]) for k in range(0, len(events), 2)]
    assert all(p[0][0] == "order_placed" and p[1] == ("status_updated", p[0][1]) for p in pairs)
    assert sorted(p[0][1] for p in pairs) == sorted(str(r["id"]) for r in sent)
