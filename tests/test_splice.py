"""Zero-copy sends (rpmp._splice): byte-exact over real sockets, bounded by the timeout, and through a node."""

import os
import random
import socket
import threading

import pytest

from rpmp.client import BadRequestError, Client

_splice = pytest.importorskip("rpmp._splice")


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair (what the client splices into)."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        a = socket.create_connection(srv.getsockname())
        b, _ = srv.accept()
    return a, b


def _drain(sock: socket.socket, n: int, out: bytearray) -> None:
    while len(out) < n:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        out += chunk


@pytest.mark.parametrize("size,offset", [(1, 0), (4095, 3), (1 << 20, 0), ((3 << 20) + 12345, 777)])
def test_pipe_send_is_byte_exact_for_unaligned_buffers(size, offset):
    data = random.Random(size).randbytes(size + offset)
    view = memoryview(data)[offset:]
    a, b = tcp_pair()
    with a, b:
        got = bytearray()
        reader = threading.Thread(target=_drain, args=(b, size, got))
        reader.start()
        pipe = _splice.Pipe()
        assert pipe.capacity >= 4096
        assert pipe.send(a.fileno(), view, 5000) == size
        reader.join(10)
        pipe.close()
        assert bytes(got) == bytes(view)


def test_pipe_send_to_a_peer_that_never_reads_times_out_and_closes_the_pipe():
    a, b = tcp_pair()
    with a, b:
        a.setblocking(False)
        pipe = _splice.Pipe()
        with pytest.raises(TimeoutError, match="took nothing for 200 ms"):
            pipe.send(a.fileno(), bytes(64 << 20), 200)   # far more than the socket buffers hold
        assert pipe.closed
        with pytest.raises(ValueError, match="closed"):
            pipe.send(a.fileno(), b"x", 200)


def test_pipe_send_to_a_closed_peer_is_an_oserror():
    a, b = tcp_pair()
    b.close()
    with a:
        with pytest.raises(OSError):
            _splice.Pipe().send(a.fileno(), bytes(1 << 20), 1000)


@pytest.mark.parametrize("zero_copy", [True, False])
def test_spliced_and_copied_pushes_store_the_same_bytes(node, zero_copy):
    app = f"app-splice-{int(zero_copy)}"
    rng = random.Random(7)
    segs = [(p, m, 100 + m, 0, rng.randbytes(size)) for p, (m, size) in
            enumerate([(0, (4 << 20) + 1), (1, 300_000), (2, 17), (3, 6 << 20)])]
    with Client(node.addr, zero_copy=zero_copy) as c:
        pl = c.register_shuffle(app, 1, num_partitions=4)
        assert c.push_many(app, 1, segs, placement=pl, window=2) == 4
        c.push(app, 1, 0, 9, 109, 0, memoryview(segs[0][4])[5:], placement=pl)
        got = {p: [(g.map_index, bytes(g.data)) for g in c.fetch(app, 1, p, placement=pl)] for p in range(4)}
    assert got == {0: [(0, segs[0][4]), (9, segs[0][4][5:])], 1: [(1, segs[1][4])], 2: [(2, segs[2][4])],
                   3: [(3, segs[3][4])]}


def test_a_refused_segment_mid_window_does_not_poison_the_connection_pool(node):
    """push_many raises on the first error reply; replies of segments still in flight must not reach the
    next caller of that pooled connection."""
    big = os.urandom(1 << 20)
    with Client(node.addr, max_idle=1) as c:
        pl = c.register_shuffle("app-poison", 1, num_partitions=2)
        segs = [(0, 0, 1, 0, big), (5, 0, 1, 1, big), (1, 0, 1, 2, big), (1, 0, 1, 3, big)]  # partition 5: refused
        with pytest.raises(BadRequestError, match="partition 5"):
            c.push_many("app-poison", 1, segs, window=4)
        c.ping()   # on the poisoned connection this would read segment 2's reply and fail
        assert c.hello()["node_id"] == node.addr
        c.push("app-poison", 1, 0, 1, 2, 0, b"after", placement=pl)
        assert [bytes(g.data) for g in c.fetch("app-poison", 1, 0, placement=pl) if g.map_index == 1] == [b"after"]
