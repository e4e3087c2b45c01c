"""Write switchyard plugins in Python.

A plugin module (``app.py``) defines a class with ``init`` and one of ``keep`` (a
filter), ``route`` (a router) or ``transform``, and exports it with the matching helper;
componentize-py builds it into a WebAssembly component (``switchyard plugin build``
runs it with the right flags)::

    import switchyard_plugin as switchyard

    class Paid(switchyard.Filter):
        def init(self, config):
            self.status = config.get("equals", "paid")

        def keep(self, event):
            return event.lookup("after.status") == self.status

    WitWorld = switchyard.export_filter(Paid)

What the helpers do for a plugin:

- unpack the packed batch the host hands in into ``Event`` objects (fields decoded, the
  JSON payload parsed once on first use);
- parse the config JSON for ``init``;
- turn an exception into an error result with its message, and a log line carrying the
  message and where it was raised: switchyard then handles the batch by the plugin's
  ``on_error`` instead of seeing a bare trap;
- send ``print`` and ``sys.stderr`` to switchyard's log (a plugin has no stdout of its
  own).

Outside a component (``python3 -m unittest``), the same module works on plain Python:
``log`` writes to stderr and ``Event.from_jsonl`` reads sample events, so a plugin's
logic is unit-tested natively.
"""

import base64
import inspect
import json
import sys

try:
    from wit_world.imports import host as _host
    from wit_world.imports import types as _types
    from componentize_py_types import Err as _Err

    IN_COMPONENT = True
except ImportError:  # natively, in unit tests
    _host = _types = _Err = None
    IN_COMPONENT = False

_LEVELS = ("trace", "debug", "info", "warn", "error")


def log(level, message):
    """Writes a line to switchyard's log at ``level`` (trace, debug, info, warn, error)."""
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}")
    if IN_COMPONENT:
        _host.log(_host.Level[level.upper()], str(message))
    else:
        sys.__stderr__.write(f"[{level}] {message}\n")


def trace(message):
    log("trace", message)


def debug(message):
    log("debug", message)


def info(message):
    log("info", message)


def warn(message):
    log("warn", message)


def error(message):
    log("error", message)


class _LogWriter:
    """A text stream whose lines become log lines."""

    def __init__(self, level):
        self.level = level
        self.pending = ""

    def write(self, text):
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            log(self.level, line)
        if len(self.pending) > 4096:
            log(self.level, self.pending)
            self.pending = ""
        return len(text)

    def flush(self):
        pass


if IN_COMPONENT:
    sys.stdout = _LogWriter("info")
    sys.stderr = _LogWriter("warn")


def deny_unknown_keys(config, known):
    """Raises if ``config`` holds a key not in ``known``: a typo in the config file then
    stops switchyard from starting with a message naming the key, instead of being ignored."""
    for key in config:
        if key not in known:
            raise ValueError(
                f"unknown key `{key}` in the plugin's config; known keys: {', '.join(known)}"
            )


def lookup(value, path):
    """Reads ``path`` ("after.status", "items.0.sku") in a parsed JSON value; None if absent."""
    at = value
    for part in str(path).split("."):
        if isinstance(at, dict):
            at = at.get(part)
        elif isinstance(at, list) and part.isdigit() and int(part) < len(at):
            at = at[int(part)]
        else:
            return None
        if at is None:
            return None
    return at


_MISSING = object()
_CHANGE_KINDS = ("insert", "update", "delete", "truncate")


