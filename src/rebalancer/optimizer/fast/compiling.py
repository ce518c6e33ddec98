"""The fast path's compile plumbing: JAX's persistent compilation cache, bucket labels, the
abstract input shapes a bucket is compiled for, and the process hygiene around compiles (a
lower-priority compile thread, freezing long-lived objects out of the garbage collector's
reach)."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from pathlib import Path
from typing import Any

import jax

from rebalancer.optimizer.fast.inputs import Bucket

CACHE_ENV = "REBALANCER_JAX_CACHE_DIR"
"""Environment variable naming the persistent compilation cache directory (``off`` disables)."""


def default_cache_dir() -> Path | None:
    """``$REBALANCER_JAX_CACHE_DIR`` (``off``/empty: none), else ``$REBALANCER_DATA_DIR/jax-cache``
    when a data dir is configured, else ``~/.cache/rebalancer/jax``."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    data = os.environ.get("REBALANCER_DATA_DIR")
    if data:
        return Path(data) / "jax-cache"
    return Path.home() / ".cache" / "rebalancer" / "jax"


_cache_lock = threading.Lock()
_cache_dir: Path | None = None


def enable_compile_cache(path: Path | None) -> Path | None:
    """Point JAX's persistent compilation cache at ``path`` (once per process; later calls
    keep the first directory). Compiled buckets are then written there and loaded by the next
    process instead of being compiled again. Returns the directory in use."""
    global _cache_dir
    with _cache_lock:
        if _cache_dir is not None or path is None:
            return _cache_dir
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        jax.config.update("jax_compilation_cache_dir", str(path))  # type: ignore[no-untyped-call]
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # type: ignore[no-untyped-call]
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)  # type: ignore[no-untyped-call]
        _cache_dir = path
        return path


def bucket_label(bucket: Bucket, cones: bool = False) -> str:
    """``NxLxF`` (instruments x lots per instrument x factors, padded), then ``xSxJ`` when
    there is more than one stress-scenario or sector row, then ``+cones`` for the variant that
    carries the risk cones (tracking-error or VaR limits);
    :func:`rebalancer.optimizer.warmup.parse_bucket` reads it back."""
    out = f"{bucket.n}x{bucket.lots}x{bucket.factors}"
    if bucket.scenarios > 1 or bucket.sectors > 1:
        out += f"x{bucket.scenarios}x{bucket.sectors}"
    return out + ("+cones" if cones else "")


def input_spec(b: Bucket, batch: int | None) -> tuple[dict[str, Any], Any, Any]:
    f = jax.numpy.float64

    def s(*shape: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(((batch,) if batch else ()) + shape, f)  # type: ignore[no-untyped-call]

    K1 = b.lots + 1
    rows = 2 + b.scenarios + b.sectors
    p = {
        "ub": s(K1, b.n),
        "mask": s(K1, b.n),
        "e": s(K1, b.n),
        "lin": s(K1, b.n),
        "L": s(b.n, b.factors),
        "Az": s(rows, b.n),
        "At": s(rows, b.n),
        "b": s(rows),
        "on": s(rows + 2),
    }
    for key in ("any", "cost", "impact", "adv", "wa", "wx", "d"):
        p[key] = s(b.n)
    for key in ("gamma", "te2", "var2"):
        p[key] = s()
    return p, s(K1, b.n), s()


def lower_priority() -> None:
    """Run the calling thread at a lower CPU priority (Linux: per-thread nice 10), so a
    background compile yields the cores to requests; a no-op where not allowed."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def freeze_long_lived() -> int:
    """Collect garbage once, then move every object alive now to the cyclic garbage
    collector's permanent generation (``gc.freeze``), so later full collections skip them;
    returns how many objects are frozen in all. Frozen objects are still freed by reference
    counting. A process holding JAX and CVXPY state has about 260,000 tracked objects after
    its first compile; a full collection walking them all is a 250-600 ms pause in whichever
    request triggers it (500 instruments)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
