"""Shared-subscription consumers with host-unique consumer ids, subscribed with retries.

Two pulsar-lite 0.2 behaviours shape this module (see docs/reliability.md, "Infrastructure
findings"):

- It keys the consumers of a subscription by the client-chosen consumer id alone, and every
  Pulsar client numbers its consumers from 0, so two processes on one subscription collide
  ("Consumer 0 already exists"). Each :class:`SharedSubscriber` therefore holds a host-wide
  slot and uses the consumer ids of that slot's block only.
- A consumer whose connection ends in a TCP reset (its process was SIGKILLed while deliveries
  were still unread in the socket) stays registered on the broker until the broker restarts,
  together with the messages it had been sent. The next incarnation of the process gets the
  same slot; subscribing with the dead process's ids makes the broker drop the connection, and
  the client retries the same id until its operation timeout. Before, that subscribe raised, the
  worker exited, its supervisor restarted it with the same ids, and it crash-looped until the
  broker happened to restart (seen in the chaos test: 4 restarts, 90 s).

So the slot file remembers where the previous incarnation's ids ended, a new incarnation that
follows an unclean exit starts after them, and every subscribe is retried with backoff chosen by
the error (a consumer id the broker refuses is retried at once: the next attempt uses fresh ids;
an unreachable broker is retried with doubling pauses) until it succeeds or the process is
asked to stop, logging each attempt. Apache Pulsar scopes consumer ids per connection: there
the ids are merely unusual and the retries cover broker restarts and failovers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TypeVar

import pulsar
import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")

CONSUMER_ID_BLOCK = 64
"""Consumer ids reserved per :class:`SharedSubscriber` slot (one worker process: 2 service loops
x 6 topics + 1 batch consumer use 13, so a slot holds the ids of about four incarnations that
died uncleanly, or of several failed attempts)."""

ID_BURN_TOPIC = "persistent://public/default/rebalancer.consumer-id-burn"
"""Topic of the short-lived readers that advance a client's consumer-id counter."""

SUBSCRIBE_ATTEMPT_TIMEOUT_S = 5
"""Operation timeout (seconds) of a subscriber's client, hence of one subscribe attempt. A
refused consumer id costs one timeout (pulsar-lite drops the connection instead of answering
``ConsumerBusy``, and the client retries the same id until then), so it is kept short; a
healthy subscribe takes milliseconds."""

WRAP_MARGIN = 16
"""An incarnation starts at id offset 0 again when fewer ids than this are left in the block."""

REFUSED: tuple[type[BaseException], ...] = (
    pulsar.InvalidConfiguration,
    pulsar.InvalidTopicName,
    pulsar.InvalidUrl,
    pulsar.AuthenticationError,
    pulsar.AuthorizationError,
    pulsar.ErrorGettingAuthenticationData,
    pulsar.NotAllowedError,
    pulsar.IncompatibleSchema,
    pulsar.OperationNotSupported,
    pulsar.UnsupportedVersionError,
    pulsar.TopicTerminated,
    pulsar.AlreadyClosed,
)
"""Errors that no retry can fix: the request itself is refused."""


class SubscribeCancelled(RuntimeError):
    """The process was asked to stop while a subscribe was still being retried."""


def subscribe_error_kind(exc: BaseException) -> str | None:
    """How a failed subscribe (or consumer-id burn) is retried, or ``None`` if it must not be.

    Returns
    -------
    str or None
        ``"consumer_id_taken"`` (the broker refused the id: retry at once, the client's next
        attempt uses fresh ids), ``"timeout"`` (the broker is slow or silently refused the id:
        the attempt itself waited, retry soon), ``"broker_unavailable"`` (connection refused or
        lost, lookup failed: retry with doubling pauses) or ``None`` (configuration, topic name,
        credentials or permissions: retrying cannot help, fix the request).
    """
    if isinstance(exc, REFUSED):
        return None
    if isinstance(exc, pulsar.ConsumerBusy):
        return "consumer_id_taken"
    if isinstance(exc, pulsar.Timeout):
        return "timeout"
    if isinstance(exc, (pulsar.PulsarException, ConnectionError)):
        return "broker_unavailable"
    return None


