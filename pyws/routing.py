"""Route patterns and handler signatures, checked when a route is registered.

Two spellings of a path parameter, mixable in one pattern:

- ``{name}``, ``{name:int}``, ``{name:path}`` (pyws's first syntax);
- ``<name>``, ``<int:name>``, ``<path:name>`` (Flask's and Gobstopper's).

Converters: ``str`` (alias ``string``; the default: one path segment, no ``/``), ``int``
(``-?[0-9]+``, handed over as int), ``float`` (``-?[0-9]+(.[0-9]+)?``, as float), ``path``
(anything, ``/`` included, at least one character), ``uuid`` (as :class:`uuid.UUID`).

A handler's signature is matched against its pattern once, at registration: the first
parameter is the WebSocket (or, for HTTP routes, the request); each further parameter must be
a path parameter of the pattern (passed by keyword), the request (a parameter named
``request`` or ``req``, or annotated :class:`pyws.Request`; a path parameter of the same name
wins), take a default, or be ``**kwargs`` (which gets the path parameters no other parameter
named). Anything else raises at registration with what to write instead.
"""
from __future__ import annotations

import inspect
import re
import uuid
from typing import Any, Callable, Dict, List, Optional, Pattern, Sequence, Tuple
from urllib.parse import unquote

from .request import Request

__all__ = ["Route", "CONVERTERS"]

#: converter name -> (regex, function applied to the percent-decoded text)
CONVERTERS: Dict[str, Tuple[str, Callable[[str], Any]]] = {
    "str": (r"[^/]+", str),
    "string": (r"[^/]+", str),
    "int": (r"-?[0-9]+", int),
    "float": (r"-?[0-9]+(?:\.[0-9]+)?", float),
    "path": (r".+", str),
    "uuid": (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
             uuid.UUID),
}
_KNOWN = ", ".join(k for k in CONVERTERS if k != "string")

_BRACE = re.compile(r"\{([^{}<>]*)\}")
_ANGLE = re.compile(r"<([^{}<>]*)>")
_REQUEST_NAMES = ("request", "req")


def _param_error(pattern: str, token: str, why: str, fix: str) -> ValueError:
    return ValueError(f"route {pattern!r}: {token!r} {why}; write {fix}")


