"""The simulated counterparties of the chaos test, as a process of their own.

Run as ``python chaos_sim.py --fills FILE --seed S --accounts N`` with
``REBALANCER_PULSAR_URL`` set. Reads commands from stdin, one per line, and answers each on
stdout with ``ok <command> <detail>`` once everything it produced was published:

- ``open``: publish the opening prices of the sample book;
- ``market``: the next trading day (resting orders may fill);
- ``eod``: expire every resting day order;
- ``quit``: stop.

Every execution report the venue produces is appended to ``FILE`` (JSON lines) *before* it is
published: that file is the venue's truth the invariants are checked against. Publishing retries
until the broker takes the message, because the broker is killed during the test and the
venue's state (unlike the service's) is not recoverable.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from rebalancer.adapters.pulsar_bus import Publisher
from rebalancer.bootstrap import bootstrap, install_signal_handlers
from rebalancer.config import Settings
from rebalancer.contracts import (
    TOPICS,
    EventType,
    ExecutionReportV1,
    MarketDataV1,
    encode,
    new_event,
)
from rebalancer.entrypoints.simulate import MARKET_TENANT, Counterparties
from rebalancer.sample_book import build_sample_book
from rebalancer.simulators.settlement import SettlementAgent
from rebalancer.simulators.venue import SimulatedVenue


class RetryingPublisher:
    """Publishes through ``inner``, retrying with backoff until the broker confirms."""

    def __init__(self, inner: Publisher, stop: threading.Event) -> None:
        self.inner = inner
        self.stop = stop

    def publish(
        self, topic: str, key: str, body: bytes, properties: dict[str, str] | None = None
    ) -> None:
        backoff = 0.1
        while True:
            try:
                self.inner.publish(topic, key, body, properties)
                return
            except Exception as exc:  # broker down: wait for it to come back
                if self.stop.is_set():
                    raise
                print(f"publish retry: {exc!r}", file=sys.stderr, flush=True)
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fills", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--accounts", type=int, default=30)
    args = ap.parse_args()

    rt = bootstrap(Settings(log_json=False, log_level="WARNING"), upgrade_schema=False)
    install_signal_handlers(rt)
    book = build_sample_book(seed=args.seed, n_accounts=args.accounts)
    venue = SimulatedVenue(
        seed=21,
        reject_probability=0.05,
        partial_fill_probability=0.3,
        stall_probability=0.25,
        slippage_bps=4.0,
    )
    sim = Counterparties(
        rt,
        book.price_feed(seed=3),
        venue,
        SettlementAgent(seed=13),
        settlement_days={i.id: i.settlement_days for i in book.instruments.values()},
    )
    venue._clock = sim._venue_time  # the venue runs on the market's trading date
    sim.publisher = RetryingPublisher(rt.publisher, rt.stop_event)  # type: ignore[assignment]
    send_reports = sim._send_reports
    fills = open(args.fills, "a", buffering=1)  # noqa: SIM115 - closed at exit

    def logged(reports: list[ExecutionReportV1]) -> None:
        for r in reports:
            if r.kind.is_fill:
                rec: dict[str, Any] = {
                    "report_id": r.report_id,
                    "order_id": r.order_id,
                    "account_id": r.account_id,
                    "instrument": r.instrument,
                    "side": str(r.side),
                    "quantity": str(r.fill_quantity),
                    "price": str(r.fill_price),
                }
                fills.write(json.dumps(rec) + "\n")
        send_reports(reports)

    sim._send_reports = logged  # type: ignore[method-assign]
    sim.start()
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "open":
            prices = sim.feed.current_prices()
            data = MarketDataV1(
                as_of=sim.feed.as_of,
                bars=[{"instrument": i, "close": p} for i, p in prices.items()],
            )
            env = new_event(EventType.MARKET_DATA, data, tenant_id=MARKET_TENANT, key="market")
            sim.publisher.publish(TOPICS[EventType.MARKET_DATA], "market", encode(env))
            print(f"ok open {data.as_of}", flush=True)
        elif cmd == "market":
            print(f"ok market {sim.step_market().as_of}", flush=True)
        elif cmd == "eod":
            print(f"ok eod {sim.end_of_day()}", flush=True)
        elif cmd == "quit":
            break
    rt.stop_event.set()
    sim.join()
    fills.close()
    rt.close()
    print("ok quit", flush=True)


if __name__ == "__main__":
    main()
