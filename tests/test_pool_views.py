"""Zero-copy views of pool blocks dropped in any order: garbage cycles, pool before view, close while held.

Each case runs in a child interpreter: a SIGSEGV there fails the test instead of killing pytest. The child
prints what it observed and the test compares it line by line, so a wrong pin count (a free that should
be refused, or one refused forever) fails as surely as a crash.
"""

import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from rpmp import _pool
from rpmp._pool import Pool

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
# the child imports the very rpmp the tests import (an installed build or another checkout alike)
RPMP_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(_pool.__file__)))

PRELUDE = textwrap.dedent("""
    import gc, os, sys
    import pyarrow as pa
    from rpmp._pool import Pool, PoolBusyError, BlockView
    path = sys.argv[1]
    pool = Pool.create(path, 16 << 20)
    b = pool.alloc(1000, key=b"v")
    pool.append(b, b"0123456789")

    def try_free(block):
        try:
            pool.free(block)
            print("freed")
        except PoolBusyError as e:
            print("busy:", e)
    """)


def run_child(body: str) -> list[str]:
    path = os.path.join(SHM, f"rpmp-test-views-{uuid.uuid4().hex[:12]}.pool")
    try:
        out = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body), path], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PYTHONPATH": RPMP_ROOT})
    finally:
        if os.path.exists(path):
            os.unlink(path)
    assert out.returncode == 0, f"child died with {out.returncode} (-11 is SIGSEGV): {out.stderr[-2000:]}"
    assert "Exception ignored" not in out.stderr, out.stderr
    return out.stdout.splitlines()


MAKERS = {
    "view": "pool.view(b)",
    "view_slice": "pool.view(b)[2:5]",
    "reserve": "pool.reserve(b, 10, 100)",
    "arrow": "pa.py_buffer(pool.view(b))",
    "arrow_method": "pool.buffer(b, 1, 3)",
    "blockview": "pool.view(b).obj",  # the exporter itself, after its memoryview is gone
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_view_in_a_garbage_cycle_is_released_by_gc(kind):
    """The SIGSEGV: BlockView's tp_clear ran before the memoryview released its buffer."""
    lines = run_child(f"""
        keep = pool.view(b)              # a second, live view: the block must stay pinned
        l = [{MAKERS[kind]}]
        l.append(l)
        del l
        print("collected", gc.collect() > 0)
        try_free(b)
        del keep
        try_free(b)
        print("blocks", pool.blocks())
        pool.close()
        print("closed")
        """)
    assert lines == ["collected True", f"busy: block {first_block():#x} has 1 live views", "freed",
                     "blocks []", "closed"]


def first_block() -> int:
    """The address of the first block of a fresh 16 MiB pool (the children's `b`), from a pool of our own."""
    path = os.path.join(SHM, f"rpmp-test-views-{uuid.uuid4().hex[:12]}.pool")
    try:
        with Pool.create(path, 16 << 20) as pool:
            return pool.alloc(1000, key=b"v")
    finally:
        os.unlink(path)


def test_many_views_in_one_cycle_with_the_pool_itself():
    """Views and their pool in one garbage cycle: the pool closes only after the last view let go."""
    lines = run_child("""
        class Holder:
            pass
        h = Holder()
        h.me = h
        h.pool = pool
        h.views = [pool.view(b), pool.reserve(b, 10, 5), pa.py_buffer(pool.view(b, 0, 4)), pool.view(b).obj,
                   pool.buffer(b)]
        h.views.append(h.views)
        del h, pool
        print("collected", gc.collect() > 0)
        again = Pool.open(path)          # the pool lock is gone: the collected Pool closed its file
        print("reopened", again.blocks() == [b], again.read(b))
        again.free(b)
        again.close()
        print("done")
        """)
    assert lines == ["collected True", "reopened True b'0123456789'", "done"]


def test_random_cycles_and_orders():
    lines = run_child("""
        import random
        rng = random.Random(7)
        blocks = [b] + [pool.alloc(100) for _ in range(7)]
        for blk in blocks[1:]:
            pool.append(blk, b"x" * 50)
        makers = [lambda k: pool.view(k), lambda k: pool.view(k, 2, 5), lambda k: pool.reserve(k, 60, 20),
                  lambda k: pa.py_buffer(pool.view(k)), lambda k: pool.view(k).obj]
        for rnd in range(50):
            garbage = []
            for _ in range(rng.randrange(1, 8)):
                node = [rng.choice(makers)(rng.choice(blocks))]
                node.append(rng.choice(garbage) if garbage else node)
                garbage.append(node)
            garbage[0].append(garbage[-1])
            rng.shuffle(garbage)
            del garbage, node
            gc.collect()
        for blk in blocks:
            pool.free(blk)
        pool.close()
        print("ok")
        """)
    assert lines == ["ok"]


def test_pool_dropped_before_its_views():
    lines = run_child("""
        v = pool.view(b)
        r = pool.reserve(b, 10, 3)
        del pool                         # the views keep the pool (and its mapping) alive
        gc.collect()
        r[:] = b"abc"
        print(bytes(v))
        try:
            Pool.open(path)
        except Exception as e:
            print(type(e).__name__)
        del v, r
        again = Pool.open(path)
        print(again.read(b))
        again.close()
        """)
    assert lines == ["b'0123456789'", "PoolLockedError", "b'0123456789'"]


def test_close_while_views_alive_is_refused_then_works():
    lines = run_child("""
        v = pool.view(b)
        buf = pa.py_buffer(pool.view(b, 2, 2))
        for drop in ("v", "buf"):
            try:
                pool.close()
            except PoolBusyError as e:
                print("busy:", e)
            del globals()[drop]
        pool.close()
        print("closed", pool.closed)
        """)
    assert lines == ["busy: 2 views of pool blocks are still alive", "busy: 1 views of pool blocks are still alive",
                     "closed True"]


def test_a_released_view_cannot_be_exported_again():
    """A BlockView whose buffer was released may outlive its block: exporting it again must not hand out
    a pointer into a freed (maybe reused) block, nor pin it."""
    lines = run_child("""
        mv = pool.view(b)
        exporter = mv.obj
        mv.release()
        try_free(b)
        c = pool.alloc(1000)             # another tenant, maybe at the same address
        pool.append(c, b"secret")
        try:
            memoryview(exporter)
        except BufferError as e:
            print("refused:", e)
        try_free(c)
        """)
    assert lines == ["freed", f"refused: the view of block {first_block():#x} was released; "
                     "take a new one", "freed"]


def test_a_blockview_made_outside_the_pool_is_refused():
    lines = run_child("""
        for make in (lambda: BlockView.__new__(BlockView), lambda: BlockView()):
            try:
                memoryview(make())
            except BufferError as e:
                print("refused:", e)
        """)
    assert lines == ["refused: not a view handed out by a Pool"] * 2
