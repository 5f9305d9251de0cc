"""Cost per event of the pieces of pyws's Python dispatch, measured on a synthetic batch of
EV_WS_MSG events (64-byte payloads) with timeit; and the same batch read the other way round
(one struct.iter_unpack over the event array instead of per-field cffi attribute access).

    .venv/bin/python bench/profile_dispatch.py

No network, no server: it only shows where the ~1.3 us/event of Manager._dispatch_batch goes
and what a flatter event representation could save. Read alongside bench/profile_pyws.py.
"""
from __future__ import annotations

import struct
import timeit

from pyws._lib import ffi, lib
from pyws.constants import EV_WS_MSG, OP_BINARY
from pyws.message import WsMessage

N = 800  # about the batch size pyws_poll returns under the echo load
payload = ffi.new("uint8_t[]", b"x" * 64)
evs = ffi.new("pyws_event[]", N)
for i in range(N):
    evs[i].type = EV_WS_MSG
    evs[i].opcode = OP_BINARY
    evs[i].id = 0x1000 + (i % 64)
    evs[i].data = payload
    evs[i].len = 64
evp = ffi.cast("pyws_event *", evs)
buf = ffi.buffer


class FakeConn:
    __slots__ = ("handler", "sent")

    def __init__(self) -> None:
        self.handler = None
        self.sent = 0

    def ws_send(self, data: bytes, op: int) -> None:
        self.sent += 1


conns = {0x1000 + i: FakeConn() for i in range(64)}


def handler(c: FakeConn, ev: int, msg: WsMessage) -> None:
    c.ws_send(msg.data, msg.opcode)


def index_only() -> None:
    for i in range(N):
        ev = evp[i]


def read_type() -> None:
    for i in range(N):
        ev = evp[i]
        t = ev.type


def read_fields() -> None:
    for i in range(N):
        ev = evp[i]
        t = ev.type
        c = conns.get(ev.id)
        ln = ev.len
        op = ev.opcode


def copy_payload() -> None:
    for i in range(N):
        ev = evp[i]
        t = ev.type
        c = conns.get(ev.id)
        ln = ev.len
        data = buf(ev.data, ln)[:]
        op = ev.opcode


def make_message() -> None:
    for i in range(N):
        ev = evp[i]
        t = ev.type
        c = conns.get(ev.id)
        ln = ev.len
        msg = WsMessage(buf(ev.data, ln)[:] if ln else b"", ev.opcode)


def full_fake() -> None:  # the _dispatch_batch EV_WS_MSG path with a no-op send
    for i in range(N):
        ev = evp[i]
        t = ev.type
        if t == EV_WS_MSG:
            c = conns.get(ev.id)
            if c is None:
                continue
            ln = ev.len
            msg = WsMessage(buf(ev.data, ln)[:] if ln else b"", ev.opcode)
            h = c.handler or handler
            try:
                h(c, t, msg)
            except Exception:
                pass


# The same batch read with one struct.iter_unpack over the array: (type, opcode, code, id,
# data pointer, len, data2 pointer, len2, aux) as plain ints in one C-level pass.
SIZE = ffi.sizeof("pyws_event")
FMT = "=iiiQQQQQQ" if SIZE == 60 else "=iii4xQQQQQQ"
assert struct.calcsize(FMT) == SIZE, (struct.calcsize(FMT), SIZE)
base = int(ffi.cast("uintptr_t", payload))


def unpack_fields() -> None:
    for t, op, code, cid, dp, ln, dp2, ln2, aux in struct.iter_unpack(FMT, buf(evp, N * SIZE)):
        c = conns.get(cid)


def unpack_with_payload() -> None:
    # payload still copied out through cffi, one call per event (a C-side contiguous arena
    # would let Python slice one bytes object instead)
    for t, op, code, cid, dp, ln, dp2, ln2, aux in struct.iter_unpack(FMT, buf(evp, N * SIZE)):
        c = conns.get(cid)
        data = buf(ffi.cast("uint8_t *", dp), ln)[:]


arena = bytes(64 * N)


def unpack_arena() -> None:
    # if pyws_poll also copied every payload into one arena per batch and put offsets in
    # the events: one bytes object per batch, a slice per message
    off = 0
    for t, op, code, cid, dp, ln, dp2, ln2, aux in struct.iter_unpack(FMT, buf(evp, N * SIZE)):
        c = conns.get(cid)
        data = arena[off:off + ln]
        off += ln


def cffi_send_cost() -> float:
    """lib.pyws_send on a dead id (returns BADID at once): the bare cffi call cost."""
    loop = lib.pyws_loop_new()
    data = b"x" * 64
    f = lib.pyws_send
    n = 200000
    t = timeit.timeit(lambda: f(loop, 12345, 2, data, 64, 1), number=n)
    lib.pyws_loop_free(loop)
    return t / n * 1e9


def main() -> None:
    rows = [
        ("evs[i] (cdata struct ref)", index_only),
        ("+ ev.type", read_type),
        ("+ ev.id (dict get), ev.len, ev.opcode", read_fields),
        ("+ ffi.buffer(ev.data, len)[:] (payload bytes)", copy_payload),
        ("+ WsMessage(...)", make_message),
        ("+ handler(conn, ev, msg) -> conn.ws_send (no-op)", full_fake),
        ("struct.iter_unpack: all fields + dict get", unpack_fields),
        ("struct.iter_unpack + ffi payload copy", unpack_with_payload),
        ("struct.iter_unpack + slice of a batch arena", unpack_arena),
    ]
    print(f"per event, batch of {N} EV_WS_MSG events (best of 7):")
    for name, fn in rows:
        best = min(timeit.repeat(fn, number=20, repeat=7)) / (20 * N) * 1e9
        print(f"  {name:<52} {best:7.0f} ns")
    print(f"  {'lib.pyws_send (cffi call, returns BADID)':<52} {cffi_send_cost():7.0f} ns")


if __name__ == "__main__":
    main()
