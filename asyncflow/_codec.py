"""Codecs turn step outputs and run inputs into JSON text for checkpoints, and back.

The default :class:`JsonCodec` never pickles and never imports: a checkpoint file is data, so
reading one cannot run code that the program did not already load.

What :class:`JsonCodec` round-trips (``decode(encode(x)) == x`` with the same type):

=====================================  ==========================================================
Python value                           JSON text
=====================================  ==========================================================
``None``, ``bool``, ``int``, ``str``   themselves, except as below
``int`` of more than 4,300 digits      ``{"$int": "0x<hex>"}`` (Python's default limit on decimal
                                       digits, ``sys.int_info.default_max_str_digits``)
``str`` with a lone surrogate          ``{"$str": ["text", 56575, ...]}``: the surrogates (what
                                       ``os.fsdecode`` makes of bytes that are not UTF-8) as code
                                       points, so the text is always valid UTF-8
``float``                              itself; ``nan``/``inf`` as ``{"$float": "nan"}``
``list``                               an array
``dict`` with ``str`` keys             an object (keys sorted); a key starting with ``$``, or any
                                       non-``str`` key, gives ``{"$dict": [[key, value], ...]}``
``tuple``, ``set``, ``frozenset``      ``{"$tuple": [...]}``, ``{"$set": [...]}`` (sorted),
                                       ``{"$frozenset": [...]}``
``bytes``                              ``{"$bytes": "<base64>"}``
``datetime``, ``date``, ``time``       ``{"$datetime": "<ISO 8601>"}`` (time zone kept), ...
``timedelta``                          ``{"$timedelta": [days, seconds, microseconds]}``
``Decimal``, ``UUID``                  ``{"$decimal": "1.10"}``, ``{"$uuid": "..."}``
``pathlib`` paths                      ``{"$path": "a/b"}``, decoded as :class:`pathlib.Path`
dataclass instances                    ``{"$dataclass": ["module:QualName", {field: value}]}``
``enum.Enum`` members                  ``{"$enum": ["module:QualName", value]}``
=====================================  ==========================================================

Dataclasses and enums decode only when their module is already imported (it is, whenever the
flow that returned them is loaded); the codec looks the class up in ``sys.modules`` and never
imports. Anything else (including subclasses of ``list``/``dict``/``str``, which would silently
come back as the base type) raises :class:`TypeError` on encode; a value that holds itself (a
cycle) or is nested deeper than Python's recursion limit raises :class:`ValueError`. Encoding is
canonical: equal values give equal text, so the text can be fingerprinted. Dict key order is
therefore not kept.

To store other types, pass your own codec: any object with ``encode(value) -> str`` returning
JSON text and ``decode(text) -> object``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import json
import math
import pathlib
import re
import sys
import uuid
from decimal import Decimal
from typing import Any, Protocol, cast

__all__ = ["Codec", "JsonCodec"]


class Codec(Protocol):
    """Turns values into JSON text and back. Equal values must give equal text."""

    def encode(self, value: object, /) -> str:
        """Return JSON text for ``value``, encodable as UTF-8 (no lone surrogates).

        Raise :class:`TypeError` or :class:`ValueError` for what cannot be encoded.
        """

    def decode(self, text: str, /) -> object:
        """Return the value ``text`` encodes; raise :class:`ValueError` for text it cannot read."""


_NATIVE = frozenset({str, int, bool, type(None)})
_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
).encode


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _lookup(path: object, kind: str) -> Any:
    if not isinstance(path, str) or ":" not in path:
        raise ValueError(f"malformed {kind} reference {path!r}")
    module_name, _, qualname = path.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        raise ValueError(
            f"{kind} {path!r} lives in module {module_name!r}, which is not imported; the codec "
            f"never imports modules. Import it before resuming."
        )
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"{kind} {path!r} no longer exists")
    return obj


def _sort_key(item: object) -> str:
    try:
        return _dumps(item)
    except ValueError:  # an int too long for decimal digits
        return _dumps(_escape(item))


#: Ints this far from zero have more digits than Python converts to decimal by default, so
#: neither json.dumps nor json.loads take them: they are written in hex. A fixed bound, not
#: this process's limit, so that the text is the same in every process.
_DECIMAL_BOUND = 10**sys.int_info.default_max_str_digits
_SURROGATE = re.compile("([\ud800-\udfff])")


def _escape(obj: object) -> object:
    """``obj`` (as ``_to_json`` returns it) with lone surrogates and huge ints in tagged forms.

    The slow path: only for text that json cannot write, or that would not be UTF-8.
    """
    t = type(obj)
    if t is str:
        s: str = obj  # type: ignore[assignment]
        if _SURROGATE.search(s) is None:
            return s
        parts = _SURROGATE.split(s)
        # split() alternates text and one surrogate: the odd items are the surrogates.
        return {"$str": [p if i % 2 == 0 else ord(p) for i, p in enumerate(parts) if p]}
    if t is int:
        n: int = obj  # type: ignore[assignment]
        return n if -_DECIMAL_BOUND < n < _DECIMAL_BOUND else {"$int": format(n, "#x")}
    if t is list:
        return [_escape(v) for v in cast("list[object]", obj)]
    if t is dict:
        d: dict[str, object] = obj  # type: ignore[assignment]
        if len(d) == 1 and next(iter(d)).startswith("$"):  # a tag, plain ASCII: only its value
            return {k: _escape(v) for k, v in d.items()}
        if any(_SURROGATE.search(k) for k in d):
            pairs = [[_escape(k), _escape(v)] for k, v in d.items()]
            pairs.sort(key=_sort_key)
            return {"$dict": pairs}
        return {k: _escape(v) for k, v in d.items()}
    return obj


def _label(key: object) -> str:
    """A dict key as error messages show it."""
    try:
        return repr(key)
    except Exception:  # an int too long for decimal digits, a key nested too deeply, ...
        return f"<a {type(key).__qualname__} key>"


def _members(obj: object) -> list[tuple[str, object]] | None:
    """What ``_to_json`` walks into, with where each sits; None for a leaf."""
    t = type(obj)
    if t is list or t is tuple:
        return [(f"[{i}]", v) for i, v in enumerate(cast("list[object]", obj))]
    if t is dict:
        d: dict[object, object] = obj  # type: ignore[assignment]
        return [(" key", k) for k in d] + [(f"[{_label(k)}]", v) for k, v in d.items()]
    if t is set or t is frozenset:
        return [(" item", v) for v in cast("set[object]", obj)]
    if isinstance(obj, enum.Enum):
        return [(".value", obj.value)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [(f".{f.name}", getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    return None


def _find_cycle(value: object, where: str) -> str | None:
    """Where ``value`` holds itself, as ``"output[1] is output"``; None when it does not.

    Depth-first without recursion (it runs when recursion failed), each object explored once.
    """
    top = _members(value)
    if top is None:
        return None
    stack = [iter(top)]
    path = [value]  # the objects being explored, outermost first
    labels = [where]  # where each of them sits, relative to the one before
    depth = {id(value): 0}
    done: set[int] = set()
    while stack:
        for label, child in stack[-1]:
            if id(child) in depth:
                at = "".join(labels[: depth[id(child)] + 1])
                return f"{''.join(labels)}{label} is {at}"
            members = None if id(child) in done else _members(child)
            if members is not None:
                depth[id(child)] = len(path)
                path.append(child)
                labels.append(label)
                stack.append(iter(members))
                break
        else:
            stack.pop()
            finished = path.pop()
            labels.pop()
            del depth[id(finished)]
            done.add(id(finished))
    return None


def _too_deep(value: object, where: str) -> ValueError:
    cycle = _find_cycle(value, where)
    if cycle is not None:
        return ValueError(
            f"{cycle}: the value holds itself (a cycle), which JSON cannot store. Break the "
            f"cycle, or pass a codec that handles it: FileStore(..., codec=MyCodec())."
        )
    return ValueError(
        f"{where} is nested too deeply to store as JSON (past Python's recursion limit, "
        f"{sys.getrecursionlimit()} frames). Flatten it, or pass a codec that handles it: "
        f"FileStore(..., codec=MyCodec())."
    )


class JsonCodec:
    """The default codec: readable JSON with tagged forms for common types (see module doc)."""

    __slots__ = ()

    def encode(self, value: object, /) -> str:
        """Return canonical JSON text for ``value``.

        The text is always valid UTF-8: a string with a lone surrogate takes a tagged form.

        Raises:
            TypeError: ``value`` holds something this codec cannot round-trip; the message names
                its type and where it sits.
            ValueError: ``value`` holds itself (a cycle) or is nested too deeply.
        """
        try:
            obj = self._to_json(value, "output")
            try:
                text = _dumps(obj)
                if not text.isascii():
                    text.encode("utf-8")  # fails on a lone surrogate; ASCII text cannot hold one
            except ValueError:  # that UnicodeEncodeError, or an int too long for decimal digits
                text = _dumps(_escape(obj))
        except RecursionError:
            raise _too_deep(value, "output") from None
        return text

    def decode(self, text: str, /) -> object:
        """Return the value ``text`` encodes.

        Raises:
            ValueError: ``text`` is not JSON, or names a class that is not available.
        """
        return json.loads(text, object_hook=self._from_json)

    def _to_json(self, obj: object, where: str) -> object:
        t = type(obj)
        if t in _NATIVE:
            return obj
        if t is float:
            f: float = obj  # type: ignore[assignment]
            return f if math.isfinite(f) else {"$float": repr(f)}
        # Leaves of a native type are taken as they are: most outputs are dicts and lists of
        # them, and building each one's location (for error messages) would cost more.
        if t is list or t is tuple:
            seq = cast("list[object]", obj)
            items = [
                v if type(v) in _NATIVE else self._to_json(v, f"{where}[{i}]")
                for i, v in enumerate(seq)
            ]
            return items if t is list else {"$tuple": items}
        if t is dict:
            d: dict[object, object] = obj  # type: ignore[assignment]
            if all(type(k) is str and not k.startswith("$") for k in d):
                return {
                    k: v if type(v) in _NATIVE else self._to_json(v, f"{where}[{k!r}]")
                    for k, v in d.items()
                }
            pairs = []
            for k, v in d.items():
                at = _label(k)
                pairs.append(
                    [self._to_json(k, f"{where} key {at}"), self._to_json(v, f"{where}[{at}]")]
                )
            pairs.sort(key=_sort_key)
            return {"$dict": pairs}
        if t is set or t is frozenset:
            members = cast("set[object]", obj)
            items = sorted((self._to_json(v, f"{where} item") for v in members), key=_sort_key)
            return {"$set" if t is set else "$frozenset": items}
        if t is bytes:
            return {"$bytes": base64.b64encode(obj).decode("ascii")}  # type: ignore[arg-type]
        if t is dt.datetime:
            return {"$datetime": obj.isoformat()}  # type: ignore[attr-defined]
        if t is dt.date:
            return {"$date": obj.isoformat()}  # type: ignore[attr-defined]
        if t is dt.time:
            return {"$time": obj.isoformat()}  # type: ignore[attr-defined]
        if t is dt.timedelta:
            return {"$timedelta": [obj.days, obj.seconds, obj.microseconds]}  # type: ignore[attr-defined]
        if t is Decimal:
            return {"$decimal": str(obj)}
        if t is uuid.UUID:
            return {"$uuid": str(obj)}
        if isinstance(obj, pathlib.PurePath):
            return {"$path": obj.as_posix()}
        if isinstance(obj, enum.Enum):
            return {"$enum": [_class_path(t), self._to_json(obj.value, f"{where}.value")]}
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            fields = {
                f.name: self._to_json(getattr(obj, f.name), f"{where}.{f.name}")
                for f in dataclasses.fields(obj)
            }
            return {"$dataclass": [_class_path(t), fields]}
        raise TypeError(
            f"{where} is a {t.__module__}.{t.__qualname__}, which JsonCodec cannot store. "
            f"Return a dataclass, dict, list or another supported type (see asyncflow.JsonCodec), "
            f"or pass a codec that handles it: FileStore(..., codec=MyCodec())."
        )

    @staticmethod
    def _from_json(d: dict[str, Any]) -> object:
        if len(d) != 1:
            return d
        ((tag, v),) = d.items()
        if not tag.startswith("$"):
            return d
        if tag == "$tuple":
            return tuple(v)
        if tag == "$dict":
            return {k: val for k, val in v}
        if tag == "$set":
            return set(v)
        if tag == "$frozenset":
            return frozenset(v)
        if tag == "$bytes":
            return base64.b64decode(v, validate=True)
        if tag == "$datetime":
            return dt.datetime.fromisoformat(v)
        if tag == "$date":
            return dt.date.fromisoformat(v)
        if tag == "$time":
            return dt.time.fromisoformat(v)
        if tag == "$timedelta":
            return dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2])
        if tag == "$decimal":
            return Decimal(v)
        if tag == "$uuid":
            return uuid.UUID(v)
        if tag == "$path":
            return pathlib.Path(v)
        if tag == "$float":
            return float(v)
        if tag == "$int":
            if type(v) is not str:
                raise ValueError(f"malformed $int {v!r}")
            return int(v, 16)
        if tag == "$str":
            if type(v) is not list or not all(
                type(p) is str or (type(p) is int and 0xD800 <= p <= 0xDFFF) for p in v
            ):
                raise ValueError(f"malformed $str {v!r:.80}")
            return "".join(p if type(p) is str else chr(p) for p in v)
        if tag == "$enum":
            cls = _lookup(v[0], "enum")
            if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
                raise ValueError(f"{v[0]!r} is not an Enum")
            return cls(v[1])
        if tag == "$dataclass":
            cls = _lookup(v[0], "dataclass")
            if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
                raise ValueError(f"{v[0]!r} is not a dataclass")
            values: dict[str, object] = v[1]
            fields = dataclasses.fields(cls)
            if {f.name for f in fields} != set(values):
                raise ValueError(f"the fields of {v[0]!r} changed since the checkpoint was written")
            if all(f.init for f in fields):
                return cls(**values)
            # init=False fields: build without __init__, as dataclasses.replace cannot.
            inst = object.__new__(cls)
            for name, value in values.items():
                object.__setattr__(inst, name, value)
            return inst
        raise ValueError(f"unknown tag {tag!r}: written by a newer asyncflow or another program")
