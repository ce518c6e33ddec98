"""Batch rebalance: rebalance every account following a model (after a model change).

Fan-out (:func:`start_batch`, one transaction, module ``fanout``): lock the model's followers,
open one ``requested`` rebalance per account (or join the account's rebalance that is still
``requested``; accounts whose open rebalance is further along are *skipped* and counted), and
queue one ``rebalance_triggered`` v1 event per account on the dedicated topic
:data:`BATCH_TOPIC`, the rows and events written with ``COPY``. The outbox relay publishes
them to Pulsar.

Work (:func:`recommend_chunk`, module ``chunk``): any number of worker processes consume that
topic on one Shared subscription and take the messages in chunks. A chunk is handled in one
transaction: one set-based read (the accounts with their lots, cash and sleeves locked and
loaded by one statement, then models, instruments, quotes and recent loss sales for the whole
chunk; closes are cached per worker), one build (instrument entries and the covariance once per
instrument set, module ``inputs``), one ``analyze_many`` call and one bulk write (module
``store``: the covariance once per content in ``risk_models``, ``COPY`` of the recommendations
referencing it, one status ``UPDATE``, ``COPY`` of the outbox events). Each result is written
once: the rebalance rows are locked and only those still ``requested`` are computed, and event
ids are recorded in ``processed_events`` in the same transaction. A worker that dies mid-chunk
commits nothing; Pulsar redelivers its unacknowledged messages to the other workers.

Approving (:func:`approve_batch`, module ``control``): the batch's recommendations awaiting
approval, a chunk per transaction, as many per call as asked. Cancelling
(:func:`cancel_batch`): the batch's rebalances still
``requested`` finish as ``cancelled`` (their messages are then skipped), optionally with its
recommendations awaiting approval rejected.
"""

from rebalancer.service_layer.handlers.batch.chunk import (
    AnalysisCrashedError,
    ChunkResult,
    recommend_chunk,
    solve_all,
)
from rebalancer.service_layer.handlers.batch.control import (
    BatchApproved,
    BatchCancelled,
    approve_batch,
    cancel_batch,
)
from rebalancer.service_layer.handlers.batch.fanout import (
    BATCH_CONSUMER,
    BATCH_TOPIC,
    BatchStarted,
    batch_progress,
    start_batch,
    status_event,
)
from rebalancer.service_layer.handlers.batch.inputs import CLOSES_TTL_S, cached_closes

__all__ = [
    "BATCH_CONSUMER",
    "BATCH_TOPIC",
    "CLOSES_TTL_S",
    "AnalysisCrashedError",
    "BatchApproved",
    "BatchCancelled",
    "BatchStarted",
    "ChunkResult",
    "approve_batch",
    "batch_progress",
    "cached_closes",
    "cancel_batch",
    "recommend_chunk",
    "solve_all",
    "start_batch",
    "status_event",
]
