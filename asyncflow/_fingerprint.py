"""Code fingerprints: a digest of what a step runs that is the same in every process.

A step's checkpoint is valid only while its code fingerprint is unchanged, so the digest may
depend on nothing that changes between processes: no memory addresses, no set order (which
follows the hash seed for strings), no file positions. It is taken from:

- a function's source text, when ``inspect`` can find it (decorated functions are unwrapped,
  as ``inspect.getsource`` does);
- otherwise its code object, canonically: bytecode, names, constants (nested code recursed,
  sets sorted) and its defaults;
- for a ``functools.partial``, the wrapped function's fingerprint and a canonical form of the
  bound arguments;
- for a bound method, its function: the instance is state, not code, and is left out.

A value that has no stable form (an object whose repr shows its address) raises
:class:`UnstableFingerprintError`; the flow turns it into a :class:`FlowDefinitionError`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import re
import types

__all__ = ["UnstableFingerprintError", "code_fingerprint"]

#: Beyond this nesting a bound argument is refused rather than risk the recursion limit.
MAX_DEPTH = 100

_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]+")
_SCALARS = (type(None), type(Ellipsis), bool, int, float, complex, str, bytes)


class UnstableFingerprintError(ValueError):
    """A step holds a value whose text differs between processes; the message says which."""


def code_fingerprint(fn: object) -> str:
    """Fingerprint what ``fn`` runs, the same in every process.

    Raises:
        UnstableFingerprintError: ``fn`` binds a value with no stable text.
    """
    return hashlib.blake2b(_callable_text(fn, 0).encode(), digest_size=12).hexdigest()


def _callable_text(fn: object, depth: int) -> str:
    if isinstance(fn, functools.partial):
        keywords = sorted(fn.keywords.items())
        return (
            f"partial({_callable_text(fn.func, depth + 1)}, "
            f"{_canonical(fn.args, depth + 1)}, {_canonical(tuple(keywords), depth + 1)})"
        )
    try:
        # The text as before, so checkpoints of functions with source stay valid.
        return inspect.getsource(fn)  # type: ignore[arg-type]
    except (OSError, TypeError):
        pass
    target = inspect.unwrap(fn) if callable(fn) else fn
    if inspect.ismethod(target):
        return _callable_text(target.__func__, depth + 1)
    if isinstance(target, types.FunctionType):
        defaults = (target.__defaults__, sorted((target.__kwdefaults__ or {}).items()))
        return f"{_code_text(target.__code__, depth + 1)} {_canonical(defaults, depth + 1)}"
    # A callable instance (marked with inspect.markcoroutinefunction): its class's __call__.
    call = next(
        (c.__dict__["__call__"] for c in type(target).__mro__ if "__call__" in c.__dict__), None
    )
    if isinstance(call, types.FunctionType):
        return f"call({_callable_text(call, depth + 1)})"
    return _canonical(target, depth + 1)


def _code_text(code: types.CodeType, depth: int) -> str:
    # Positions (file, line numbers) are left out, as the source text leaves them out.
    parts = (
        code.co_name,
        code.co_code.hex(),
        code.co_exceptiontable.hex(),
        repr(code.co_names),
        repr(code.co_varnames),
        repr(code.co_freevars),
        repr(code.co_cellvars),
        f"{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount},{code.co_flags}",
        _canonical(code.co_consts, depth + 1),
    )
    return f"code({' '.join(parts)})"


def _canonical(value: object, depth: int) -> str:
    """Text for ``value`` that is equal in every process for equal values."""
    if depth > MAX_DEPTH:
        raise UnstableFingerprintError(
            f"a bound value is nested more than {MAX_DEPTH} levels deep (or contains itself)"
        )
    kind = type(value)
    if kind in _SCALARS:
        # repr is exact for these, floats included (repr round-trips).
        return f"{kind.__name__}:{value!r}"
    if isinstance(value, types.CodeType):
        return _code_text(value, depth + 1)
    if isinstance(value, (tuple, list)):
        return f"{kind.__qualname__}({','.join(_canonical(v, depth + 1) for v in value)})"
    if isinstance(value, (set, frozenset)):
        # Set order follows the hash seed: sort by the canonical text instead.
        items = sorted(_canonical(v, depth + 1) for v in value)
        return f"{kind.__qualname__}({','.join(items)})"
    if isinstance(value, dict):
        entries = sorted(
            f"{_canonical(k, depth + 1)}:{_canonical(v, depth + 1)}" for k, v in value.items()
        )
        return f"{kind.__qualname__}({','.join(entries)})"
    if isinstance(value, enum.Enum):
        return f"enum:{_qualified(kind)}.{value.name}"
    if isinstance(value, type):
        return f"type:{_qualified(value)}"
    if isinstance(value, (types.FunctionType, types.MethodType, functools.partial)):
        return f"fn:{_callable_text(value, depth + 1)}"
    if callable(value) and hasattr(value, "__qualname__"):
        # Builtins and other named callables without Python code.
        return f"callable:{_qualified(value)}"
    if dataclasses.is_dataclass(value):
        fields = ",".join(
            f"{f.name}={_canonical(getattr(value, f.name), depth + 1)}"
            for f in dataclasses.fields(value)
        )
        return f"{_qualified(kind)}({fields})"
    text = repr(value)
    if kind.__repr__ is object.__repr__ or _ADDRESS.search(text):
        raise UnstableFingerprintError(
            f"{text} has no stable text: its repr shows a memory address, which differs in "
            f"every process"
        )
    return f"{_qualified(kind)}:{text}"


def _qualified(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"
