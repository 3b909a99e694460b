"""Child of test_crash.py: writes to a pool in a loop until it is SIGKILLed.

Two kinds of data, both deterministic so the parent can check every byte:
- appendable "log" blocks: records [u32 magic, u32 index, u32 length, u64 xxh64] + payload, one append
  per record, indices contiguous across blocks; full blocks are sealed, the oldest freed past a budget.
- seal-required "put" blocks: value written, then sealed (the put is done only once sealed).
After each append returns it prints `A <index>`, after each seal of a put `P <n>`: the parent holds the
child to every line it saw. With RPMP_CRASH_MID_PUT=k the child kills itself halfway through writing
its k-th put, so recovery is sure to meet a half-written seal-required block.

`crash_child.py tx <pool> <seed>` is the child of test_crash_tx.py: failure-atomic writes (tx_write) into
the checked blocks "tx/0".."tx/<TX_BLOCKS-1>", each described before it starts (`W n block offset length`)
and acknowledged after it returns (`D n`); the bytes are tx_data(seed, n), so the parent can rebuild every
block's content from the lines alone.
"""

import os
import random
import signal
import struct
import sys

import xxhash
from rpmp._pool import Pool

REC = struct.Struct("<IIIQ")
MAGIC = 0xC0FFEE11
LOG_CAPACITY = 1 << 20
LOG_BUDGET = 48  # log blocks kept before the oldest is freed
PUT_BUDGET = 40
TX_BLOCKS = 3
TX_CAPACITY = 4 << 20
TX_MAX_WRITE = 1 << 20


def payload(index: int, length: int) -> bytes:
    return random.Random(index).randbytes(length)


def put_value(n: int) -> bytes:
    return random.Random(-n - 1).randbytes(1000 + n % 5000)


def main(path: str) -> None:
    pool = Pool.open(path)
    logs = sorted((i for i in pool if i.key.startswith(b"log/")), key=lambda i: int(i.key[4:]))
    puts = sorted((i for i in pool if i.key.startswith(b"put/")), key=lambda i: int(i.key[4:]))
    next_index, log_seq = 0, 0
    if logs:
        last = pool.read(logs[-1].id)
        pos = 0
        while pos < len(last):
            _, idx, length, _ = REC.unpack_from(last, pos)
            next_index = idx + 1
            pos += REC.size + length
        log_seq = int(logs[-1].key[4:]) + 1
    if not logs or logs[-1].sealed:
        logs.append(None)
    put_n = int(puts[-1].key[4:]) + 1 if puts else 0
    live_logs = [i.id for i in logs if i is not None]
    current = logs[-1].id if logs[-1] is not None else None
    live_puts = [i.id for i in puts]
    rng = random.Random()
    crash_put = put_n + int(os.environ.get("RPMP_CRASH_MID_PUT", "-1"))
    print("READY", flush=True)
    while True:
        length = rng.choice([0, 1, 100, 4000, 20000, 150000])
        data = payload(next_index, length)
        rec = REC.pack(MAGIC, next_index, length, xxhash.xxh64_intdigest(data)) + data
        if current is None or pool.info(current).used + len(rec) > LOG_CAPACITY:
            if current is not None:
                pool.seal(current)
            current = pool.alloc(LOG_CAPACITY, key=b"log/%d" % log_seq)
            log_seq += 1
            live_logs.append(current)
            if len(live_logs) > LOG_BUDGET:
                pool.free(live_logs.pop(0))
        pool.append(current, rec)
        sys.stdout.write(f"A {next_index}\n")
        sys.stdout.flush()
        next_index += 1
        if next_index % 7 == 0:
            value = put_value(put_n)
            block = pool.alloc(len(value), key=b"put/%d" % put_n, seal_required=True)
            pool.write(block, 0, value[: len(value) // 2])
            if put_n == crash_put:
                os.kill(os.getpid(), signal.SIGKILL)
            pool.write(block, len(value) // 2, value[len(value) // 2:])
            pool.seal(block)
            sys.stdout.write(f"P {put_n}\n")
            sys.stdout.flush()
            put_n += 1
            live_puts.append(block)
            if len(live_puts) > PUT_BUDGET:
                pool.free(live_puts.pop(0))


def tx_data(seed: int, n: int, length: int) -> bytes:
    return random.Random(seed * 1_000_003 + n).randbytes(length)


def tx_main(path: str, seed: int) -> None:
    pool = Pool.open(path)
    blocks = {int(i.key[3:]): i.id for i in pool if i.key.startswith(b"tx/")}
    for k in range(TX_BLOCKS):
        if k not in blocks:
            blocks[k] = pool.alloc(TX_CAPACITY, key=b"tx/%d" % k, checked=True)
    rng = random.Random(seed)
    print("READY", flush=True)
    n = 0
    while True:
        k = rng.randrange(TX_BLOCKS)
        used = pool.used(blocks[k])
        length = rng.choice([0, 1, 7, 4096, 65536, 300_000, TX_MAX_WRITE, rng.randrange(TX_MAX_WRITE + 1)])
        kind = rng.randrange(3)
        if kind == 0 or used == 0:  # append, or past the end (a zeroed gap)
            offset = used + (rng.randrange(100_000) if kind == 1 else 0)
        else:  # overwrite published bytes (maybe running past the end)
            offset = rng.randrange(used)
        offset = min(offset, TX_CAPACITY - length)
        data = tx_data(seed, n, length)
        sys.stdout.write(f"W {n} {k} {offset} {length}\n")
        sys.stdout.flush()
        pool.tx_write(blocks[k], offset, data)
        sys.stdout.write(f"D {n}\n")
        sys.stdout.flush()
        n += 1


if __name__ == "__main__":
    if sys.argv[1] == "tx":
        tx_main(sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1])
