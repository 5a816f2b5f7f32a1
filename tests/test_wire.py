from __future__ import annotations

import pytest

from app.utils.wire import FrameHeader, FrameHeaderError, pack_frame, unpack_frame


def test_roundtrip_keeps_header_and_jpeg_bytes() -> None:
    h = FrameHeader("cam-ü1", 123456789, 42, 6.0)
    jpeg = b"\xff\xd8" + bytes(range(256)) + b"\xff\xd9"
    msg = pack_frame(h, jpeg)
    h2, j2 = unpack_frame(msg)
    assert h2 == h
    assert j2 == jpeg
    assert msg[:4] == b"SPOT"


def test_header_length_lets_clients_skip_unknown_fields() -> None:
    msg = bytearray(pack_frame(FrameHeader("c1", 1, 2, 0.5), b"JPEG"))
    # A future version appends 3 bytes of header: old clients must still find the JPEG.
    hl = int.from_bytes(msg[6:8], "big")
    msg[hl:hl] = b"xyz"
    msg[6:8] = (hl + 3).to_bytes(2, "big")
    h, jpeg = unpack_frame(bytes(msg))
    assert h.camera_id == "c1" and jpeg == b"JPEG"


@pytest.mark.parametrize("bad", [b"", b"XXXX" + bytes(40), pack_frame(FrameHeader("c", 0, 0, 0), b"")[:20]])
def test_rejects_non_frames(bad: bytes) -> None:
    with pytest.raises(FrameHeaderError):
        unpack_frame(bad)
