"""LogObserver: an engine's events as stdlib log lines with structured ``extra`` fields."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from asyncflow._errors import StepError
from asyncflow._status import CircuitState, RunStatus
from asyncflow.events import (
    CheckpointDiscarded,
    CircuitStateChanged,
    RunFinished,
    RunStarted,
    StepFailed,
    StepRestored,
    StepRetrying,
    TriggerInvalid,
    TriggerRejected,
)

from ._redact import redact_urls

if TYPE_CHECKING:
    from collections.abc import Callable

    from asyncflow.events import Event

__all__ = ["LogObserver"]


def describe(error: BaseException) -> tuple[str, str]:
    """The error's type name and the first line of its message, with URLs redacted.

    A plain :class:`StepError` (not a subclass like :class:`StepTimeoutError`, which says what
    happened itself) stands for its ``__cause__``, the step's own error: that is described.
    """
    if type(error) is StepError and error.__cause__ is not None:
        error = error.__cause__
    message = str(error).strip().partition("\n")[0]
    return type(error).__name__, redact_urls(message)


class LogObserver:
    """An observer that logs what an engine does to the ``asyncflow`` logger.

    Register it like any observer: ``Engine(observers=[LogObserver()])``. Lines, and their
    levels:

    - run started and run succeeded: ``DEBUG``; run failed or cancelled: ``WARNING``;
    - a step failed for good (after its retries): ``WARNING``, with the error's type and message;
    - a retry (step, attempt, error, wait): ``retry_level``, ``INFO`` by default;
    - steps restored from checkpoints, one line per run that restored any: ``INFO``;
    - a host's circuit changed: ``WARNING`` when it opens, ``INFO`` otherwise;
    - a checkpoint file moved aside as unusable: ``WARNING``.

    So at ``INFO`` a healthy batch is quiet but for its retries. Every record carries ``extra``
    fields a structured formatter can use: ``run_id``, ``flow`` and ``step`` where they apply,
    ``attempt``, ``wait`` (seconds), ``error_type``, ``host``, ``status``, ``restored``.
    Error messages are cut to their first line and URLs in them lose credentials, query
    strings and fragments (:func:`~asyncflow.observe.redact_urls`); step inputs and outputs are
    never logged.

    Args:
        logger: the logger, or its name; ``"asyncflow"`` by default. A library leaves handlers
            to the application: configure this logger (or the root) to see the lines.
        retry_level: the level of retry lines.
    """

    __slots__ = ("_handlers", "_logger", "_retry_level", "_runs")

    def __init__(
        self, logger: logging.Logger | str = "asyncflow", *, retry_level: int = logging.INFO
    ) -> None:
        self._logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self._retry_level = retry_level
        # run id -> [flow, steps restored], for the runs in flight: the events of steps do not
        # name the flow, and the restore summary is written when the run ends.
        self._runs: dict[str, list[str | int]] = {}
        # By exact type: events are final dataclasses, and one lookup beats a chain of
        # isinstance checks on the events that make no line (most of them).
        self._handlers: dict[type, Callable[[Any], None]] = {
            RunStarted: self._run_started,
            RunFinished: self._finished,
            StepRestored: self._step_restored,
            StepRetrying: self._step_retrying,
            StepFailed: self._step_failed,
            CircuitStateChanged: self._circuit_changed,
            CheckpointDiscarded: self._checkpoint_discarded,
            TriggerInvalid: self._trigger_refused,
            TriggerRejected: self._trigger_refused,
        }

    @property
    def logger(self) -> logging.Logger:
        """The logger lines go to."""
        return self._logger

    def __call__(self, event: Event, /) -> None:
        """Log one event; an event that makes no line (a step started or succeeded) costs a lookup."""
        handle = self._handlers.get(type(event))
        if handle is not None:
            handle(event)

    def _run_started(self, event: RunStarted) -> None:
        self._runs[event.run_id] = [event.flow, 0]
        self._log(
            logging.DEBUG,
            "run %s of %s started",
            (event.run_id, event.flow),
            run_id=event.run_id,
            flow=event.flow,
        )

    def _step_restored(self, event: StepRestored) -> None:
        state = self._runs.get(event.run_id)
        if state is not None:
            state[1] = int(state[1]) + 1

    def _step_retrying(self, event: StepRetrying) -> None:
        if not self._logger.isEnabledFor(self._retry_level):
            return
        error_type, message = describe(event.error)
        flow = self._flow(event.run_id)
        self._log(
            self._retry_level,
            "step %s of run %s (%s): attempt %d failed with %s: %s; retrying in %.2fs",
            (event.step, event.run_id, flow, event.attempt, error_type, message, event.wait),
            run_id=event.run_id,
            flow=flow,
            step=event.step,
            attempt=event.attempt,
            wait=event.wait,
            error_type=error_type,
        )

    def _step_failed(self, event: StepFailed) -> None:
        if not self._logger.isEnabledFor(logging.WARNING):
            return
        error_type, message = describe(event.error)
        flow = self._flow(event.run_id)
        plural = "" if event.attempts == 1 else "s"
        self._log(
            logging.WARNING,
            "step %s of run %s (%s) failed after %d attempt%s: %s: %s",
            (event.step, event.run_id, flow, event.attempts, plural, error_type, message),
            run_id=event.run_id,
            flow=flow,
            step=event.step,
            attempt=event.attempts,
            error_type=error_type,
        )

    def _circuit_changed(self, event: CircuitStateChanged) -> None:
        level = logging.WARNING if event.new is CircuitState.OPEN else logging.INFO
        self._log(
            level,
            "circuit of %s: %s -> %s",
            (event.host, event.old.value, event.new.value),
            host=event.host,
            old=event.old.value,
            new=event.new.value,
        )

    def _checkpoint_discarded(self, event: CheckpointDiscarded) -> None:
        self._log(
            logging.WARNING,
            "run %s: checkpoint %s moved aside: %s",
            (event.run_id, event.path, event.reason),
            run_id=event.run_id,
            step=event.step,
        )

    def _flow(self, run_id: str) -> str:
        state = self._runs.get(run_id)
        return "?" if state is None else str(state[0])

    def _finished(self, event: RunFinished) -> None:
        state = self._runs.pop(event.run_id, None)
        restored = 0 if state is None else int(state[1])
        if restored:
            self._log(
                logging.INFO,
                "run %s of %s: %d step%s restored from checkpoints",
                (event.run_id, event.flow, restored, "" if restored == 1 else "s"),
                run_id=event.run_id,
                flow=event.flow,
                restored=restored,
            )
        level = logging.DEBUG if event.status is RunStatus.SUCCEEDED else logging.WARNING
        self._log(
            level,
            "run %s of %s %s",
            (event.run_id, event.flow, event.status.value),
            run_id=event.run_id,
            flow=event.flow,
            status=event.status.value,
        )

    def _trigger_refused(self, event: TriggerInvalid | TriggerRejected) -> None:
        # An invalid event will never run: a warning. A rejected one may be offered again.
        invalid = isinstance(event, TriggerInvalid)
        self._log(
            logging.WARNING if invalid else logging.INFO,
            "trigger %s: event %s %s: %s",
            (event.trigger, event.run_id, "invalid" if invalid else "rejected", event.reason),
            run_id=event.run_id,
            flow=event.flow,
            trigger=event.trigger,
        )

    def _log(self, level: int, msg: str, args: tuple[object, ...], **extra: object) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, msg, *args, extra=extra)