def parse_pattern(pattern: str) -> Tuple[str, List[Tuple[str, str]]]:
    """``pattern`` -> (regex source, [(name, converter)]). Raises ValueError, saying what to
    write instead, for a malformed parameter, an unknown converter or a name used twice."""
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise ValueError(f"route {pattern!r} must start with '/' (write '/{pattern}')"
                         if isinstance(pattern, str) else
                         f"a route is a str starting with '/', not {type(pattern).__name__}")
    regex, pos = "", 0
    params: List[Tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch in "{<":
            m = (_BRACE if ch == "{" else _ANGLE).match(pattern, i)
            if m is None:
                close = "}" if ch == "{" else ">"
                raise ValueError(
                    f"route {pattern!r}: the {ch!r} at position {i} has no matching {close!r}; "
                    f"write a parameter as {{name}}, {{name:int}}, <name> or <int:name>")
            token, body = m.group(0), m.group(1).strip()
            if ch == "{":
                name, sep, conv = body.partition(":")
                if sep and not conv:
                    raise _param_error(pattern, token, "has an empty converter",
                                       f"{{{name}}} or {{{name}:int}}")
            else:
                conv, sep, name = body.rpartition(":")
                if sep and not conv:
                    raise _param_error(pattern, token, "has an empty converter",
                                       f"<{name}> or <int:{name}>")
            name, conv = name.strip(), conv.strip() or "str"
            if not name:
                example = f"<{conv}:name>" if ch == "<" else f"{{name:{conv}}}"
                raise _param_error(pattern, token, "has no parameter name", example)
            if not name.isidentifier():
                raise _param_error(pattern, token, f"names the parameter {name!r}, which is "
                                   "not a Python identifier (it becomes a keyword argument)",
                                   "a name of letters, digits and _, not starting with a digit")
            if conv not in CONVERTERS:
                raise ValueError(f"route {pattern!r}: {token!r} uses the unknown converter "
                                 f"{conv!r}; the converters are {_KNOWN}")
            if any(n == name for n, _ in params):
                raise ValueError(f"route {pattern!r}: the parameter {name!r} appears twice; "
                                 "give each parameter its own name")
            regex += re.escape(pattern[pos:i]) + f"(?P<{name}>{CONVERTERS[conv][0]})"
            params.append((name, conv))
            i = pos = m.end()
            continue
        if ch in "}>":
            raise ValueError(f"route {pattern!r}: the {ch!r} at position {i} closes nothing; "
                             "write a parameter as {name}, {name:int}, <name> or <int:name>")
        i += 1
    regex += re.escape(pattern[pos:])
    return regex, params


def _is_request_annotation(ann: Any) -> bool:
    if ann is Request:
        return True
    if isinstance(ann, str):
        return ann.strip("'\"") in ("Request", "pyws.Request", "pyws.request.Request")
    return False


def bind_handler(pattern: str, fn: Callable[..., Any], names: Sequence[str],
                 first: str = "ws") -> Optional[Callable[[Any, Dict[str, Any], Request],
                                                           Dict[str, Any]]]:
    """Check ``fn``'s signature against the path parameters ``names`` of ``pattern``.

    Returns None when ``fn`` takes only its first argument (call it as ``fn(ws)``), else a
    function ``kwargs(first_arg, params, request)`` giving the keyword arguments to add.
    Raises TypeError, saying what to write instead, when the signature cannot work."""
    label = getattr(fn, "__qualname__", None) or repr(fn)
    try:
        sig = inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return None  # a builtin or an odd callable: called as fn(first) as before
    except ValueError:
        return None
    ps = list(sig.parameters.values())
    if not ps or ps[0].kind not in (inspect.Parameter.POSITIONAL_ONLY,
                                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    inspect.Parameter.VAR_POSITIONAL):
        raise TypeError(f"handler {label} for route {pattern!r} takes no positional parameter "
                        f"for the {first}: write def {getattr(fn, '__name__', 'handler')}"
                        f"({first}{''.join(', ' + n for n in names)})")
    request_arg: Optional[str] = None
    named: List[str] = []
    var_kw = False
    rest = ps[1:] if ps[0].kind != inspect.Parameter.VAR_POSITIONAL else ps
    for p in rest:
        if p.kind == inspect.Parameter.VAR_POSITIONAL:
            continue
        if p.kind == inspect.Parameter.VAR_KEYWORD:
            var_kw = True
            continue
        wanted = p.name in names
        is_request = not wanted and (p.name in _REQUEST_NAMES or
                                     _is_request_annotation(p.annotation))
        if (wanted or is_request) and p.kind == inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"handler {label} for route {pattern!r}: parameter {p.name!r} is "
                            "positional-only, but path parameters and the request are passed "
                            "by keyword; remove the '/' from the signature")
        if wanted:
            named.append(p.name)
        elif is_request:
            if request_arg is not None:
                raise TypeError(f"handler {label} for route {pattern!r} asks for the request "
                                f"twice ({request_arg!r} and {p.name!r}); keep one")
            request_arg = p.name
        elif p.default is inspect.Parameter.empty:
            have = ", ".join(names) if names else "none"
            raise TypeError(
                f"handler {label} for route {pattern!r}: parameter {p.name!r} is neither a "
                f"path parameter of the route (it has: {have}) nor the request; add "
                f"<{p.name}> (or {{{p.name}}}) to the route, name it after one of the "
                "route's parameters, call it 'request' to get the request, or give it a "
                "default")
    extra = [n for n in names if n not in named] if var_kw else []
    if not named and request_arg is None and not extra:
        return None
    pass_names = tuple(named) + tuple(extra)

    def kwargs(_first: Any, params: Dict[str, Any], request: Request) -> Dict[str, Any]:
        kw = {n: params[n] for n in pass_names}
        if request_arg is not None:
            kw[request_arg] = request
        return kw

    return kwargs


def _anon(regex: str) -> str:
    return re.sub(r"\(\?P<[^>]+>", "(", regex)


class Route:
    """A path pattern like ``/rooms/{room}``, ``/rooms/<room>``, ``/items/<int:id>`` or
    ``/files/{rest:path}`` (see :mod:`pyws.routing` for the syntax and converters) with its
    handler. A malformed pattern raises ValueError here, at registration."""

    __slots__ = ("pattern", "regex", "converters", "handler", "methods", "names", "kwargs",
                 "driver")

    def __init__(self, pattern: str, handler: Callable[..., Any],
                 methods: Optional[Sequence[str]] = None) -> None:
        source, params = parse_pattern(pattern)
        self.pattern = pattern
        self.handler = handler
        self.methods = {m.upper() for m in methods} if methods else None
        self.converters: Dict[str, Callable[[str], Any]] = {
            n: CONVERTERS[c][1] for n, c in params}
        #: the path parameters' names, in order
        self.names: Tuple[str, ...] = tuple(n for n, _ in params)
        self.regex: Pattern[str] = re.compile(f"^{source}$")
        #: set by App: what to pass the handler besides its first argument (None: nothing)
        self.kwargs: Optional[Callable[[Any, Dict[str, Any], Request], Dict[str, Any]]] = None
        #: set by App for WebSocket routes: "generator", "async" or "thread"
        self.driver = ""

    def match(self, path: str) -> Optional[Dict[str, Any]]:
        """The parameters if ``path`` (as sent, percent-encoded) matches, else None."""
        m = self.regex.match(path)
        if m is None:
            return None
        # the pattern matched the raw path (so an encoded "/" stays inside one parameter);
        # the values handed to the handler are percent-decoded
        try:
            return {k: self.converters[k](unquote(v)) for k, v in m.groupdict().items()}
        except ValueError:
            return None  # e.g. a uuid that the regex let through but uuid.UUID refuses

    def same_as(self, other: "Route") -> bool:
        """True if both match exactly the same paths (the same pattern up to spelling and
        parameter names)."""
        return _anon(self.regex.pattern) == _anon(other.regex.pattern)

    def __repr__(self) -> str:
        return f"<Route {self.pattern}>"