def retry_broker_call(
    fn: Callable[[], T],
    *,
    what: str,
    stop: threading.Event,
    first_backoff_s: float = 0.2,
    max_backoff_s: float = 5.0,
    context: Mapping[str, object] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, retrying broker errors with backoff chosen by the error.

    ``what`` and ``context`` (e.g. URL, slot, subscription) go into every log line.

    Each failed attempt is logged (``pulsar.subscribe_retry``: attempt, error kind, error, how
    long the attempt took and the pause before the next one); success after retries is logged as
    ``pulsar.subscribed_after_retries``. A refused consumer id or a timeout is retried after
    ``first_backoff_s``; an unreachable broker after a pause doubling up to ``max_backoff_s``.

    Raises
    ------
    SubscribeCancelled
        When ``stop`` is set while waiting to retry.
    Exception
        Errors :func:`subscribe_error_kind` does not retry, at once (logged as
        ``pulsar.subscribe_refused``).
    """
    ctx = dict(context or {})
    attempt = 0
    backoff = first_backoff_s
    started = time.monotonic()
    while True:
        attempt += 1
        t0 = time.monotonic()
        try:
            result = fn()
        except Exception as exc:
            kind = subscribe_error_kind(exc)
            if kind is None:
                log.error(
                    "pulsar.subscribe_refused",
                    what=what,
                    attempt=attempt,
                    error=repr(exc)[:300],
                    hint="not retried: check the topic names, subscription settings, "
                    "broker URL and credentials",
                    **ctx,
                )
                raise
            pause = backoff if kind == "broker_unavailable" else first_backoff_s
            log.warning(
                "pulsar.subscribe_retry",
                what=what,
                attempt=attempt,
                kind=kind,
                error=repr(exc)[:300],
                attempt_s=round(time.monotonic() - t0, 3),
                retry_in_s=pause,
                **ctx,
            )
            if stop.wait(pause):
                raise SubscribeCancelled(f"stopped while retrying {what}") from exc
            if kind == "broker_unavailable":
                backoff = min(backoff * 2, max_backoff_s)
            continue
        if attempt > 1:
            log.info(
                "pulsar.subscribed_after_retries",
                what=what,
                attempts=attempt,
                waited_s=round(time.monotonic() - started, 3),
                **ctx,
            )
        return result


def claim_slot(data_dir: Path, limit: int = 1024) -> tuple[int, IO[str]]:
    """The lowest consumer slot free on this host, held (``flock``) until the file is closed.

    The lock dies with the process, also on SIGKILL, so a restarted worker reuses the slot. The
    file is opened without truncating it: it holds the id offset where the previous holder
    stopped (see :class:`SharedSubscriber`).
    """
    folder = data_dir / "consumer-slots"
    for i in range(limit):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            f = open(folder / f"{i}.lock", "a+")  # noqa: SIM115 - held for the subscriber's lifetime
        except OSError as exc:  # read-only data dir: fine on Apache Pulsar, risky on pulsar-lite
            log.warning("pulsar.no_consumer_slot", folder=str(folder), error=repr(exc))
            return 0, open(os.devnull, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        return i, f
    raise RuntimeError(f"all {limit} consumer slots in {folder} are taken; free some or raise it")


def _read_offset(f: IO[str]) -> int:
    """Id offset recorded by the slot's previous holder (0 after a clean close or none)."""
    try:
        f.seek(0)
        text = f.read().strip()
        return int(json.loads(text)["next"]) if text else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _write_offset(f: IO[str], offset: int | None) -> None:
    """Record the slot's next free id offset (``None``: a clean close, start at 0)."""
    with contextlib.suppress(OSError, ValueError):
        f.seek(0)
        f.truncate()
        if offset is not None:
            f.write(json.dumps({"next": offset, "pid": os.getpid()}))
        f.flush()


class SharedSubscriber:
    """Creates the Shared-subscription consumers of one process with host-unique consumer ids.

    Each subscriber holds a host-wide slot ``s`` (a file locked with ``flock`` in
    ``data_dir/consumer-slots``, released when the process dies, even by SIGKILL), owns its
    client and advances its id counter to ``s * block + offset`` with short-lived readers
    (about 2 ms each); its consumers then get ids in ``[s * block, (s + 1) * block)``, disjoint
    from every other subscriber on the host. ``offset`` is 0 after a clean close and otherwise
    where the previous holder's ids ended, so a process restarted after a SIGKILL does not ask
    for the ids its predecessor may still hold on pulsar-lite. ``subscribe`` (and the id burn)
    retry with backoff until they succeed or ``stop`` is set (module docstring).

    Parameters
    ----------
    url
        ``pulsar://`` URL of the broker.
    data_dir
        Directory of the slot files (``REBALANCER_DATA_DIR``), shared by the processes of a host.
    block
        Consumer ids reserved for this subscriber.
    stop
        Set when the process should stop; ends the retries with :class:`SubscribeCancelled`.
        Default: never (retry until the broker answers).
    attempt_timeout_s
        Operation timeout of the subscriber's client, in seconds (one subscribe attempt).
    max_backoff_s
        Longest pause between two attempts while the broker is unreachable, in seconds.
    """

    def __init__(
        self,
        url: str,
        data_dir: Path,
        *,
        block: int = CONSUMER_ID_BLOCK,
        stop: threading.Event | None = None,
        attempt_timeout_s: int = SUBSCRIBE_ATTEMPT_TIMEOUT_S,
        max_backoff_s: float = 5.0,
    ) -> None:
        from rebalancer.adapters.pulsar_bus import make_client  # pulsar_bus re-exports us

        self.block = block
        self.url = url
        self.stop = stop or threading.Event()
        self.max_backoff_s = max_backoff_s
        self.slot, self._slot_file = claim_slot(data_dir)
        previous = _read_offset(self._slot_file)
        self.offset = previous if 0 <= previous <= block - WRAP_MARGIN else 0
        self.client = make_client(url, operation_timeout_s=attempt_timeout_s)
        self._used = 0
        self._lock = threading.Lock()
        _write_offset(self._slot_file, self.offset)
        if previous:
            log.info(
                "pulsar.consumer_slot_reused",
                slot=self.slot,
                previous_end=self.slot * block + previous,
                first_id=self.first_id,
                reason="the previous holder exited without closing; its ids are skipped",
            )
        try:
            for _ in range(self.first_id):
                self._call(self._burn_one, "consumer-id burn")
        except BaseException:
            self.close(clean=False)
            raise

    def _burn_one(self) -> None:
        """Spend one consumer id of the client (a reader created and closed at once)."""
        self.client.create_reader(ID_BURN_TOPIC, pulsar.MessageId.latest).close()

    @property
    def first_id(self) -> int:
        """The lowest consumer id this subscriber uses."""
        return self.slot * self.block + self.offset

    def _call(self, fn: Callable[[], T], what: str, **context: object) -> T:
        return retry_broker_call(
            fn,
            what=what,
            stop=self.stop,
            max_backoff_s=self.max_backoff_s,
            context={"url": self.url, "slot": self.slot, **context},
        )

    def subscribe(
        self, topics: str | list[str], subscription: str, **conf: object
    ) -> pulsar.Consumer:
        """``client.subscribe`` with ids from this subscriber's block (one per topic), retried.

        Every attempt spends fresh ids (the client numbers consumers on), so an id the broker
        refuses is never asked for again. Past the block's end the ids run into the next slot's
        block: a duplicate there is refused by the broker and retried, never shared.

        Raises
        ------
        SubscribeCancelled
            When ``stop`` is set before the broker accepted the subscription.
        """
        n = 1 if isinstance(topics, str) else len(topics)
        label = topics if isinstance(topics, str) else f"{len(topics)} topics"

        def attempt() -> pulsar.Consumer:
            first = self.first_id + self._used
            if self.offset + self._used + n > self.block:
                log.warning(
                    "pulsar.consumer_ids_beyond_block",
                    slot=self.slot,
                    first_id=first,
                    block_end=(self.slot + 1) * self.block,
                )
            self._used += n  # counted even if subscribe fails: the client spent the ids
            _write_offset(self._slot_file, min(self.offset + self._used, self.block))
            return self.client.subscribe(topics, subscription, **conf)  # type: ignore[arg-type]

        with self._lock:
            return self._call(attempt, f"subscribe {label}", subscription=subscription)

    def close(self, *, clean: bool = True) -> None:
        """Close the client (and its consumers) and free the slot; after a clean close the
        slot's next holder starts at its first id again."""
        with contextlib.suppress(Exception):
            self.client.close()
        if clean:
            _write_offset(self._slot_file, None)
        self._slot_file.close()
