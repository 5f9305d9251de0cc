"""The permessage-deflate negotiation of RFC 7692 §7.1 in C (extensions.c), through cffi, with
no sockets: pyws_pmd_negotiate (server), pyws_pmd_offer and pyws_pmd_check_response (client) and
pyws_pmd_format.

Server: every parameter alone and combined, every window size, quoted values, whitespace and
case, several offers in one header value and across header values (the first acceptable one
wins), offers declined (unknown, duplicate, valued no-value, missing value, out-of-range and
malformed parameters; other extensions; compression off), and the configured options reflected
in the answer, each with the exact response string. Then every offer of the parameter space
(in two parameter orders) against several configurations, checked against the rules of the
RFC and of pyws's docs, and checked to be accepted by pyws's own client check.
Client: the exact offers for several options, the answers accepted and every refusal reason.
Format: every parameter set formats to the exact string and parses back to itself.
"""
from __future__ import annotations

import itertools
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import pytest

from pyws._lib import ffi, lib

PMD = "permessage-deflate"
ERR_ARG = lib.PYWS_ERR_ARG

# the reasons pyws_pmd_check_response gives
R_NOT_OFFERED = "the server selected an extension we did not offer"
R_TWICE = "the server selected permessage-deflate twice"
R_UNKNOWN = "the server's permessage-deflate has an unknown parameter"
R_REPEAT = "the server's permessage-deflate repeats a parameter"
R_VALUE = "the server's permessage-deflate has an invalid parameter value"
R_NO_VALUE = "the server's client_max_window_bits has no value"
R_SNCT = "the server did not accept server_no_context_takeover, which we asked for"
R_MALFORMED = "the server's Sec-WebSocket-Extensions header is malformed"


# --------------------------------------------------------------------------- helpers

class Params(NamedTuple):
    """A pyws_pmd_params: window bits 0 = absent, 8..15; client_max_window_bits -1 = no value."""
    snct: bool = False
    cnct: bool = False
    smwb: int = 0
    cmwb: int = 0


def make_opts(compression: int = 1, window_bits: int = 12, peer_window_bits: int = 12,
              no_context_takeover: int = 0, peer_no_context_takeover: int = 0) -> Any:
    """A pyws_opts from pyws_opts_default with the deflate fields changed."""
    o = ffi.new("pyws_opts *")
    lib.pyws_opts_default(o)
    o.compression = compression
    o.deflate_window_bits = window_bits
    o.deflate_peer_window_bits = peer_window_bits
    o.deflate_no_context_takeover = no_context_takeover
    o.deflate_peer_no_context_takeover = peer_no_context_takeover
    return o


class StrArray:
    """A pyws_str[] over header values; holds the backing buffers for as long as it lives."""

    def __init__(self, values: Sequence[str]) -> None:
        raw = [v.encode("latin-1") for v in values]
        self.bufs = [ffi.new("char[]", r) for r in raw]
        self.arr = ffi.new("pyws_str[]", max(1, len(raw)))
        for i, r in enumerate(raw):
            self.arr[i].ptr = self.bufs[i]
            self.arr[i].len = len(r)
        self.n = len(raw)


def params_of(p: Any) -> Params:
    return Params(bool(p.server_no_context_takeover), bool(p.client_no_context_takeover),
                  int(p.server_max_window_bits), int(p.client_max_window_bits))


def c_params(p: Params) -> Any:
    c = ffi.new("pyws_pmd_params *")
    c.server_no_context_takeover = int(p.snct)
    c.client_no_context_takeover = int(p.cnct)
    c.server_max_window_bits = p.smwb
    c.client_max_window_bits = p.cmwb
    return c


def negotiate(values: Sequence[str], opts: Any, cap: int = 256) -> Optional[Tuple[str, Params]]:
    """(response, agreed) if the server accepts an offer, None if it declines them all."""
    arr = StrArray(values)
    agreed = ffi.new("pyws_pmd_params *")
    out = ffi.new("char[]", max(cap, 1))
    rc = lib.pyws_pmd_negotiate(arr.arr, arr.n, opts, agreed, out, cap)
    assert rc in (0, 1), rc
    if rc == 0:
        return None
    return ffi.string(out).decode("latin-1"), params_of(agreed)


def offer(opts: Any) -> str:
    out = ffi.new("char[]", 512)
    n = lib.pyws_pmd_offer(opts, out, 512)
    s: str = ffi.string(out).decode("latin-1")
    assert n == len(s)
    return s


def check(values: Sequence[str], opts: Any) -> Tuple[Optional[str], int, Params]:
    """(reason or None, accepted, agreed) of pyws_pmd_check_response."""
    arr = StrArray(values)
    agreed = ffi.new("pyws_pmd_params *")
    accepted = ffi.new("int *", 7)
    why = lib.pyws_pmd_check_response(arr.arr, arr.n, opts, agreed, accepted)
    reason = None if why == ffi.NULL else ffi.string(why).decode()
    return reason, int(accepted[0]), params_of(agreed)


def c_format(p: Params, cap: int = 256) -> Tuple[int, str]:
    out = ffi.new("char[]", max(cap, 1))
    n = lib.pyws_pmd_format(c_params(p), out, cap)
    return n, (ffi.string(out).decode("latin-1") if n >= 0 else "")


def header(p: Params) -> str:
    """The canonical header value for p, in pyws_pmd_format's order, written here by hand."""
    parts = [PMD]
    if p.snct:
        parts.append("server_no_context_takeover")
    if p.cnct:
        parts.append("client_no_context_takeover")
    if p.smwb:
        parts.append(f"server_max_window_bits={p.smwb}")
    if p.cmwb == -1:
        parts.append("client_max_window_bits")
    elif p.cmwb:
        parts.append(f"client_max_window_bits={p.cmwb}")
    return "; ".join(parts)


def offer_text(p: Params, reverse: bool = False) -> str:
    """A client offer for p, parameters in the canonical or the reverse order."""
    parts = header(p).split("; ")[1:]
    if reverse:
        parts.reverse()
    return "; ".join([PMD] + parts)


def clamp(bits: int) -> int:
    return max(9, min(15, bits))


def pid(v: Any) -> str:
    s = repr(v)
    return s if len(s) < 60 else s[:57] + "..."


