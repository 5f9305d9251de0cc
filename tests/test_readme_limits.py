"""The README's "Limits and defaults" table names every option of pyws.DEFAULT_OPTIONS and
pyws.LOOP_OPTIONS, so a new limit cannot land undocumented."""
from __future__ import annotations

import os
import re

import pyws
from pyws.manager import LOOP_OPTIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# options that are switches or negotiation settings, not limits a peer can cross
NOT_LIMITS = {"control_events", "reuse_port", "compression"}


def limits_table() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("## Limits and defaults")
    return text[start:text.index("\n## ", start + 1)]


def test_every_limit_is_in_the_readme_table() -> None:
    table = limits_table()
    named = set(re.findall(r"^\| `([a-z_]+)`", table, flags=re.M))
    wanted = (set(pyws.DEFAULT_OPTIONS) | set(LOOP_OPTIONS)) - NOT_LIMITS
    assert wanted <= named, f"missing from the README's limits table: {sorted(wanted - named)}"
    assert named <= wanted, f"not options any more: {sorted(named - wanted)}"


def test_the_table_states_the_defaults() -> None:
    table = limits_table()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z_]+)` \| ([^|]+) \|",
                                                           table, flags=re.M)}
    d = pyws.DEFAULT_OPTIONS
    assert d["max_message_size"] == 4 << 20 and rows["max_message_size"].startswith("4 MiB")
    assert d["max_fragments"] == 1 << 20 and rows["max_fragments"].startswith("1,048,576")
    assert d["max_header_bytes"] == 16384 and rows["max_header_bytes"].startswith("16,384")
    assert d["max_headers"] == 64 and rows["max_headers"].startswith("64 ")
    assert d["max_body"] == 1 << 20 and rows["max_body"].startswith("1 MiB")
    assert d["handshake_timeout"] == 10.0 and rows["handshake_timeout"].startswith("10 s")
    assert d["write_high_water"] == 1 << 20 and rows["write_high_water"].startswith("1 MiB")
    assert d["write_limit"] == 16 << 20 and rows["write_limit"].startswith("16 MiB")
    assert d["heartbeat"] == 20.0 and rows["heartbeat"].startswith("a ping every 20 s")
    assert d["heartbeat_timeout"] == 20.0 and rows["heartbeat_timeout"].startswith("20 s")
    assert d["idle_timeout"] is None and rows["idle_timeout"].startswith("off")
    assert d["close_timeout"] == 5.0 and rows["close_timeout"].startswith("5 s")
    assert d["max_sockets"] is None and "RLIMIT_NOFILE" in rows["max_sockets"]
    assert d["backlog"] == 1024 and rows["backlog"].startswith("1024")
    assert LOOP_OPTIONS["wakeup_queue_items"] == 65536
    assert rows["wakeup_queue_items"].startswith("65,536")
    assert LOOP_OPTIONS["wakeup_queue_bytes"] == 64 << 20
    assert rows["wakeup_queue_bytes"].startswith("64 MiB")
    assert LOOP_OPTIONS["wakeup_batch"] == 1024 and rows["wakeup_batch"].startswith("1,024")


def test_the_table_states_the_broker_bounds() -> None:
    table = limits_table()
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r'^\| `broker_options\["([a-z_]+)"\][^|]*\| ([^|]+) \|', table, flags=re.M)}
    b = pyws.BROKER_DEFAULTS
    assert b["queue_items"] == 10_000 and rows["queue_items"].startswith("10,000")
    assert b["queue_bytes"] == 16 << 20 and rows["queue_bytes"].startswith("16 MiB")
    assert b["max_inflight"] == 10_000 and rows["max_inflight"].startswith("10,000")
    assert b["max_message"] == 16 << 20 and rows["max_message"].startswith("16 MiB")
    assert b["connect_timeout"] == 3.0 and rows["connect_timeout"].startswith("3 s")
    assert b["probe_interval"] == 5.0 and b["probe_timeout"] == 3.0
    assert rows["probe_interval"].startswith("a probe after 5 s") and "3 s" in \
        rows["probe_interval"]
    assert b["topology_interval"] == 5.0 and rows["topology_interval"].startswith("5 s")
    assert b["backoff_min"] == 0.05 and b["backoff_max"] == 1.0
    assert re.search(r'connect_timeout.*50 ms doubling to 1 s', table)
    assert pyws.DEFAULT_OPTIONS.get("view_threshold", LOOP_OPTIONS.get("view_threshold")) \
        == 16 * 1024
