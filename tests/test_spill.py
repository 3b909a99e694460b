"""Spill files (the disk tier's format): what a scan after a crash or damage finds, byte for byte."""

from __future__ import annotations

import os

import pytest

from rpmp.server.storage.spill import EXTENT_HEADER, EXTENT_MAGIC, PAGE, SpillFile, SpillFileError


def body(tag: str, n: int) -> bytes:
    return (tag.encode() * (n // len(tag) + 1))[:n]


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "node.spill")


def write_three(path: str) -> list:
    f = SpillFile(path)
    extents = [f.append(b"S-key-%d" % i, body(f"block{i}-", n), seq=i)
               for i, n in enumerate((100, PAGE * 3, 1_000_000))]
    f.close()
    return extents


def test_appended_extents_scan_back_byte_exact_and_the_file_reopens_at_its_tail(path):
    extents = write_three(path)
    assert [e.offset % PAGE for e in extents] == [0, 0, 0]
    assert extents[1].offset == extents[0].end and extents[2].offset == extents[1].end
    f = SpillFile(path)
    found = list(f.scan())
    assert [(e, ok) for e, ok in found] == [(e, True) for e in extents]
    assert [f.read(e) for e, _ in found] == [body(f"block{i}-", e.length) for i, e in enumerate(extents)]
    assert f.tail == extents[-1].end
    more = f.append(b"S-key-3", b"after reopen", seq=3)
    assert more.offset == extents[-1].end
    with f.map(more) as m:
        assert bytes(m) == b"after reopen"
    f.close()


def test_a_torn_append_is_reported_and_a_torn_header_is_cut(path):
    extents = write_three(path)
    size = os.path.getsize(path)
    with open(path, "r+b") as raw:  # the last append's body only half written when the node died
        raw.truncate(extents[2].body_offset + extents[2].length // 2)
    f = SpillFile(path)
    found = list(f.scan(verify=False))
    assert [ok for _, ok in found] == [True, True, False]  # the owner frees it: its block is still in the pool
    f.close()
    with open(path, "r+b") as raw:  # the next append died inside its header page
        raw.truncate(size)
        raw.seek(extents[2].end)
        raw.write(EXTENT_MAGIC + b"\x07" * 40)
    f = SpillFile(path)
    assert [e for e, _ in f.scan()] == extents
    assert os.path.getsize(path) == extents[2].end and f.tail == extents[2].end
    f.close()


def test_a_damaged_body_is_reported_and_a_damaged_header_loses_only_its_extent(path):
    extents = write_three(path)
    with open(path, "r+b") as raw:
        raw.seek(extents[0].body_offset + 10)
        raw.write(b"X")                        # one byte of the first body
        raw.seek(extents[1].offset + 9)
        raw.write(b"\xff")                     # the second header's sequence number
    f = SpillFile(path)
    found = list(f.scan())
    assert [(e.seq, ok) for e, ok in found] == [(0, False), (2, True)]
    assert f.read(found[1][0]) == body("block2-", extents[2].length)
    f.close()


def test_client_bytes_shaped_like_a_header_are_never_an_extent(path):
    """A body is client data: a forged header inside one (here: after the real header is damaged, so the
    scan walks the body page by page) must fail its MAC, which needs the file's secret."""
    f = SpillFile(path)
    forged = EXTENT_HEADER.pack(EXTENT_MAGIC, 99, 5, 0, 5) + b"S-bad" + bytes(16)
    payload = b"\0" * PAGE + forged.ljust(PAGE, b"\0") + b"tail"
    victim = f.append(b"S-victim", payload, seq=1)
    after = f.append(b"S-after", b"still here", seq=2)
    f.close()
    with open(path, "r+b") as raw:
        raw.seek(victim.offset)
        raw.write(b"\0" * 8)                   # the victim's magic gone: the scan resynchronises
    f = SpillFile(path)
    assert [(e.key, ok) for e, ok in f.scan()] == [(b"S-after", True)]
    assert f.read(after) == b"still here"
    f.close()


def test_freed_extents_are_holes_a_scan_skips(path):
    extents = write_three(path)
    f = SpillFile(path)
    f.free(extents[1])
    assert [e.seq for e, _ in f.scan()] == [0, 2]
    st = os.stat(path)
    assert st.st_blocks * 512 < st.st_size  # the pages went back to the file system
    f.free(extents[2])
    assert [e.seq for e, _ in f.scan()] == [0]
    assert f.tail == extents[0].end          # the freed tail's pages are cut; the next append reuses them
    f.close()


def test_a_view_pins_its_mapping(path):
    f = SpillFile(path)
    e = f.append(b"k", b"pinned bytes", seq=1)
    m = f.map(e)
    v = memoryview(m)[:6]
    with pytest.raises(BufferError):
        m.close()
    assert bytes(v) == b"pinned"
    v.release()
    m.close()
    f.close()


def test_a_file_that_is_not_a_spill_file_is_refused_and_left_alone(path):
    with open(path, "wb") as raw:
        raw.write(b"not a spill file at all" * 100)
    with pytest.raises(SpillFileError, match="is not an RPMP spill file"):
        SpillFile(path)
    with open(path, "rb") as raw:
        assert raw.read(23) == b"not a spill file at all"
    with pytest.raises(ValueError, match="a spill key is at most"):
        SpillFile(path + ".2").append(b"k" * PAGE, b"", seq=0)
