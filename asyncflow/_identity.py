"""Run identity: run ids (derived and validated), code fingerprints, step fingerprints.

A run id names a run in every store: a file name in :class:`~asyncflow.stores.FileStore`, a key
or a column in others. So it is a plain, short name, checked once by the engine before any store
sees it. Without ``run_id=``, the engine derives it from the flow's name and the run inputs as
the store's codec encodes them, so the same call names the same run in every process.

A step's checkpoint is identified by its step fingerprint: a digest of its code fingerprint,
of the digest of each dependency's encoded output, and of the digest of each run input it takes.
It never depends on execution order.

Code fingerprints: a digest of what a step runs that is the same in every process.

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
import json
import linecache
import re
import types
from typing import TYPE_CHECKING

from ._codec import JsonCodec
from ._errors import InvalidRunIdError, RunInputError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from ._codec import Codec

__all__ = [
    "MAX_RUN_ID",
    "UnstableFingerprintError",
    "canonical_inputs",
    "code_fingerprint",
    "derive_run_id",
    "digest",
    "encode_inputs",
    "is_run_id",
    "lazy_code_fingerprint",
    "step_fingerprint",
    "subflow_run_id",
    "validate_run_id",
]

# -- run ids ---------------------------------------------------------------------------------

#: The longest run id: a file name is at most 255 bytes, and ``.corrupt-<n>`` must fit after it.
MAX_RUN_ID = 200
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+=,~-]*")


def is_run_id(text: str) -> bool:
    """Whether ``text`` is a valid run id (see :func:`validate_run_id`)."""
    return len(text) <= MAX_RUN_ID and RUN_ID_PATTERN.fullmatch(text) is not None


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` when it is a safe, plain name: ``<run_id>.json`` names its run file.

    Every run file name ends in ``.json``, while the store's own names start with a dot
    (``.journal``) or end otherwise (``.tmp``, ``.corrupt-<n>``), so no valid id collides with them.

    Raises:
        InvalidRunIdError: empty, too long, a path (a slash or backslash, ``..``), a leading dot, NUL or
            other characters outside ``A-Z a-z 0-9 _ . @ + = , ~ -``.
    """
    if not isinstance(run_id, str):
        raise InvalidRunIdError(
            f"A run id is a string; got {type(run_id).__name__} {run_id!r}.", run_id=str(run_id)
        )
    if is_run_id(run_id):
        return run_id
    if not run_id:
        problem = "is empty"
    elif len(run_id) > MAX_RUN_ID:
        problem = f"is {len(run_id)} characters long, over the limit of {MAX_RUN_ID}"
    elif run_id.startswith("."):
        problem = "starts with a dot (hidden files, '.' and '..' are not run ids)"
    elif "/" in run_id or "\\" in run_id:
        problem = "contains a path separator"
    elif "\x00" in run_id:
        problem = "contains a NUL byte"
    else:
        bad = sorted({c for c in run_id if not RUN_ID_PATTERN.fullmatch("a" + c)})
        problem = f"contains {', '.join(map(repr, bad))}"
    raise InvalidRunIdError(
        f"Run id {run_id[:80]!r} {problem}. A run id names a file of checkpoints: use up to "
        f"{MAX_RUN_ID} of A-Z a-z 0-9 _ . @ + = , ~ - and do not start with a dot, "
        f"e.g. 'doc-42'.",
        run_id=run_id,
    )


_PLAIN = frozenset({str, int, float, bool, type(None)})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@+=,~-]+")
_ITEM = re.compile(r"\[(\d+)\]$")
_canonical_json = JsonCodec().encode


