"""Results and events across a process boundary, errors intact.

Plain pickle keeps an exception's type and ``args`` but drops its ``__cause__``, its
``__context__`` and its ``__notes__``, and cannot rebuild one whose ``__init__`` takes keyword-only
arguments (every asyncflow error). Here each exception travels as its type, its ``args``, its
attributes and its causes, and is rebuilt without calling ``__init__``. An exception whose type
cannot be imported on the other side travels as an :class:`~asyncflow.ExecutorError` with the
type's name, the message and the same chain; an attribute that cannot be pickled is left out.

Times (``anyio.current_time()`` readings) are per process: the receiver moves them onto its own
clock by the difference between the two clocks at sending time (off by the transit time).
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from typing import TYPE_CHECKING, Any

from asyncflow._errors import ExecutorError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from asyncflow._result import RunResult, StepResult
    from asyncflow.events import Event

__all__ = ["dumps", "loads", "shift_event", "shift_result"]

PROTOCOL = pickle.HIGHEST_PROTOCOL


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseException):
            return _reduce_exception(obj)
        return NotImplemented


def dumps(value: object) -> bytes:
    """Pickle ``value``, every exception in it with its type, attributes and chain.

    Raises:
        pickle.PicklingError, TypeError, AttributeError: something other than an exception's
            attribute cannot be pickled.
    """
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=PROTOCOL).dump(value)
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    """Unpickle what :func:`dumps` made."""
    return pickle.loads(data)


def _picklable(value: object) -> bool:
    try:
        dumps(value)
    except Exception:
        return False
    return True


def _reduce_exception(exc: BaseException) -> tuple[object, tuple[object, ...]]:
    cls = type(exc)
    state = {k: v for k, v in getattr(exc, "__dict__", {}).items() if _picklable(v)}
    args = exc.args if _picklable(exc.args) else (str(exc),)
    chain = (exc.__cause__, exc.__context__, exc.__suppress_context__)
    try:
        pickle.dumps(cls, protocol=PROTOCOL)  # importable by its qualified name
    except Exception:
        name = f"{cls.__module__}.{cls.__qualname__}"
        return _remote, (name, str(exc), *chain)
    return _rebuild, (cls, args, state, *chain)


def _rebuild(
    cls: type[BaseException],
    args: tuple[object, ...],
    state: dict[str, object],
    cause: BaseException | None,
    context: BaseException | None,
    suppress: bool,
) -> BaseException:
    exc = cls.__new__(cls, *args)
    exc.args = args
    try:
        vars(exc).update(state)
    except TypeError:  # a type without a __dict__ (slots): only its args travel
        pass
    exc.__cause__, exc.__context__, exc.__suppress_context__ = cause, context, suppress
    return exc


def _remote(
    name: str,
    message: str,
    cause: BaseException | None,
    context: BaseException | None,
    suppress: bool,
) -> BaseException:
    exc = ExecutorError(f"{name}: {message}", remote_type=name)
    exc.__cause__, exc.__context__, exc.__suppress_context__ = cause, context, suppress
    return exc


def shift_result(result: RunResult, by: float, inputs: Mapping[str, object]) -> RunResult:
    """``result`` with its times moved by ``by`` seconds and the given ``inputs``."""
    steps = {
        name: _shift_step(step, by) if step.started_at is not None else step
        for name, step in result.steps.items()
    }
    return dataclasses.replace(
        result,
        steps=steps,
        started_at=result.started_at + by,
        finished_at=result.finished_at + by,
        inputs=dict(inputs),
    )


def _shift_step(step: StepResult, by: float) -> StepResult:
    finished = None if step.finished_at is None else step.finished_at + by
    assert step.started_at is not None
    return dataclasses.replace(step, started_at=step.started_at + by, finished_at=finished)


def shift_event(event: Event, by: float) -> Event:
    """``event`` with its ``time`` moved by ``by`` seconds."""
    return dataclasses.replace(event, time=event.time + by)


def shift_events(events: Sequence[Event], by: float) -> list[Event]:
    """Each of ``events`` moved by ``by`` seconds."""
    return [shift_event(e, by) for e in events]