class Event:
    """One event, as switchyard carries it."""

    __slots__ = (
        "id",
        "source",
        "kind",
        "key",
        "payload",
        "content_type",
        "headers",
        "timestamp_ms",
        "_json",
    )

    def __init__(
        self,
        payload=b"",
        *,
        id="",
        source="",
        kind="message",
        key=None,
        content_type="application/json",
        headers=None,
        timestamp_ms=0,
    ):
        #: Unique id: deduplicate on it.
        self.id = id
        #: Name of the source that produced it.
        self.source = source
        #: ``message``, or ``insert``/``update``/``delete``/``truncate``/``schema`` for changes.
        self.kind = kind
        #: Partition and order key (bytes), or None.
        self.key = key
        #: The body (bytes).
        self.payload = payload.encode() if isinstance(payload, str) else bytes(payload)
        #: MIME type of the payload.
        self.content_type = content_type
        #: Metadata: a list of (name, value) pairs.
        self.headers = list(headers or [])
        #: Event time in milliseconds since the Unix epoch.
        self.timestamp_ms = int(timestamp_ms)
        self._json = _MISSING

    @classmethod
    def json_message(cls, value, **fields):
        """A JSON event whose payload is ``value``."""
        return cls(json.dumps(value, separators=(",", ":")), **fields)

    @classmethod
    def from_wire(cls, value):
        """An event from switchyard's JSON wire form (one line of a stdout or file sink)."""
        payload = value.get("payload")
        if value.get("payload_encoding") == "base64":
            payload = base64.b64decode(payload or "")
        elif isinstance(payload, str) and value.get("content_type", "").startswith("text/"):
            payload = payload.encode()
        else:
            payload = json.dumps(payload, separators=(",", ":")).encode()
        key = value.get("key")
        if key is not None and value.get("key_encoding") == "base64":
            key = base64.b64decode(key)
        elif key is not None:
            key = str(key).encode()
        headers = value.get("headers") or {}
        return cls(
            payload,
            id=value.get("id", ""),
            source=value.get("source", ""),
            kind=value.get("kind", "message"),
            key=key,
            content_type=value.get("content_type", "application/json"),
            headers=[(n, str(v)) for n, v in headers.items()],
            timestamp_ms=value.get("timestamp_ms", 0),
        )

    @classmethod
    def from_jsonl(cls, text):
        """Events from JSON lines in the wire form (e.g. the sample ``events.jsonl``)."""
        return [cls.from_wire(json.loads(line)) for line in text.splitlines() if line.strip()]

    def text(self):
        """The payload as text."""
        return self.payload.decode("utf-8", "replace")

    def json(self):
        """The payload parsed as JSON (once), or None if it is not JSON."""
        if self._json is _MISSING:
            try:
                self._json = json.loads(self.payload)
            except ValueError:
                self._json = None
        return self._json

    def set_json(self, value):
        """Replaces the payload with ``value`` as JSON."""
        self.payload = json.dumps(value, separators=(",", ":")).encode()
        self._json = value

    def lookup(self, path):
        """A field of the JSON payload by dotted path, or None."""
        return lookup(self.json(), path)

    def key_text(self):
        """The key as text, or None."""
        return None if self.key is None else self.key.decode("utf-8", "replace")

    def header(self, name):
        """The first header named ``name``, or None."""
        return next((v for n, v in self.headers if n == name), None)

    def set_header(self, name, value):
        """Sets header ``name`` to ``value``, replacing any others of that name."""
        self.headers = [(n, v) for n, v in self.headers if n != name]
        self.headers.append((name, str(value)))

    def is_change(self):
        """Whether this is a database change (insert, update, delete, truncate)."""
        return self.kind in _CHANGE_KINDS

    def table(self):
        """``(schema, table)`` of a database change, or None."""
        value = self.json() if self.is_change() else None
        if isinstance(value, dict) and isinstance(value.get("schema"), str):
            if isinstance(value.get("table"), str):
                return value["schema"], value["table"]
        return None

    def to_wit(self):
        """The event as the host takes it back from a transform."""
        return _types.Event(
            id=str(self.id),
            source=str(self.source),
            kind=str(self.kind),
            key=None if self.key is None else bytes(self.key),
            payload=bytes(self.payload),
            content_type=str(self.content_type),
            headers=[_types.Header(name=str(n), value=str(v)) for n, v in self.headers],
            timestamp_ms=max(0, int(self.timestamp_ms)),
        )

    def __repr__(self):
        return f"Event(id={self.id!r}, kind={self.kind!r}, payload={self.text()[:80]!r})"