def derive_run_id(
    flow: str,
    inputs: Mapping[str, object],
    codec: Codec | None = None,
    *,
    encoded: Mapping[str, str] | None = None,
) -> str:
    """A run id from the flow's name and its inputs, the same in every process.

    Inputs are encoded canonically with the store's ``codec`` (:class:`JsonCodec` without a
    store: sorted keys and sets), so the id does not depend on dict order or hash seeds. With
    :class:`JsonCodec`, inputs it cannot encode fall back to their ``repr``, which is stable
    only when the ``repr`` is. The flow name is made safe for a file name.

    Args:
        flow: the flow's name.
        inputs: the run inputs.
        codec: the store's codec; ``None`` without a store.
        encoded: the inputs as ``codec`` encodes them (:func:`encode_inputs`), when already
            encoded.

    Raises:
        RunInputError: an input can be neither encoded nor ``repr``-ed (nested too deeply, or
            its ``__repr__`` raised), or the store's codec cannot encode it; its name is in
            ``err.invalid``.
    """
    if codec is None or type(codec) is JsonCodec:
        # The text JsonCodec makes, as every derived id has been so far.
        key = _inputs_key(inputs)
    else:
        if encoded is None:
            encoded = encode_inputs(codec, inputs)
        key = canonical_inputs(encoded).encode()
    return validate_run_id(f"{_safe_name(flow)}-{hashlib.blake2b(key, digest_size=10).hexdigest()}")


def subflow_run_id(parent: str, step: str, key: str | None = None) -> str:
    """The run id of a sub-flow started by ``step`` (``"enrich[3]"`` for an item) of ``parent``.

    ``"<parent>.<step>"`` (``.<key>`` appended when given), made safe; past the length limit,
    the start of it and a digest of the whole.
    """
    name = _ITEM.sub(r".\1", step)
    parts = [parent, _UNSAFE.sub("_", name).strip("_") or "step"]
    if key is not None:
        parts.append(_UNSAFE.sub("_", key) or "_")
    text = ".".join(parts)
    if len(text) > MAX_RUN_ID:
        tail = hashlib.blake2b(text.encode(), digest_size=10).hexdigest()
        text = f"{text[: MAX_RUN_ID - len(tail) - 1]}~{tail}"
    return validate_run_id(text)


def encode_inputs(codec: Codec, inputs: Mapping[str, object]) -> dict[str, str]:
    """Encode each run input, by name, with the store's codec.

    Raises:
        RunInputError: an input cannot be encoded, so the run could not be resumed.
    """
    encoded: dict[str, str] = {}
    for name, value in inputs.items():
        try:
            text = codec.encode(value)
            if not text.isascii():
                text.encode("utf-8")  # the store writes UTF-8: a lone surrogate fails here
        except Exception as exc:
            raise RunInputError(
                f"Run input {name!r} ({type(value).__name__}) cannot be checkpointed: {exc} "
                f"Pass inputs the store's codec can encode, or run with Engine(store=None).",
                invalid=(name,),
            ) from exc
        encoded[name] = text
    return encoded


def canonical_inputs(encoded: Mapping[str, str]) -> str:
    """One JSON object of encoded inputs, keys sorted: the manifest's ``inputs`` text."""
    items = sorted(encoded.items())
    return "{" + ",".join(f"{_quoted(k)}:{v}" for k, v in items) + "}"


@functools.lru_cache(maxsize=1024)
def _quoted(name: str) -> str:
    return json.dumps(name)


