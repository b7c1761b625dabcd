"""asyncflow: reliable asyncio workflows you simply await.

A :class:`Flow` is a DAG of async steps; an :class:`Engine` runs it, launching each step the
moment its dependencies have finished.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from ._batch import Batch, BatchSummary
from ._codec import Codec, JsonCodec
from ._context import Context
from ._engine import Engine
from ._errors import (
    AsyncflowError,
    CheckpointEncodeError,
    CheckpointError,
    CircuitOpenError,
    FlowDefinitionError,
    InvalidRunIdError,
    RunFailedError,
    RunInputError,
    StepError,
    StepTimeoutError,
)
from ._events import (
    BatchProgress,
    CheckpointDiscarded,
    CircuitStateChanged,
    Event,
    Observer,
    RunFinished,
    RunStarted,
    StepFailed,
    StepRestored,
    StepRetrying,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from ._flow import Flow, Step
from ._http import HostPolicy, HostStatistics
from ._progress import ProgressBar
from ._result import RunResult, RunStatus, StepResult, StepStatus
from ._retry import Retry, is_transient
from ._status import CircuitState, OnOpen
from .stores import CheckpointStore, FileStore

__all__ = [
    "AsyncflowError",
    "Batch",
    "BatchProgress",
    "BatchSummary",
    "CheckpointDiscarded",
    "CheckpointEncodeError",
    "CheckpointError",
    "CheckpointStore",
    "CircuitOpenError",
    "CircuitState",
    "CircuitStateChanged",
    "Codec",
    "Context",
    "Engine",
    "Event",
    "FileStore",
    "Flow",
    "FlowDefinitionError",
    "HostPolicy",
    "HostStatistics",
    "InvalidRunIdError",
    "JsonCodec",
    "Observer",
    "OnOpen",
    "ProgressBar",
    "Retry",
    "RunFailedError",
    "RunFinished",
    "RunInputError",
    "RunResult",
    "RunStarted",
    "RunStatus",
    "Step",
    "StepError",
    "StepFailed",
    "StepRestored",
    "StepResult",
    "StepRetrying",
    "StepSkipped",
    "StepStarted",
    "StepStatus",
    "StepSucceeded",
    "StepTimeoutError",
    "is_transient",
]

try:  # written once, in pyproject.toml; the installed distribution's metadata carries it
    __version__ = _metadata.version("asyncflow-engine")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
