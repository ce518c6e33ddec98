"""Chaos: rebalance a book while SIGKILLing the API, the workers, the outbox relay, the broker and
PostgreSQL at random (seeded) moments, restarting each; then check that nothing was lost or
duplicated.

Every component is a separate OS process (see ``chaos_cluster``); the driver acts like a client:
it loads the book, requests rebalances and approves recommendations over HTTP, retrying with the
same ``Idempotency-Key``; the simulated venue and custodian log every fill they make, and that
log is the truth the database is checked against:

- every approved recommendation has exactly the orders its approval listed (none lost, none
  twice, none for a recommendation nobody approved);
- every fill the venue made is recorded once, counted once in its order, and settled once;
- each account's shares and settled cash equal its start plus its settled fills;
- no event is stuck in the outbox, and no event was dead-lettered.

Knobs (environment): ``REBALANCER_CHAOS_SEED`` (default 7), ``REBALANCER_CHAOS_ACCOUNTS``
(default 20) and ``REBALANCER_CHAOS_ROUNDS`` (each round kills each of the five processes once,
in a seeded random order, default 2).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos_driver import TARGETS, TENANT, ChaosError, Cluster, read_fills
from chaos_invariants import (
    fills_applied_once,
    orders_match_approvals,
    outbox_drained,
    positions_and_cash,
    rebalances_finished,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SEED = int(os.environ.get("REBALANCER_CHAOS_SEED", "7"))
ACCOUNTS = int(os.environ.get("REBALANCER_CHAOS_ACCOUNTS", "20"))
ROUNDS = int(os.environ.get("REBALANCER_CHAOS_ROUNDS", "2"))
MARKET_EVERY_S = 15.0
"""A new trading day this often during the chaos: resting orders fill, drift moves, and
monitoring opens new rebalances that the driver approves too."""


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="chaos-", dir="/tmp"))
    c = Cluster(root, seed=SEED, accounts=ACCOUNTS)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        if os.environ.get("REBALANCER_CHAOS_KEEP") is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"chaos data kept in {root}")


def _settle_down(c: Cluster, timeout_s: float) -> float:
    """With every process up, wait until nothing is pending (expiring resting orders); returns
    the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout_s
    last_eod = time.monotonic()
    state = c.quiet()
    while any(state.values()):
        if time.monotonic() > deadline:
            raise ChaosError(f"still busy after {timeout_s:.0f} s: {state}")
        if state["open_orders"] and time.monotonic() - last_eod > 4:
            c.sim_cmd("eod")
            last_eod = time.monotonic()
        time.sleep(0.5)
        c.heal()
        state = c.quiet()
    return time.monotonic() - start


def test_nothing_lost_or_duplicated_under_sigkill(cluster: Cluster) -> None:
    import threading

    c = cluster
    c.load_book()
    stop = threading.Event()
    monkey = threading.Thread(target=c.monkey, args=(stop, ROUNDS, (0.5, 3.0)), daemon=True)
    monkey.start()
    try:
        c.sim_cmd("open")
        c.request_rebalances(0)
        last_market = time.monotonic()
        while not c.monkey_done.is_set() or not c.log.approvals:
            c.approve_pending()
            if time.monotonic() - last_market > MARKET_EVERY_S:
                c.sim_cmd("eod")
                c.sim_cmd("market")
                c.log.market_days += 1
                last_market = time.monotonic()
            time.sleep(0.5)
    finally:
        stop.set()
        monkey.join(60)
    assert c.monkey_error is None, c.monkey_error
    c.heal()
    c.approve_pending()  # what the last market day opened
    # a liveness bound, not a speed claim: measured 28-31 s (seed 7, load average ~5 on two
    # cores); 180 s leaves room for a loaded CI machine. (It was raised to 300 s when a worker
    # restarted after a SIGKILL crash-looped on the consumer ids its predecessor left on
    # pulsar-lite until the broker happened to restart; subscribing now skips those ids and
    # retries, see docs/reliability.md.)
    settle_s = _settle_down(c, 180)

    assert c.engine is not None
    fills = read_fills(c.fills_path)
    violations = (
        orders_match_approvals(c.engine, TENANT, c.log.approvals)
        + fills_applied_once(c.engine, TENANT, fills)
        + positions_and_cash(c.engine, TENANT, c.book, fills)
        + outbox_drained(c.engine)
        + rebalances_finished(c.engine, TENANT)
    )
    letters = _dead_letters(c)
    kills = sum(c.log.kills.values())
    orders = c.sql("SELECT count(*) FROM orders WHERE tenant_id = :t", t=TENANT)[0][0]
    print(
        f"\nchaos (seed {SEED}): survived {kills} kills {dict(c.log.kills)}; "
        f"self-restarts {dict(c.log.self_restarts)}; {len(c.log.approvals)} approvals, "
        f"{orders} orders, {len({f['report_id'] for f in fills})} fills, "
        f"{c.log.market_days + 1} market days, {c.log.http_retries} HTTP retries, "
        f"{len(letters)} dead letters; settled down in {settle_s:.0f} s"
    )
    assert not violations, "\n".join(violations[:40])
    assert not letters, [(d.type, d.event_id, d.reason) for d in letters[:10]]  # type: ignore[attr-defined]
    assert c.log.kills == {t: ROUNDS for t in TARGETS}, c.log.kills
    assert len(c.log.approvals) >= ACCOUNTS // 2
    assert fills


def _dead_letters(c: Cluster) -> list[object]:
    from rebalancer.adapters.pulsar_bus import make_client
    from rebalancer.entrypoints.dlq import list_dead_letters

    client = make_client(c.broker.url)
    try:
        return list(list_dead_letters(client))
    finally:
        client.close()