def _inputs_key(inputs: Mapping[str, object]) -> bytes:
    if all(type(v) in _PLAIN for v in inputs.values()):
        # The common case, fast: for plain values this is the very text JsonCodec makes.
        try:
            return json.dumps(
                inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode()
        except ValueError:  # NaN, infinity, a huge int or a lone surrogate: the codec decides
            pass
    try:
        return _canonical_json(dict(inputs)).encode()
    except (TypeError, ValueError):  # a type it cannot store, a cycle, too deep
        pass
    try:
        # surrogatepass: a __repr__ may return a lone surrogate; other text is plain UTF-8.
        return repr(sorted(inputs.items(), key=lambda kv: kv[0])).encode("utf-8", "surrogatepass")
    except Exception as exc:
        raise _underivable(inputs, exc) from exc


def _underivable(inputs: Mapping[str, object], exc: Exception) -> RunInputError:
    """The error for inputs no run id can be derived from, naming the input at fault."""
    culprits = sorted(inputs)  # all of them, unless one alone can be neither encoded nor repr-ed
    for name in sorted(inputs):
        try:
            _canonical_json(inputs[name])
            continue
        except (TypeError, ValueError):
            pass
        try:
            repr(inputs[name])
        except Exception as e:
            exc, culprits = e, [name]
            break
    if isinstance(exc, RecursionError):
        reason = "it is nested too deeply for JsonCodec and for repr()"
    else:
        reason = f"JsonCodec cannot encode it and its repr() raised {exc!r:.200}"
    return RunInputError(
        f"Cannot derive a run id from run input {', '.join(map(repr, culprits))}: {reason}. "
        f"Pass run_id= explicitly, or an input JsonCodec can encode.",
        invalid=tuple(culprits),
    )


@functools.lru_cache(maxsize=256)
def _safe_name(flow: str) -> str:
    return _UNSAFE.sub("_", flow).lstrip(".")[:100] or "run"


# -- step fingerprints -----------------------------------------------------------------------


def digest(text: str) -> str:
    """The digest of a checkpointed text (an output, an input), as its UTF-8 bytes.

    Raises:
        UnicodeEncodeError: ``text`` holds a lone surrogate, which no store can write.
    """
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def step_fingerprint(
    code: str,
    data_deps: Iterable[tuple[str, int]],
    output_digests: Sequence[str | None],
    inputs_taken: Iterable[str],
    input_digests: Mapping[str, str],
    version: str | None = None,
) -> str:
    """The identity of one step of one run, whatever order the run's steps finished in.

    Args:
        code: the step's code fingerprint.
        data_deps: (parameter, step index) for each data dependency.
        output_digests: the digest of each step's encoded output, by index.
        inputs_taken: the run inputs the step takes.
        input_digests: the digest of each encoded run input given (absent: left to its default).
        version: the step's declared version; ``None`` leaves the identity as without one.
    """
    parts = [code] if version is None else [code, f"v:{version}"]
    for name, j in data_deps:
        parts.append(f"d:{name}={output_digests[j]}")
    for name in inputs_taken:
        parts.append(f"i:{name}={input_digests.get(name, '<default>')}")
    return digest("\x00".join(parts))


# -- code fingerprints -----------------------------------------------------------------------

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
    return _digest_text(_callable_text(fn, 0))


def lazy_code_fingerprint(fn: object) -> Callable[[], str] | None:
    """How to take :func:`code_fingerprint` of ``fn`` later; ``None`` when it must be now.

    Taking a fingerprint reads the function's source, which costs ~0.2 ms a step; a flow needs
    them only once it runs with a store. For a plain function whose source file is in
    :mod:`linecache`, the file's lines are held as they are now (linecache's own list, checked
    as ``inspect.getsource`` checks it), so taking it later gives the same text as now. Should
    the file change in between, the source no longer shows the code that runs: the code
    object's fingerprint is taken instead (invalidating checkpoints, never reusing one of other
    code).
    """
    target = inspect.unwrap(fn) if callable(fn) else fn
    if type(target) is not types.FunctionType:
        return None
    filename = target.__code__.co_filename
    if filename.startswith("<") and filename.endswith(">"):
        return None
    linecache.checkcache(filename)
    lines = linecache.getlines(filename, target.__globals__)
    if not lines:
        return None

    def take() -> str:
        linecache.checkcache(filename)
        now = linecache.getlines(filename, target.__globals__)
        if now is lines or now == lines:
            return code_fingerprint(fn)
        return _digest_text(_code_object_text(target, 0))

    return take


def _digest_text(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


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
    return _code_object_text(fn, depth)


def _code_object_text(fn: object, depth: int) -> str:
    """The text of what ``fn`` runs, from its code object (no source)."""
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
