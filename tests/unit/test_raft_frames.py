"""The Raft port's frame codec (raft_groups/syncobj_adapter/shim.py `FrameCodec`): small
frames stored, large ones deflated as pysyncobj does; both plain zlib streams."""

from __future__ import annotations

import os
import zlib

from pysyncobj import tcp_connection

from raft_groups.syncobj_adapter import RaftMux, RaftNodeSettings, shim


def test_a_small_frame_is_stored_and_reads_back_with_zlib() -> None:
    data = os.urandom(300) + b"a" * 300
    frame = shim.FrameCodec().compress(data, 3)
    assert frame[0] == 0x18  # zlib header: deflate with a 512-byte window
    assert len(frame) > len(data)  # stored, not deflated
    assert zlib.decompress(frame) == data == shim.FrameCodec().decompress(frame)


def test_a_large_frame_is_deflated_as_pysyncobj_does() -> None:
    data = b"entry " * 20_000
    codec = shim.FrameCodec(small=1 << 16)
    assert codec.compress(data, 3) == zlib.compress(data, 3)
    assert codec.decompress(zlib.compress(data, 3)) == data


def test_the_mux_installs_the_codec_for_pysyncobjs_connections() -> None:
    address = "127.0.0.1:1"
    mux = RaftMux(RaftNodeSettings(address, address, "s" * 32))
    try:
        assert isinstance(tcp_connection.zlib, shim.FrameCodec)
    finally:
        mux.close()
