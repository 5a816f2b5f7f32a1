"""Connecting to NATS and creating what the cluster uses, idempotently (every node may start first)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from app.core.config import Settings
from app.services.cluster.names import ClusterNames
from app.stores.redis_live_state import redact

log = logging.getLogger(__name__)
DUPLICATE_WINDOW_S = 120.0
"""A start published twice within this window (a retried request) is queued once (``Nats-Msg-Id``)."""


@dataclass(slots=True)
class ClusterSettings:
    """The parts of ``Settings`` the cluster needs, checked once."""

    url: str
    names: ClusterNames
    lease_s: float
    max_deliver: int
    record_ttl_s: float
    heartbeat_s: float

    @classmethod
    def from_settings(cls, s: Settings) -> ClusterSettings:
        if not s.nats_url:
            raise ValueError("SPOTON_NATS_URL is not set")
        if not s.redis_url:
            raise ValueError(
                "SPOTON_NATS_URL needs SPOTON_REDIS_URL: API nodes stream a worker's frames through Redis"
            )
        return cls(
            s.nats_url, ClusterNames(s.nats_prefix), s.task_lease_s, s.task_max_deliver, s.task_record_ttl_s,
            s.worker_heartbeat_s,
        )


class ClusterUnavailableError(RuntimeError):
    """NATS could not be reached at start-up."""


async def connect(url: str, name: str, initial_timeout_s: float = 15.0) -> Client:
    """A connection that, once made, reconnects forever (a NATS restart must not end a worker or an API
    node); the first connection must succeed within ``initial_timeout_s`` (else ``ClusterUnavailableError``:
    a mistyped URL must fail the start with its reason, not retry silently)."""
    last: list[str] = []

    async def on_error(exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if not last or last[-1] != text:  # one line per new error, not one traceback per retry
            log.warning("NATS (%s): %s", name, text)
        last[:] = [text]

    async def on_reconnected() -> None:
        last.clear()
        log.info("NATS (%s): reconnected", name)

    await _reachable(url)
    try:
        return await asyncio.wait_for(
            nats.connect(
                url, name=name, connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                allow_reconnect=True, error_cb=on_error, reconnected_cb=on_reconnected,
            ),
            initial_timeout_s,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise ClusterUnavailableError(
            f"NATS at {redact(url)} unreachable ({last[-1] if last else type(exc).__name__}): is nats-server "
            "running with JetStream (-js)?"
        ) from exc


async def _reachable(url: str) -> None:
    """Fail at once when nothing listens at the (first) server's address."""
    first = url.split(",")[0].strip()
    parts = urlsplit(first if "://" in first else f"nats://{first}")
    host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)
    except (OSError, TimeoutError) as exc:
        raise ClusterUnavailableError(
            f"NATS at {redact(first)} unreachable ({type(exc).__name__}: {exc}): is nats-server running with "
            "JetStream (-js)?"
        ) from exc
    writer.close()


@dataclass(slots=True)
class ClusterHandles:
    nc: Client
    js: JetStreamContext
    tasks: KeyValue
    workers: KeyValue
    checkpoints: KeyValue
    state: ObjectStore


async def ensure_cluster(nc: Client, cs: ClusterSettings) -> ClusterHandles:
    """The stream, the durable consumer, the KV buckets and the object store; created when missing."""
    js = nc.jetstream()
    n = cs.names
    stream = StreamConfig(
        name=n.stream,
        subjects=[n.start_subject],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
    )
    try:
        await js.stream_info(n.stream)
    except NotFoundError:
        await js.add_stream(stream)
        log.info("created stream %s", n.stream)
    consumer = ConsumerConfig(
        durable_name=n.consumer,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=cs.lease_s,
        max_deliver=cs.max_deliver,
        max_ack_pending=-1,
    )
    try:
        info = await js.consumer_info(n.stream, n.consumer)
        if info.config.ack_wait != cs.lease_s or info.config.max_deliver != cs.max_deliver:
            log.warning(
                "consumer %s exists with ack_wait %s s / max_deliver %s; settings say %s / %s: keeping it",
                n.consumer, info.config.ack_wait, info.config.max_deliver, cs.lease_s, cs.max_deliver,
            )
    except NotFoundError:
        await js.add_consumer(n.stream, consumer)
    ttl = cs.record_ttl_s
    return ClusterHandles(
        nc,
        js,
        await _kv(js, n.tasks_bucket, ttl),
        await _kv(js, n.workers_bucket, max(30.0, 15 * cs.heartbeat_s)),
        await _kv(js, n.checkpoints_bucket, ttl),
        await _objects(js, n.state_store, ttl),
    )


async def _kv(js: JetStreamContext, bucket: str, ttl_s: float) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except (NotFoundError, Exception) as exc:  # nats-py raises BucketNotFoundError (a NotFoundError subclass)
        if not _not_found(exc):
            raise
    return await js.create_key_value(KeyValueConfig(bucket=bucket, history=1, ttl=ttl_s))


async def _objects(js: JetStreamContext, bucket: str, ttl_s: float) -> ObjectStore:
    try:
        return await js.object_store(bucket)
    except Exception as exc:
        if not _not_found(exc):
            raise
    return await js.create_object_store(bucket, ObjectStoreConfig(bucket=bucket, ttl=ttl_s))


def _not_found(exc: Any) -> bool:
    return isinstance(exc, NotFoundError) or "not found" in str(exc).lower()


async def drop_cluster(url: str, names: ClusterNames) -> None:
    """Delete a deployment's stream, buckets and object store (benchmarks and tests clean up after
    themselves); what does not exist is skipped."""
    nc = await connect(url, "spoton-cleanup")
    js = nc.jetstream()
    for drop in (
        lambda: js.delete_stream(names.stream),
        lambda: js.delete_key_value(names.tasks_bucket),
        lambda: js.delete_key_value(names.workers_bucket),
        lambda: js.delete_key_value(names.checkpoints_bucket),
        lambda: js.delete_object_store(names.state_store),
    ):
        try:
            await drop()
        except Exception as exc:  # never created
            log.debug("cleanup: %s", exc)
    await nc.close()
