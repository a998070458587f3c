"""The worker channel's frames: any split of the byte stream gives the same messages."""

from __future__ import annotations

import pytest

from offload.channel import FrameReader, encode


def _stream() -> tuple[list[object], bytes]:
    messages: list[object] = [("apply", 1, b"x" * 70_000), ("ping", 2), (3, {"a": "b"})]
    return messages, b"".join(encode(m) for m in messages)


@pytest.mark.parametrize("piece", [1, 7, 8, 9, 4096, 16_384, 65_536, 1 << 20])
def test_messages_survive_any_split_of_the_stream(piece: int) -> None:
    """Fed in pieces of any size (as a non-blocking socket delivers them), frames come whole."""
    messages, data = _stream()
    reader, got = FrameReader(), []
    for start in range(0, len(data), piece):
        got.extend(reader.feed(data[start : start + piece]))
    assert got == messages


def test_a_partial_frame_yields_nothing_until_it_is_complete() -> None:
    """Half of a large frame is kept, not taken for a message or an end of stream."""
    frame = encode(("apply", 1, b"y" * 50_000))
    reader = FrameReader()
    assert reader.feed(frame[:20_000]) == []
    assert reader.feed(frame[20_000:-1]) == []
    assert reader.feed(frame[-1:]) == [("apply", 1, b"y" * 50_000)]
