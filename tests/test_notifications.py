from __future__ import annotations

import asyncio
import json

from app.services.notifications import ClientOutbox, FrameMessage, NotificationHub, Outbound


def frame(cam: str, i: int, low: bytes | None = None) -> FrameMessage:
    return FrameMessage(cam, f"{cam}-{i}".encode(), 0.0, low)


def drain(box: ClientOutbox) -> list[Outbound]:
    async def run() -> list[Outbound]:
        return [await box.get() for _ in range(box.pending())]

    return asyncio.run(run())


def test_slow_client_gets_the_newest_frame_per_camera_and_never_an_older_one() -> None:
    hub = NotificationHub()
    slow, fast = hub.subscribe("t"), hub.subscribe("t")
    got_fast: list[bytes | str] = []
    for i in range(20):
        hub.publish_frame("t", frame("c1", i))
        hub.publish_frame("t", frame("c2", i))
        got_fast += [m.data for m in drain(fast)]
    assert got_fast == [f"{c}-{i}".encode() for i in range(20) for c in ("c1", "c2")]
    assert [m.data for m in drain(slow)] == [b"c1-19", b"c2-19"]
    assert slow.dropped_frames == 38 and fast.dropped_frames == 0


def test_tracking_update_leaves_after_the_frames_of_its_global_frame() -> None:
    hub = NotificationHub()
    box = hub.subscribe("t")
    for g in range(3):
        hub.publish_frame("t", frame("c1", g))
        hub.publish_frame("t", frame("c2", g))
        hub.publish_json("t", {"type": "tracking_update", "global_frame_index": g})
    order = [(m.kind, m.data) for m in drain(box)]
    # every JPEG still queued for global frame g precedes tracking_update g
    for g in range(3):
        upd = next(i for i, (k, d) in enumerate(order) if k == "text" and json.loads(d)["global_frame_index"] == g)
        for i, (k, d) in enumerate(order):
            if k == "bytes" and str(d).endswith(f"-{g}'"):
                assert i < upd
    assert [d for k, d in order if k == "bytes"] == [b"c1-2", b"c2-2"]


def test_json_backlog_is_bounded_and_drops_oldest() -> None:
    hub = NotificationHub(max_text=5)
    box = hub.subscribe("t")
    for i in range(50):
        hub.publish_json("t", {"type": "tracking_update", "global_frame_index": i})
    got = [json.loads(m.data)["global_frame_index"] for m in drain(box)]  # type: ignore[arg-type]
    assert got == [45, 46, 47, 48, 49]
    assert box.dropped_texts == 45


def test_constrained_client_receives_the_low_variant() -> None:
    hub = NotificationHub()
    box = hub.subscribe("t")
    for i in range(5):  # never reads: frames keep being replaced
        hub.publish_frame("t", frame("c1", i, low=b"low"))
    assert box.constrained and hub.wants_low_variant("t")
    assert [m.data for m in drain(box)] == [b"low"]
    quick = hub.subscribe("t")
    drain(quick)
    hub.publish_frame("t", frame("c1", 9, low=b"low"))
    assert [m.data for m in drain(quick)] == [b"c1-9"]


def test_late_joiner_gets_latest_frame_per_camera_and_close_after_end() -> None:
    hub = NotificationHub()
    hub.publish_frame("t", frame("c1", 1))
    hub.publish_frame("t", frame("c2", 1))
    hub.publish_frame("t", frame("c1", 2))
    hub.publish_json("t", {"type": "status_update", "status": "PROCESSING"})
    sub = hub.subscribe("t")
    first = drain(sub)
    assert sorted(m.data for m in first[:2]) == [b"c1-2", b"c2-1"]  # type: ignore[type-var]
    assert first[2].kind == "text" and "PROCESSING" in str(first[2].data)
    hub.close_task("t")
    assert drain(sub)[-1].kind == "close"
    late = hub.subscribe("t")
    assert drain(late)[-1].kind == "close"


def test_send_latency_is_recorded_per_camera() -> None:
    import time

    hub = NotificationHub()
    hub.record_send("t", Outbound("bytes", b"x", "c1", time.monotonic() - 0.25))
    lat = hub.latency("t")
    assert 240 <= lat["c1"]["p50"] <= 1000
