"""The whole asyncflow exception tree.

::

    AsyncflowError
    ├── FlowDefinitionError      the flow is not a valid DAG of async steps (raised before any I/O)
    ├── RunInputError            a run was called with missing, unexpected or invalid inputs
    ├── InvalidRunIdError        a run id that is not a safe, plain name
    ├── FlowRefError             a flow reference that is malformed or names no importable Flow
    ├── StepError                a step failed; .step names it, __cause__ is the original error
    │   ├── StepTimeoutError     an attempt ran past the step's timeout
    │   ├── CheckpointEncodeError  the step's output cannot be checkpointed
    │   └── FanOutError          items of a mapped step failed; .failed holds them by index
    ├── SubflowDepthError        sub-flows nested past the depth limit (a flow calling itself)
    ├── RunFailedError           raised by RunResult.raise_for_status(); .errors holds each step's
    ├── CircuitOpenError         a host's circuit is open: the request was not sent
    ├── CheckpointError          the checkpoint store cannot be read or written
    │   └── LeaseLostError       another owner took the run over: this one's writes are refused
    └── ExecutorError            an executor could not run a run or bring its result back

Every message says what happened and what to do about it; the data also lives on attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


class AsyncflowError(Exception):
    """Base class of every error asyncflow raises."""


class FlowDefinitionError(AsyncflowError):
    """The flow is not valid: raised when it is built or first validated, before any step runs.

    Attributes:
        flow: the flow's name.
        step: the step at fault, when there is one.
    """

    def __init__(self, message: str, *, flow: str, step: str | None = None) -> None:
        super().__init__(message)
        self.flow = flow
        self.step = step


class RunInputError(AsyncflowError, TypeError):
    """A run was called with missing, unexpected or unusable inputs; raised before any step starts.

    Attributes:
        missing: input names the flow needs and the call did not give.
        unexpected: names the call gave that no step takes.
        invalid: inputs given that cannot be used: the store's codec cannot encode them, or (with
            no ``run_id=``) no run id can be derived from them.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: tuple[str, ...] = (),
        unexpected: tuple[str, ...] = (),
        invalid: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.invalid = invalid


class InvalidRunIdError(AsyncflowError, ValueError):
    """A run id that could escape the checkpoint directory or is not a plain name."""

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class FlowRefError(AsyncflowError, ValueError):
    """A :class:`~asyncflow.FlowRef` that is malformed, or does not lead to an importable Flow.

    Attributes:
        ref: the reference (or the part of it) at fault, as text.
    """

    def __init__(self, message: str, *, ref: str) -> None:
        super().__init__(message)
        self.ref = ref


class StepError(AsyncflowError):
    """A step failed. The original exception is ``__cause__``.

    Attributes:
        step: the step's name.
        attempts: how many attempts were made.
    """

    def __init__(self, message: str, *, step: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.step = step
        self.attempts = attempts


class StepTimeoutError(StepError, TimeoutError):
    """An attempt of a step ran past its ``timeout=``."""

    def __init__(self, *, step: str, timeout: float, attempt: int = 1) -> None:
        super().__init__(
            f"Step {step!r} timed out after {timeout:g} s (attempt {attempt}). "
            f"Raise its timeout= or make the call faster.",
            step=step,
            attempts=attempt,
        )
        self.timeout = timeout


class CheckpointEncodeError(StepError):
    """A step's output cannot be encoded by the checkpoint codec."""


class FanOutError(StepError):
    """Items of a step with ``map_over=`` failed after their retries.

    The items that succeeded are checkpointed: running the run again runs only the failed ones.

    Attributes:
        failed: each failed item's error (a :class:`StepError`), by index, in index order.
    """

    def __init__(
        self, message: str, *, step: str, attempts: int, failed: Mapping[int, BaseException]
    ) -> None:
        super().__init__(message, step=step, attempts=attempts)
        self.failed = dict(sorted(failed.items()))

    @property
    def indices(self) -> list[int]:
        """The indices of the failed items, ascending."""
        return list(self.failed)


class SubflowDepthError(AsyncflowError):
    """A sub-flow would nest deeper than the limit: most likely a flow that calls itself.

    Attributes:
        depth: the limit that was reached.
        chain: the run ids from the outermost run to the one that tried to go deeper.
    """

    def __init__(self, message: str, *, depth: int, chain: tuple[str, ...]) -> None:
        super().__init__(message)
        self.depth = depth
        self.chain = chain


class RunFailedError(AsyncflowError):
    """A run ended FAILED. Raised by :meth:`RunResult.raise_for_status`.

    Attributes:
        run_id: the run's id.
        errors: each failed step's exception, by step name.
    """

    def __init__(self, message: str, *, run_id: str, errors: Mapping[str, BaseException]) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.errors = dict(errors)


class CircuitOpenError(AsyncflowError):
    """The host's circuit is open: the request was refused without being sent.

    Attributes:
        host: the host key, ``scheme://host:port``.
        retry_after: seconds until the circuit admits a trial request.
    """

    def __init__(self, message: str, *, host: str, retry_after: float) -> None:
        super().__init__(message)
        self.host = host
        self.retry_after = retry_after


class CheckpointError(AsyncflowError):
    """The checkpoint store could not be read or written."""


class LeaseLostError(CheckpointError):
    """A write or renewal with a lease that is no longer the run's current one; nothing written.

    Another owner took the run over (this one paused, lost its connection, or let its lease
    expire): the run goes on there, and this owner must stop writing it.

    Attributes:
        run_id: the run's id.
        epoch: the stale lease's epoch.
    """

    def __init__(self, message: str, *, run_id: str, epoch: int) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.epoch = epoch


class ExecutorError(AsyncflowError):
    """An executor could not run a run or bring its result back.

    Its worker was lost too often, the worker has no engine, the result cannot be sent; or an
    error raised in another process cannot be rebuilt here.

    Attributes:
        remote_type: for an error that could not be rebuilt, the qualified name of its type;
            its message is this error's message and its causes stay chained.
    """

    def __init__(self, message: str, *, remote_type: str | None = None) -> None:
        super().__init__(message)
        self.remote_type = remote_type