DEFAULT = make_opts()

# every parameter set an offer can carry: 2 * 2 * 9 * 10 = 360
WINDOWS_S = [0] + list(range(8, 16))
WINDOWS_C = [0, -1] + list(range(8, 16))
ALL_PARAMS = [Params(s, c, sw, cw) for s, c, sw, cw in
              itertools.product([False, True], [False, True], WINDOWS_S, WINDOWS_C)]


def params_id(p: Params) -> str:
    cm = {0: "-", -1: "nv"}.get(p.cmwb, str(p.cmwb))
    return f"s{int(p.snct)}c{int(p.cnct)}sw{p.smwb or '-'}cw{cm}"


# =========================================================================== server: accepted

# (id, header values, opts fields, exact response); default opts: window 12, peer window 12
ACCEPTED: List[Tuple[str, List[str], Dict[str, int], str]] = [
    # each parameter alone
    ("bare", [PMD], {}, "permessage-deflate; server_max_window_bits=12"),
    ("snct", [f"{PMD}; server_no_context_takeover"], {},
     "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"),
    ("cnct", [f"{PMD}; client_no_context_takeover"], {},
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=12"),
    ("cmwb-novalue", [f"{PMD}; client_max_window_bits"], {},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    # combined
    ("both-nct", [f"{PMD}; server_no_context_takeover; client_no_context_takeover"], {},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=12"),
    ("all-four", [f"{PMD}; server_no_context_takeover; client_no_context_takeover; "
                  "server_max_window_bits=10; client_max_window_bits=11"], {},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=10; client_max_window_bits=11"),
    ("all-four-reversed", [f"{PMD}; client_max_window_bits=11; server_max_window_bits=10; "
                           "client_no_context_takeover; server_no_context_takeover"], {},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=10; client_max_window_bits=11"),
    ("smwb+cmwb-novalue", [f"{PMD}; server_max_window_bits=9; client_max_window_bits"], {},
     "permessage-deflate; server_max_window_bits=9; client_max_window_bits=12"),
    ("snct+cmwb", [f"{PMD}; server_no_context_takeover; client_max_window_bits=15"], {},
     "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; "
     "client_max_window_bits=12"),
    ("cnct+smwb15", [f"{PMD}; client_no_context_takeover; server_max_window_bits=15"], {},
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=12"),
    ("pyws-default-offer", [f"{PMD}; server_max_window_bits=12; client_max_window_bits=12, "
                            f"{PMD}; client_max_window_bits=12"], {},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    # quoted-string values (RFC 7692 §7.1: the value after unescaping must fit the grammar)
    ("quoted-smwb", [f'{PMD}; server_max_window_bits="10"'], {},
     "permessage-deflate; server_max_window_bits=10"),
    ("quoted-cmwb", [f'{PMD}; client_max_window_bits="10"'], {},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10"),
    ("quoted-escaped", [f'{PMD}; server_max_window_bits="1\\0"'], {},
     "permessage-deflate; server_max_window_bits=10"),
    ("quoted-escaped-both", [f'{PMD}; client_max_window_bits="\\9"'], {},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9"),
    ("quoted-15", [f'{PMD}; server_max_window_bits="15"; client_max_window_bits="15"'], {},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    # whitespace and case
    ("spaces", [f"  {PMD}  ;  server_max_window_bits = 10 ;  client_max_window_bits  "], {},
     "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"),
    ("tabs", [f"\t{PMD}\t;\tserver_no_context_takeover\t;\tclient_max_window_bits\t=\t9\t"],
     {}, "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; "
         "client_max_window_bits=9"),
    ("no-spaces", [f"{PMD};server_max_window_bits=9;client_no_context_takeover"], {},
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=9"),
    ("upper", ["PERMESSAGE-DEFLATE; SERVER_NO_CONTEXT_TAKEOVER; CLIENT_MAX_WINDOW_BITS=9"], {},
     "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; "
     "client_max_window_bits=9"),
    ("mixed-case", ["Permessage-Deflate; Client_No_Context_Takeover; Server_Max_Window_Bits=11"],
     {}, "permessage-deflate; client_no_context_takeover; server_max_window_bits=11"),
    ("trailing-comma", [f"{PMD},"], {}, "permessage-deflate; server_max_window_bits=12"),
    ("empty-elements", [f" , ,{PMD}; server_max_window_bits=10 , ,"], {},
     "permessage-deflate; server_max_window_bits=10"),
    # several offers in one header value: the first acceptable one
    ("first-of-two", [f"{PMD}; server_max_window_bits=10, {PMD}"], {},
     "permessage-deflate; server_max_window_bits=10"),
    ("second-after-range", [f"{PMD}; server_max_window_bits=7, {PMD}; server_max_window_bits=11"],
     {}, "permessage-deflate; server_max_window_bits=11"),
    ("second-after-unknown", [f"{PMD}; foo, {PMD}; client_no_context_takeover"], {},
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=12"),
    ("second-after-duplicate", [f"{PMD}; server_no_context_takeover; server_no_context_takeover, "
                                f"{PMD}; client_max_window_bits=9"], {},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9"),
    ("second-after-valued", [f"{PMD}; client_no_context_takeover=1, {PMD}; "
                             "server_no_context_takeover"], {},
     "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"),
    ("third", [f"{PMD}; client_max_window_bits=16, {PMD}; server_max_window_bits, "
               f"{PMD}; server_max_window_bits=8"], {},
     "permessage-deflate; server_max_window_bits=8"),
    ("after-other-ext", [f"x-webkit-deflate-frame, {PMD}; server_no_context_takeover"], {},
     "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"),
    ("after-other-ext-params", [f"foo; a=1; b=\"x,y;z\", bar, {PMD}"], {},
     "permessage-deflate; server_max_window_bits=12"),
    # across header values
    ("values-second", [f"{PMD}; server_max_window_bits=16", f"{PMD}; server_max_window_bits=9"],
     {}, "permessage-deflate; server_max_window_bits=9"),
    ("values-first", [f"{PMD}; server_max_window_bits=10", f"{PMD}; server_max_window_bits=11"],
     {}, "permessage-deflate; server_max_window_bits=10"),
    ("values-other-first", ["x-foo", PMD], {}, "permessage-deflate; server_max_window_bits=12"),
    ("values-empty-first", ["", PMD], {}, "permessage-deflate; server_max_window_bits=12"),
    ("values-malformed-first", [f"{PMD};;", f"{PMD}; client_max_window_bits"], {},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    ("values-three", ["foo; a=1, bar", "baz", f"{PMD}; client_no_context_takeover, {PMD}"], {},
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=12"),
    ("values-declined-then-ok", [f"{PMD}; x", f"{PMD}; server_max_window_bits=08",
                                 f"{PMD}; client_max_window_bits=13"], {},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    # configured options reflected in the answer
    ("cfg-nct", [PMD], {"no_context_takeover": 1},
     "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"),
    ("cfg-nct-offered-too", [f"{PMD}; server_no_context_takeover"], {"no_context_takeover": 1},
     "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"),
    ("cfg-peer-nct", [PMD], {"peer_no_context_takeover": 1},
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=12"),
    ("cfg-both-nct", [f"{PMD}; client_max_window_bits"],
     {"no_context_takeover": 1, "peer_no_context_takeover": 1},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=12; client_max_window_bits=12"),
    ("cfg-peer0-novalue", [f"{PMD}; client_max_window_bits"], {"peer_window_bits": 0},
     "permessage-deflate; server_max_window_bits=12"),
    ("cfg-peer0-value", [f"{PMD}; client_max_window_bits=10"], {"peer_window_bits": 0},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10"),
    ("cfg-peer0-15", [f"{PMD}; client_max_window_bits=15"], {"peer_window_bits": 0},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=15"),
    ("cfg-peer9-novalue", [f"{PMD}; client_max_window_bits"], {"peer_window_bits": 9},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9"),
    ("cfg-peer9-8", [f"{PMD}; client_max_window_bits=8"], {"peer_window_bits": 9},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=8"),
    ("cfg-peer9-15", [f"{PMD}; client_max_window_bits=15"], {"peer_window_bits": 9},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9"),
    ("cfg-peer9-not-offered", [PMD], {"peer_window_bits": 9},
     "permessage-deflate; server_max_window_bits=12"),
    ("cfg-peer15-novalue", [f"{PMD}; client_max_window_bits"], {"peer_window_bits": 15},
     "permessage-deflate; server_max_window_bits=12"),
    ("cfg-peer15-13", [f"{PMD}; client_max_window_bits=13"], {"peer_window_bits": 15},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=13"),
    ("cfg-w9", [PMD], {"window_bits": 9}, "permessage-deflate; server_max_window_bits=9"),
    ("cfg-w9-asked-12", [f"{PMD}; server_max_window_bits=12"], {"window_bits": 9},
     "permessage-deflate; server_max_window_bits=9"),
    ("cfg-w9-asked-8", [f"{PMD}; server_max_window_bits=8"], {"window_bits": 9},
     "permessage-deflate; server_max_window_bits=8"),
    ("cfg-w14", [PMD], {"window_bits": 14}, "permessage-deflate; server_max_window_bits=14"),
    ("cfg-w15", [PMD], {"window_bits": 15}, "permessage-deflate"),
    ("cfg-w15-asked-15", [f"{PMD}; server_max_window_bits=15"], {"window_bits": 15},
     "permessage-deflate; server_max_window_bits=15"),
    ("cfg-w15-asked-10", [f"{PMD}; server_max_window_bits=10"], {"window_bits": 15},
     "permessage-deflate; server_max_window_bits=10"),
    ("cfg-w15-cmwb", [f"{PMD}; client_max_window_bits"], {"window_bits": 15},
     "permessage-deflate; client_max_window_bits=12"),
    ("cfg-w15-peer0-browser", [f"{PMD}; client_max_window_bits"],
     {"window_bits": 15, "peer_window_bits": 0}, "permessage-deflate"),
    ("cfg-w15-peer15-all", [f"{PMD}; server_no_context_takeover; client_max_window_bits"],
     {"window_bits": 15, "peer_window_bits": 15, "peer_no_context_takeover": 1},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("cfg-w10-peer11", [f"{PMD}; server_max_window_bits=11; client_max_window_bits=10"],
     {"window_bits": 10, "peer_window_bits": 11},
     "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10"),
]


@pytest.mark.parametrize("values,fields,expected",
                         [pytest.param(v, f, e, id=i) for i, v, f, e in ACCEPTED])
def test_server_accepts(values: List[str], fields: Dict[str, int], expected: str) -> None:
    got = negotiate(values, make_opts(**fields))
    assert got is not None, f"declined {values!r}"
    response, agreed = got
    assert response == expected
    # the agreed parameters are what the response says
    assert header(agreed) == expected
    assert c_format(agreed) == (len(expected), expected)


@pytest.mark.parametrize("n", range(8, 16))
def test_server_max_window_bits_each(n: int) -> None:
    """The client asks for a server window of n: granted as asked when below ours (12),
    else ours."""
    got = negotiate([f"{PMD}; server_max_window_bits={n}"], DEFAULT)
    assert got is not None
    assert got[0] == f"permessage-deflate; server_max_window_bits={min(n, 12)}"
    assert got[1] == Params(smwb=min(n, 12))


@pytest.mark.parametrize("n", range(8, 16))
def test_client_max_window_bits_each(n: int) -> None:
    """The client says its window can be bounded, at most n: we ask for min(n, 12)."""
    got = negotiate([f"{PMD}; client_max_window_bits={n}"], DEFAULT)
    assert got is not None
    assert got[0] == ("permessage-deflate; server_max_window_bits=12; "
                      f"client_max_window_bits={min(n, 12)}")
    assert got[1] == Params(smwb=12, cmwb=min(n, 12))


@pytest.mark.parametrize("ours", range(9, 16))
@pytest.mark.parametrize("asked", [0] + list(range(8, 16)))
def test_server_window_against_ours(ours: int, asked: int) -> None:
    """Our window (9..15) against the client's request (none, 8..15)."""
    offer_s = f"{PMD}; server_max_window_bits={asked}" if asked else PMD
    got = negotiate([offer_s], make_opts(window_bits=ours))
    assert got is not None
    want = min(ours, asked) if asked else ours
    expected = PMD if want == 15 and not asked else f"{PMD}; server_max_window_bits={want}"
    assert got[0] == expected


@pytest.mark.parametrize("peer", [0] + list(range(9, 16)))
@pytest.mark.parametrize("offered", [0, -1] + list(range(8, 16)))
def test_client_window_against_peer_window_bits(peer: int, offered: int) -> None:
    """What we ask of the client's window: only if it offered client_max_window_bits; then
    min(offered or 15, peer_window_bits), left out when that is 15 from a valueless offer."""
    p = Params(cmwb=offered)
    got = negotiate([offer_text(p)], make_opts(peer_window_bits=peer))
    assert got is not None
    if offered == 0:
        want = 0
    else:
        theirs = offered if offered > 0 else 15
        want = min(theirs, peer) if peer else theirs
        if offered == -1 and want == 15:
            want = 0
    assert got[1].cmwb == want
    assert got[0] == header(Params(smwb=12, cmwb=want))


# =========================================================================== server: declined

# (id, header value, kind): "param" = a well-formed permessage-deflate offer with a parameter
# we must decline, "syntax" = not valid header syntax, "other" = no permessage-deflate in it
DECLINED_OFFERS: List[Tuple[str, str, str]] = [
    # unknown parameters
    ("unknown", f"{PMD}; foo", "param"),
    ("unknown-valued", f"{PMD}; foo=1", "param"),
    ("unknown-after-valid", f"{PMD}; server_max_window_bits=10; mode=fast", "param"),
    ("unknown-before-valid", f"{PMD}; x; server_no_context_takeover", "param"),
    ("deflate-frame-param", f"{PMD}; no_context_takeover", "param"),
    ("dashes", f"{PMD}; server-no-context-takeover", "param"),
    ("truncated-name", f"{PMD}; client_max_window", "param"),
    ("prefixed-name", f"{PMD}; x_server_no_context_takeover", "param"),
    # duplicates
    ("dup-snct", f"{PMD}; server_no_context_takeover; server_no_context_takeover", "param"),
    ("dup-cnct", f"{PMD}; client_no_context_takeover; client_no_context_takeover", "param"),
    ("dup-smwb-same", f"{PMD}; server_max_window_bits=10; server_max_window_bits=10", "param"),
    ("dup-smwb-diff", f"{PMD}; server_max_window_bits=10; server_max_window_bits=11", "param"),
    ("dup-cmwb-novalue", f"{PMD}; client_max_window_bits; client_max_window_bits", "param"),
    ("dup-cmwb-mixed", f"{PMD}; client_max_window_bits; client_max_window_bits=10", "param"),
    ("dup-case", f"{PMD}; server_no_context_takeover; SERVER_NO_CONTEXT_TAKEOVER", "param"),
    ("dup-apart", f"{PMD}; client_no_context_takeover; server_max_window_bits=9; "
                  "client_no_context_takeover", "param"),
    # a value on a no-value parameter
    ("snct=1", f"{PMD}; server_no_context_takeover=1", "param"),
    ("cnct=1", f"{PMD}; client_no_context_takeover=1", "param"),
    ("snct=true", f"{PMD}; server_no_context_takeover=true", "param"),
    ("cnct-quoted", f'{PMD}; client_no_context_takeover="x"', "param"),
    ("snct-quoted-empty", f'{PMD}; server_no_context_takeover=""', "param"),
    # a missing value
    ("smwb-novalue", f"{PMD}; server_max_window_bits", "param"),
    ("smwb-novalue-spaces", f"{PMD}; server_max_window_bits ; client_max_window_bits", "param"),
] + [
    # out of range, or not a plain number 8..15
    (f"{name}={bad}", f"{PMD}; {name}={bad}", "param")
    for name in ("server_max_window_bits", "client_max_window_bits")
    for bad in ("7", "16", "08", "-9", "abc", "0", "1", "100", "015", "+9", "9.0", "1e1",
                "0x9", "99", "8a", '""', '" 10"', '"10 "', '"abc"', '"-9"', '"16"', '"7"')
] + [
    # malformed syntax
    ("trailing-semicolon", f"{PMD};", "syntax"),
    ("empty-param", f"{PMD}; ;", "syntax"),
    ("double-semicolon", f"{PMD};; server_no_context_takeover", "syntax"),
    ("no-semicolon", f"{PMD} server_no_context_takeover", "syntax"),
    ("empty-value", f"{PMD}; server_max_window_bits=", "syntax"),
    ("empty-value-then-more", f"{PMD}; server_max_window_bits=; client_max_window_bits",
     "syntax"),
    ("unterminated-quote", f'{PMD}; server_max_window_bits="10', "syntax"),
    ("unterminated-escape", f'{PMD}; server_max_window_bits="10\\', "syntax"),
    ("no-name", f"{PMD}; =10", "syntax"),
    ("double-equals", f"{PMD}; server_max_window_bits==10", "syntax"),
    ("space-in-value", f"{PMD}; server_max_window_bits=1 0", "syntax"),
    ("leading-semicolon", f";{PMD}", "syntax"),
    ("quoted-name", f'"{PMD}"', "syntax"),
    ("missing-separator", f"{PMD}; server_max_window_bits=10 client_max_window_bits", "syntax"),
    ("trailing-semicolon-after-param", f"{PMD}; server_no_context_takeover;", "syntax"),
    ("control-char", f"{PMD}\x01", "syntax"),
    ("control-in-quotes", f'{PMD}; client_max_window_bits="1\x010"', "syntax"),
    ("slash-in-value", f"{PMD}; server_max_window_bits=1/0", "syntax"),
    ("high-byte", f"{PMD}; server_max_window_bits=1\xe90", "syntax"),
    # the rest of a malformed header value is not read (extensions.c): not even a good offer
    ("malformed-stops-the-value", f"{PMD};; , {PMD}", "syntax"),
    # other extensions only
    ("webkit", "x-webkit-deflate-frame", "other"),
    ("deflate-frame", "deflate-frame; no_context_takeover", "other"),
    ("suffixed", "permessage-deflate-x", "other"),
    ("prefix", "permessage-deflat", "other"),
    ("underscore", "permessage_deflate", "other"),
    ("other-with-pmd-params", "foo; server_max_window_bits=10", "other"),
    ("others", "a, b; c=d, e", "other"),
    ("empty", "", "other"),
    ("only-commas", " , , ", "other"),
]


@pytest.mark.parametrize("value", [pytest.param(v, id=i) for i, v, _ in DECLINED_OFFERS])
def test_server_declines(value: str) -> None:
    assert negotiate([value], DEFAULT) is None


@pytest.mark.parametrize("value", [pytest.param(v, id=i) for i, v, _ in DECLINED_OFFERS])
def test_a_declined_offer_falls_through_to_the_next_header_value(value: str) -> None:
    """Whatever is wrong with one header value, a good offer in the next one is taken."""
    got = negotiate([value, f"{PMD}; client_max_window_bits=10"], DEFAULT)
    assert got is not None
    assert got[0] == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10"


@pytest.mark.parametrize("value", [pytest.param(v, id=i) for i, v, kind in DECLINED_OFFERS
                                   if kind != "syntax"])
def test_a_declined_offer_falls_through_to_the_next_offer_in_the_value(value: str) -> None:
    """A well-formed but unacceptable offer (or another extension): the next offer in the same
    header value is taken."""
    got = negotiate([f"{value}, {PMD}; server_no_context_takeover"], DEFAULT)
    assert got is not None
    assert got[0] == "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"


@pytest.mark.parametrize("value", [pytest.param(v, id=i) for i, v, kind in DECLINED_OFFERS
                                   if kind == "syntax"])
def test_a_malformed_value_hides_the_rest_of_that_value(value: str) -> None:
    """After a syntax error the rest of that header value is not read (extensions.c): a good
    offer behind it in the same value is not taken."""
    assert negotiate([f"{value}, {PMD}; server_no_context_takeover"], DEFAULT) is None


def test_no_header_values() -> None:
    assert negotiate([], DEFAULT) is None


@pytest.mark.parametrize("values", [
    [PMD], [f"{PMD}; client_max_window_bits"], [f"{PMD}; server_no_context_takeover"],
    ["x-foo", f"{PMD}; server_max_window_bits=10"],
], ids=pid)
def test_compression_off_declines_everything(values: List[str]) -> None:
    assert negotiate(values, make_opts(compression=0)) is None


@pytest.mark.parametrize("cap", [0, 1, 64, 127, 159])
def test_negotiate_needs_room_for_the_response(cap: int) -> None:
    """cap < PYWS_PMD_MAX_LEN (160): nothing accepted (the header might not fit)."""
    assert lib.PYWS_PMD_MAX_LEN == 160
    assert negotiate([PMD], DEFAULT, cap=cap) is None


LONGEST = (f"{PMD}; server_no_context_takeover; client_no_context_takeover; "
           "server_max_window_bits=15; client_max_window_bits=15")  # 128 characters


@pytest.mark.parametrize("cap", [128, 129, 130, 160])
def test_negotiate_never_writes_a_cut_response(cap: int) -> None:
    """The longest answer (128 characters) at caps around and above it: either refused or
    written whole, never cut short (the documented minimum is PYWS_PMD_MAX_LEN, 160)."""
    got = negotiate([LONGEST], make_opts(window_bits=15, peer_window_bits=15), cap=cap)
    if cap >= 160:
        assert got is not None
    if got is not None:
        assert got[0] == LONGEST


# =========================================================================== server: the space

def expected_server(offer_p: Params, window_bits: int, peer_window_bits: int, nct: int,
                    peer_nct: int) -> Params:
    """pyws's documented answer (api notes): no-context-takeover echoed if offered or
    configured; server_max_window_bits = min(ours, asked), sent unless both are 15 / absent;
    client_max_window_bits = min(offered or 15, peer_window_bits) only if offered, left out
    when it stays 15 after a valueless offer."""
    ours = clamp(window_bits)
    if offer_p.smwb and offer_p.smwb < ours:
        ours = offer_p.smwb
    smwb = ours if (offer_p.smwb or ours < 15) else 0
    cmwb = 0
    if offer_p.cmwb:
        theirs = offer_p.cmwb if offer_p.cmwb > 0 else 15
        if peer_window_bits > 0 and clamp(peer_window_bits) < theirs:
            theirs = clamp(peer_window_bits)
        if offer_p.cmwb > 0 or theirs < 15:
            cmwb = theirs
    return Params(offer_p.snct or bool(nct), offer_p.cnct or bool(peer_nct), smwb, cmwb)


def rfc_problems(o: Params, r: Params, window_bits: int, peer_window_bits: int, nct: int,
                 peer_nct: int) -> List[str]:
    """What is wrong with answer r to offer o, by RFC 7692 §7.1 and the configuration."""
    bad = []
    if o.snct and not r.snct:
        bad.append("server_no_context_takeover offered but not in the answer")
    if o.smwb and not r.smwb:
        bad.append("server_max_window_bits offered but not answered")
    if o.smwb and r.smwb > o.smwb:
        bad.append("server_max_window_bits answered larger than offered")
    if r.cmwb and not o.cmwb:
        bad.append("client_max_window_bits answered but not offered")
    if r.cmwb == -1:
        bad.append("client_max_window_bits answered without a value")
    if o.cmwb > 0 and r.cmwb > o.cmwb:
        bad.append("client_max_window_bits answered larger than offered")
    if nct and not r.snct:
        bad.append("configured no_context_takeover not announced")
    if peer_nct and not r.cnct:
        bad.append("configured peer_no_context_takeover not asked for")
    if r.smwb and r.smwb > clamp(window_bits):
        bad.append("server window announced larger than ours")
    if o.cmwb and peer_window_bits and (r.cmwb or 15) > clamp(peer_window_bits):
        bad.append("client window not bounded by peer_window_bits")
    return bad


@pytest.mark.parametrize("p", ALL_PARAMS, ids=params_id)
def test_every_offer_with_the_defaults(p: Params) -> None:
    """Every parameter set, offered in canonical order: the exact answer."""
    got = negotiate([offer_text(p)], DEFAULT)
    assert got is not None
    exp = expected_server(p, 12, 12, 0, 0)
    assert got == (header(exp), exp)
    assert rfc_problems(p, got[1], 12, 12, 0, 0) == []


CONFIGS = [
    dict(window_bits=12, peer_window_bits=12, nct=0, peer_nct=0),
    dict(window_bits=9, peer_window_bits=9, nct=0, peer_nct=0),
    dict(window_bits=15, peer_window_bits=15, nct=0, peer_nct=0),
    dict(window_bits=15, peer_window_bits=0, nct=0, peer_nct=0),
    dict(window_bits=10, peer_window_bits=14, nct=1, peer_nct=0),
    dict(window_bits=13, peer_window_bits=0, nct=0, peer_nct=1),
    dict(window_bits=12, peer_window_bits=12, nct=1, peer_nct=1),
    dict(window_bits=11, peer_window_bits=9, nct=1, peer_nct=1),
]


def cfg_id(c: Dict[str, int]) -> str:
    return "w{window_bits}-p{peer_window_bits}-n{nct}{peer_nct}".format(**c)


@pytest.mark.parametrize("reverse", [False, True], ids=["canonical", "reversed"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
def test_every_offer_every_config(cfg: Dict[str, int], reverse: bool) -> None:
    """All 360 parameter sets against one configuration: the exact answer, the RFC's rules,
    and pyws's own client accepts the answer with the same agreed parameters."""
    opts = make_opts(window_bits=cfg["window_bits"], peer_window_bits=cfg["peer_window_bits"],
                     no_context_takeover=cfg["nct"], peer_no_context_takeover=cfg["peer_nct"])
    failures: List[Any] = []
    for p in ALL_PARAMS:
        got = negotiate([offer_text(p, reverse)], opts)
        if got is None:
            failures.append((p, "declined"))
            continue
        exp = expected_server(p, **cfg)
        if got != (header(exp), exp):
            failures.append((p, got, header(exp)))
        problems = rfc_problems(p, got[1], **cfg)
        if problems:
            failures.append((p, got[0], problems))
        # the client that made this offer accepts the answer
        client_opts = make_opts(peer_no_context_takeover=int(p.snct))
        why, accepted, agreed = check([got[0]], client_opts)
        if (why, accepted, agreed) != (None, 1, got[1]):
            failures.append((p, got[0], "client check", why, accepted, agreed))
    assert failures == []


# =========================================================================== client: offers

# (id, opts fields, exact offer)
OFFERS: List[Tuple[str, Dict[str, int], str]] = [
    ("default", {}, "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12, "
                    "permessage-deflate; client_max_window_bits=12"),
    ("off", {"compression": 0}, ""),
    ("off-with-fields", {"compression": 0, "no_context_takeover": 1, "window_bits": 9}, ""),
    ("peer0", {"peer_window_bits": 0}, "permessage-deflate; client_max_window_bits=12"),
    ("peer15", {"peer_window_bits": 15}, "permessage-deflate; client_max_window_bits=12"),
    ("peer9", {"peer_window_bits": 9},
     "permessage-deflate; server_max_window_bits=9; client_max_window_bits=12, "
     "permessage-deflate; client_max_window_bits=12"),
    ("peer14", {"peer_window_bits": 14},
     "permessage-deflate; server_max_window_bits=14; client_max_window_bits=12, "
     "permessage-deflate; client_max_window_bits=12"),
    ("w15", {"window_bits": 15},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits, "
     "permessage-deflate; client_max_window_bits"),
    ("w15-peer0", {"window_bits": 15, "peer_window_bits": 0},
     "permessage-deflate; client_max_window_bits"),
    ("w15-peer15", {"window_bits": 15, "peer_window_bits": 15},
     "permessage-deflate; client_max_window_bits"),
    ("w9-peer9", {"window_bits": 9, "peer_window_bits": 9},
     "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9, "
     "permessage-deflate; client_max_window_bits=9"),
    ("w14-peer0", {"window_bits": 14, "peer_window_bits": 0},
     "permessage-deflate; client_max_window_bits=14"),
    ("nct", {"no_context_takeover": 1},
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=12; "
     "client_max_window_bits=12, "
     "permessage-deflate; client_no_context_takeover; client_max_window_bits=12"),
    ("peer-nct", {"peer_no_context_takeover": 1},
     "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; "
     "client_max_window_bits=12, "
     "permessage-deflate; server_no_context_takeover; client_max_window_bits=12"),
    ("both-nct-w15-peer0", {"no_context_takeover": 1, "peer_no_context_takeover": 1,
                            "window_bits": 15, "peer_window_bits": 0},
     "permessage-deflate; client_no_context_takeover; server_no_context_takeover; "
     "client_max_window_bits"),
    ("both-nct-w10-peer14", {"no_context_takeover": 1, "peer_no_context_takeover": 1,
                             "window_bits": 10, "peer_window_bits": 14},
     "permessage-deflate; client_no_context_takeover; server_no_context_takeover; "
     "server_max_window_bits=14; client_max_window_bits=10, "
     "permessage-deflate; client_no_context_takeover; server_no_context_takeover; "
     "client_max_window_bits=10"),
]


@pytest.mark.parametrize("fields,expected", [pytest.param(f, e, id=i) for i, f, e in OFFERS])
def test_client_offer(fields: Dict[str, int], expected: str) -> None:
    assert offer(make_opts(**fields)) == expected


@pytest.mark.parametrize("cap", [0, 128, 511])
def test_offer_needs_512_bytes(cap: int) -> None:
    out = ffi.new("char[]", max(cap, 1))
    assert lib.pyws_pmd_offer(DEFAULT, out, cap) == ERR_ARG


CLIENT_SETS = [dict(window_bits=w, peer_window_bits=pw, no_context_takeover=n,
                    peer_no_context_takeover=pn)
               for w, pw, n, pn in [(12, 12, 0, 0), (15, 0, 0, 0), (9, 9, 1, 0), (15, 15, 0, 1),
                                    (10, 14, 1, 1), (13, 11, 0, 0), (12, 0, 1, 1),
                                    (14, 9, 0, 1)]]
SERVER_SETS = [dict(window_bits=w, peer_window_bits=pw, no_context_takeover=n,
                    peer_no_context_takeover=pn)
               for w, pw, n, pn in [(12, 12, 0, 0), (15, 0, 0, 0), (9, 9, 0, 0), (15, 15, 1, 1),
                                    (11, 13, 1, 0), (14, 0, 0, 1), (10, 10, 1, 1),
                                    (13, 15, 0, 0)]]


def set_id(d: Dict[str, int]) -> str:
    return "w{window_bits}p{peer_window_bits}n{no_context_takeover}{peer_no_context_takeover}" \
        .format(**d)


@pytest.mark.parametrize("server", SERVER_SETS, ids=set_id)
@pytest.mark.parametrize("client", CLIENT_SETS, ids=set_id)
def test_pyws_offer_pyws_answer_pyws_check(client: Dict[str, int],
                                           server: Dict[str, int]) -> None:
    """pyws's client offer, answered by pyws's server, accepted by pyws's client check with
    the same parameters; and what was asked for was granted."""
    text = offer(make_opts(**client))
    got = negotiate([text], make_opts(**server))
    assert got is not None
    response, agreed = got
    assert check([response], make_opts(**client)) == (None, 1, agreed)
    if client["peer_no_context_takeover"]:
        assert agreed.snct
    if client["no_context_takeover"] or server["peer_no_context_takeover"]:
        assert agreed.cnct
    if server["no_context_takeover"]:
        assert agreed.snct
    # the server's window: no more than either side wants
    asked = client["peer_window_bits"]
    server_window = agreed.smwb or 15
    assert server_window <= clamp(server["window_bits"])
    if asked and asked < 15:
        assert server_window <= asked
    # the client's window: no more than it offered, nor than the server asks
    client_window = agreed.cmwb or 15
    assert client_window <= clamp(client["window_bits"]) or client["window_bits"] == 15
    if server["peer_window_bits"] and server["peer_window_bits"] < clamp(client["window_bits"]):
        assert client_window <= server["peer_window_bits"]


# =========================================================================== client: answers

# (id, header values, opts fields, agreed or None for "answered without the extension")
GOOD_ANSWERS: List[Tuple[str, List[str], Dict[str, int], Optional[Params]]] = [
    ("no-header", [], {}, None),
    ("no-header-off", [], {"compression": 0}, None),
    ("empty-value", [""], {}, None),
    ("only-commas", [" , "], {}, None),
    ("bare", [PMD], {}, Params()),
    ("default-answer", [f"{PMD}; server_max_window_bits=12; client_max_window_bits=12"], {},
     Params(smwb=12, cmwb=12)),
    ("all", [f"{PMD}; server_no_context_takeover; client_no_context_takeover; "
             "server_max_window_bits=9; client_max_window_bits=9"], {},
     Params(True, True, 9, 9)),
    ("all-reversed", [f"{PMD}; client_max_window_bits=9; server_max_window_bits=9; "
                      "client_no_context_takeover; server_no_context_takeover"], {},
     Params(True, True, 9, 9)),
    ("snct-unasked", [f"{PMD}; server_no_context_takeover"], {}, Params(snct=True)),
    ("cnct-unasked", [f"{PMD}; client_no_context_takeover"], {}, Params(cnct=True)),
    ("snct-asked", [f"{PMD}; server_no_context_takeover"], {"peer_no_context_takeover": 1},
     Params(snct=True)),
    ("snct-asked-plus", [f"{PMD}; client_no_context_takeover; server_no_context_takeover"],
     {"peer_no_context_takeover": 1, "no_context_takeover": 1}, Params(True, True)),
    ("smwb-15", [f"{PMD}; server_max_window_bits=15"], {}, Params(smwb=15)),
    ("smwb-8", [f"{PMD}; server_max_window_bits=8"], {}, Params(smwb=8)),
    ("cmwb-8", [f"{PMD}; client_max_window_bits=8"], {}, Params(cmwb=8)),
    ("quoted", [f'{PMD}; server_max_window_bits="10"; client_max_window_bits="11"'], {},
     Params(smwb=10, cmwb=11)),
    ("quoted-escaped", [f'{PMD}; server_max_window_bits="1\\3"'], {}, Params(smwb=13)),
    ("case", ["Permessage-Deflate; Server_Max_Window_Bits=10; CLIENT_NO_CONTEXT_TAKEOVER"], {},
     Params(cnct=True, smwb=10)),
    ("whitespace", [f" \t{PMD} ;server_max_window_bits = 10\t; client_max_window_bits=9 "], {},
     Params(smwb=10, cmwb=9)),
    ("empty-elements", [f", {PMD}; server_max_window_bits=11 ,"], {}, Params(smwb=11)),
    ("empty-then-pmd", ["", f"{PMD}; client_max_window_bits=10"], {}, Params(cmwb=10)),
    ("peer0-answer", [f"{PMD}; client_max_window_bits=12"], {"peer_window_bits": 0},
     Params(cmwb=12)),
    ("w15-answer", [PMD], {"window_bits": 15, "peer_window_bits": 0}, Params()),
] + [
    (f"smwb-{n}", [f"{PMD}; server_max_window_bits={n}"], {}, Params(smwb=n))
    for n in range(8, 16)
] + [
    (f"cmwb-{n}", [f"{PMD}; client_max_window_bits={n}"], {}, Params(cmwb=n))
    for n in range(8, 16)
]


@pytest.mark.parametrize("values,fields,agreed",
                         [pytest.param(v, f, a, id=i) for i, v, f, a in GOOD_ANSWERS])
def test_client_accepts(values: List[str], fields: Dict[str, int],
                        agreed: Optional[Params]) -> None:
    why, accepted, got = check(values, make_opts(**fields))
    assert why is None
    if agreed is None:
        assert (accepted, got) == (0, Params())
    else:
        assert (accepted, got) == (1, agreed)


# (id, header values, opts fields, reason)
BAD_ANSWERS: List[Tuple[str, List[str], Dict[str, int], str]] = [
    # an extension while compression is off (nothing was offered)
    ("off-bare", [PMD], {"compression": 0}, R_NOT_OFFERED),
    ("off-full", [f"{PMD}; server_max_window_bits=12; client_max_window_bits=12"],
     {"compression": 0}, R_NOT_OFFERED),
    ("off-other", ["x-foo"], {"compression": 0}, R_NOT_OFFERED),
    # an extension other than permessage-deflate
    ("other", ["x-webkit-deflate-frame"], {}, R_NOT_OFFERED),
    ("other-params", ["deflate-frame; no_context_takeover"], {}, R_NOT_OFFERED),
    ("pmd-suffix", ["permessage-deflate-x"], {}, R_NOT_OFFERED),
    ("pmd-then-other", [f"{PMD}, x-foo"], {}, R_NOT_OFFERED),
    ("other-then-pmd", [f"x-foo, {PMD}"], {}, R_NOT_OFFERED),
    ("other-value-then-pmd", ["x-foo", PMD], {}, R_NOT_OFFERED),
    # permessage-deflate twice
    ("twice", [f"{PMD}, {PMD}"], {}, R_TWICE),
    ("twice-values", [PMD, PMD], {}, R_TWICE),
    ("twice-different", [f"{PMD}; server_max_window_bits=10",
                         f"{PMD}; client_max_window_bits=10"], {}, R_TWICE),
    ("twice-case", [f"{PMD}, PERMESSAGE-DEFLATE"], {}, R_TWICE),
    # unknown parameters
    ("unknown", [f"{PMD}; foo"], {}, R_UNKNOWN),
    ("unknown-valued", [f"{PMD}; foo=1"], {}, R_UNKNOWN),
    ("unknown-after", [f"{PMD}; server_max_window_bits=10; mode=fast"], {}, R_UNKNOWN),
    ("unknown-dashes", [f"{PMD}; server-no-context-takeover"], {}, R_UNKNOWN),
    # duplicate parameters
    ("dup-snct", [f"{PMD}; server_no_context_takeover; server_no_context_takeover"], {},
     R_REPEAT),
    ("dup-cnct", [f"{PMD}; client_no_context_takeover; Client_No_Context_Takeover"], {},
     R_REPEAT),
    ("dup-smwb", [f"{PMD}; server_max_window_bits=10; server_max_window_bits=10"], {},
     R_REPEAT),
    ("dup-cmwb", [f"{PMD}; client_max_window_bits=10; client_max_window_bits=11"], {},
     R_REPEAT),
    # values where none is allowed, values missing or out of range
    ("snct-valued", [f"{PMD}; server_no_context_takeover=1"], {}, R_VALUE),
    ("cnct-quoted", [f'{PMD}; client_no_context_takeover=""'], {}, R_VALUE),
    ("smwb-novalue", [f"{PMD}; server_max_window_bits"], {}, R_VALUE),
] + [
    (f"{short}={bad}", [f"{PMD}; {name}={bad}"], {}, R_VALUE)
    for short, name in (("smwb", "server_max_window_bits"), ("cmwb", "client_max_window_bits"))
    for bad in ("7", "16", "08", "-9", "abc", "0", "015", '""', '"16"', '" 9"')
] + [
    # client_max_window_bits without a value (only an offer may say that)
    ("cmwb-novalue", [f"{PMD}; client_max_window_bits"], {}, R_NO_VALUE),
    ("cmwb-novalue-more", [f"{PMD}; server_max_window_bits=10; client_max_window_bits"], {},
     R_NO_VALUE),
    # we asked for server_no_context_takeover and the answer lacks it
    ("snct-missing", [PMD], {"peer_no_context_takeover": 1}, R_SNCT),
    ("snct-missing-cnct", [f"{PMD}; client_no_context_takeover; server_max_window_bits=12"],
     {"peer_no_context_takeover": 1}, R_SNCT),
    # malformed syntax
    ("malformed-semicolon", [f"{PMD};"], {}, R_MALFORMED),
    ("malformed-empty-param", [f"{PMD}; ;"], {}, R_MALFORMED),
    ("malformed-no-separator", [f"{PMD} server_no_context_takeover"], {}, R_MALFORMED),
    ("malformed-empty-value", [f"{PMD}; server_max_window_bits="], {}, R_MALFORMED),
    ("malformed-unterminated", [f'{PMD}; server_max_window_bits="10'], {}, R_MALFORMED),
    ("malformed-no-name", [f"{PMD}; =10"], {}, R_MALFORMED),
    ("malformed-leading", [f";{PMD}"], {}, R_MALFORMED),
    ("malformed-quoted-name", [f'"{PMD}"'], {}, R_MALFORMED),
    ("malformed-space-in-value", [f"{PMD}; server_max_window_bits=1 0"], {}, R_MALFORMED),
    ("malformed-after-valid", [f"{PMD}; server_max_window_bits=10;"], {}, R_MALFORMED),
    ("malformed-second-value", ["", ";"], {}, R_MALFORMED),
]


@pytest.mark.parametrize("values,fields,reason",
                         [pytest.param(v, f, r, id=i) for i, v, f, r in BAD_ANSWERS])
def test_client_refuses(values: List[str], fields: Dict[str, int], reason: str) -> None:
    why, accepted, _ = check(values, make_opts(**fields))
    assert why == reason
    assert accepted == 0


# =========================================================================== format

@pytest.mark.parametrize("p", ALL_PARAMS, ids=params_id)
def test_format_round_trip(p: Params) -> None:
    """Every parameter set formats to the exact header value, and the client check parses it
    back to the same parameters (client_max_window_bits without a value is refused: only an
    offer may carry it)."""
    n, text = c_format(p)
    assert text == header(p)
    assert n == len(text)
    why, accepted, agreed = check([text], DEFAULT)
    if p.cmwb == -1:
        assert (why, accepted) == (R_NO_VALUE, 0)
    else:
        assert (why, accepted, agreed) == (None, 1, p)


@pytest.mark.parametrize("cap", [128, 129, 130, 160])
def test_format_never_writes_a_cut_value(cap: int) -> None:
    """The longest value (128 characters) at caps around it and the documented minimum
    (PYWS_PMD_MAX_LEN): either refused (PYWS_ERR_ARG) or written whole, never cut short."""
    p = Params(True, True, 15, 15)
    assert header(p) == LONGEST
    n, text = c_format(p, cap=cap)
    if cap >= 160:
        assert n >= 0
    if n >= 0:
        assert (n, text) == (len(LONGEST), LONGEST)
    else:
        assert n == ERR_ARG


@pytest.mark.parametrize("cap", [0, 1, 127, 159])
def test_format_needs_pmd_max_len_bytes(cap: int) -> None:
    n, _ = c_format(Params(), cap=cap)
    assert n == ERR_ARG
