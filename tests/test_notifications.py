from __future__ import annotations

import asyncio

from app.services.notifications import NotificationHub


def test_slow_subscriber_loses_only_its_own_oldest_messages() -> None:
    async def run() -> None:
        hub = NotificationHub(queue_size=4)
        slow, fast = hub.subscribe("t"), hub.subscribe("t")
        got_fast: list[bytes] = []
        for i in range(20):
            hub.publish_frame("t", "c1", bytes([i]))
            while not fast.queue.empty():
                got_fast.append(fast.queue.get_nowait().data)  # type: ignore[arg-type]
        assert got_fast == [bytes([i]) for i in range(20)]
        kept = [slow.queue.get_nowait().data for _ in range(slow.queue.qsize())]
        assert kept[-1] == bytes([19])  # newest wins
        assert slow.dropped == 20 - len(kept)

    asyncio.run(run())


def test_late_joiner_gets_latest_frame_per_camera_and_close_after_end() -> None:
    async def run() -> None:
        hub = NotificationHub()
        hub.publish_frame("t", "c1", b"a1")
        hub.publish_frame("t", "c2", b"b1")
        hub.publish_frame("t", "c1", b"a2")
        hub.publish_json("t", {"type": "status_update", "status": "PROCESSING"})
        sub = hub.subscribe("t")
        first = [sub.queue.get_nowait() for _ in range(3)]
        assert [m.data for m in first[:2]] == [b"a2", b"b1"]
        assert first[2].kind == "text" and "PROCESSING" in str(first[2].data)
        hub.close_task("t")
        assert sub.queue.get_nowait().kind == "close"
        late = hub.subscribe("t")
        kinds = [late.queue.get_nowait().kind for _ in range(late.queue.qsize())]
        assert kinds[-1] == "close"

    asyncio.run(run())
