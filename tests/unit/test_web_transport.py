"""The pump's own websocket frames, read back by wsproto (the library simple-websocket uses)."""

from __future__ import annotations

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from web.transport import text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_a_text_frame_of_any_length_reads_back_whole(size: int) -> None:
    payload = (b'42["md",' + b"x" * size)[:size]
    reader = FrameProtocol(client=True, extensions=[])  # a client reads unmasked server frames
    reader.receive_bytes(text_frame(payload) + text_frame(b"42[]"))
    frames = list(reader.received_frames())
    assert [(f.opcode, f.message_finished, f.frame_finished) for f in frames] == [
        (Opcode.TEXT, True, True),
        (Opcode.TEXT, True, True),
    ]
    assert frames[0].payload == payload.decode()
    assert frames[1].payload == "42[]"