def unpack(batch):
    """The events of a packed batch (see ``record batch`` in wit/plugin.wit)."""
    data, ends, counts, has_key = batch.data, batch.ends, batch.header_counts, batch.has_key
    events = []
    field = 0
    start = 0
    for i, timestamp in enumerate(batch.timestamps_ms):
        n = 6 + 2 * counts[i]
        parts = []
        for end in ends[field : field + n]:
            parts.append(data[start:end])
            start = end
        field += n
        headers = [
            (parts[j].decode("utf-8", "replace"), parts[j + 1].decode("utf-8", "replace"))
            for j in range(6, n, 2)
        ]
        events.append(
            Event(
                parts[4],
                id=parts[0].decode("utf-8", "replace"),
                source=parts[1].decode("utf-8", "replace"),
                kind=parts[2].decode("utf-8", "replace"),
                key=parts[3] if has_key[i] else None,
                content_type=parts[5].decode("utf-8", "replace"),
                headers=headers,
                timestamp_ms=timestamp,
            )
        )
    return events


class Filter:
    """Base of a filter: ``keep(event)`` returns True to keep the event."""

    def init(self, config):
        """Runs once per instance with the plugin's ``config`` table (a dict)."""

    def keep(self, event):
        raise NotImplementedError("a filter defines keep(self, event) -> bool")


class Router:
    """Base of a router: ``route(event)`` returns the names of the sinks it goes to."""

    def init(self, config):
        """Runs once per instance with the plugin's ``config`` table (a dict)."""

    def route(self, event):
        raise NotImplementedError("a router defines route(self, event) -> list of sink names")


class Transform:
    """Base of a transform: ``transform(event)`` returns the events that replace it."""

    def init(self, config):
        """Runs once per instance with the plugin's ``config`` table (a dict)."""

    def transform(self, event):
        raise NotImplementedError("a transform defines transform(self, event) -> list of Event")


def _failed(where, exc):
    """Logs ``exc`` with where it was raised and returns the message for the error result."""
    message = f"{where}: {type(exc).__name__}: {exc}"
    # The innermost frame, read off the traceback itself: `traceback` would read the
    # source file, and a component has no files.
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    at = ""
    if tb is not None:
        code = tb.tb_frame.f_code
        at = f" (at {code.co_filename}:{tb.tb_lineno} in {code.co_name})"
    log("error", message + at)
    return message


def _raise_err(where, exc):
    message = _failed(where, exc)
    if IN_COMPONENT:
        raise _Err(message)
    raise RuntimeError(message) from exc


def _settled(value):
    """A plugin call is synchronous: a coroutine (an `async def`) is not a decision."""
    if inspect.isawaitable(value):
        if hasattr(value, "close"):
            value.close()
        raise TypeError("returned an awaitable: plugin methods must be plain functions, not async")
    return value


def _world(cls, method, decide):
    """A componentize-py ``WitWorld`` class running ``cls``: one instance, made at ``init``."""

    class World:
        plugin = None

        def init(self, config):
            try:
                World.plugin = cls()
                _settled(World.plugin.init(json.loads(config or "{}")))
            except Exception as exc:  # noqa: BLE001 - every error becomes an err result
                World.plugin = None
                _raise_err("init", exc)

        def call(self, batch):
            if World.plugin is None:
                _raise_err(method, RuntimeError("called before a successful init"))
            try:
                return [decide(World.plugin, event) for event in unpack(batch)]
            except Exception as exc:  # noqa: BLE001
                _raise_err(method, exc)

    setattr(World, method, World.call)
    World.__name__ = "WitWorld"
    return World


def export_filter(cls):
    """The ``WitWorld`` of a filter plugin: ``WitWorld = export_filter(MyFilter)``."""
    return _world(cls, "filter", lambda p, e: bool(_settled(p.keep(e))))


def export_router(cls):
    """The ``WitWorld`` of a router plugin: ``WitWorld = export_router(MyRouter)``."""
    return _world(cls, "route", _sinks)


def _sinks(plugin, event):
    sinks = _settled(plugin.route(event)) or []
    # One sink name on its own, not a list of its letters.
    if isinstance(sinks, str):
        return [sinks]
    return [str(s) for s in sinks]


def _replacements(plugin, event):
    out = _settled(plugin.transform(event))
    if out is None:
        return []
    if isinstance(out, Event):
        out = [out]
    return [e.to_wit() for e in out]


def export_transform(cls):
    """The ``WitWorld`` of a transform plugin: ``WitWorld = export_transform(MyTransform)``."""
    return _world(cls, "transform", _replacements)
