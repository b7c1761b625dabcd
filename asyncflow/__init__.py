"""asyncflow: reliable asyncio workflows you simply await.

A :class:`Flow` is a DAG of async steps; an :class:`Engine` runs it, launching each step the
moment its dependencies have finished.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from ._batch import Batch, BatchStatistics, BatchSummary
from ._codec import Codec, JsonCodec
from ._context import Context, Resources
from ._engine import Engine
from ._errors import (
    AsyncflowError,
    CheckpointEncodeError,
    CheckpointError,
    CircuitOpenError,
    ExecutorError,
    FanOutError,
    FlowDefinitionError,
    FlowRefError,
    InvalidRunIdError,
    LeaseLostError,
    RunFailedError,
    RunInputError,
    StepError,
    StepTimeoutError,
    SubflowDepthError,
)
from ._flow import Flow, Step
from ._http import HostPolicy, HostStatistics
from ._progress import ProgressBar
from ._ref import FlowRef
from ._result import RunResult, StepResult
from ._retry import Retry, is_transient
from ._service import Service
from ._status import CircuitState, OnOpen, RunStatus, StepStatus
from .events import (
    BatchProgress,
    CheckpointDiscarded,
    CircuitStateChanged,
    Event,
    HttpRequestFinished,
    Observer,
    RunFinished,
    RunHook,
    RunStarted,
    ScheduleLag,
    StepFailed,
    StepNotTaken,
    StepRestored,
    StepRetrying,
    StepSkipped,
    StepStarted,
    StepSucceeded,
    StoreWrite,
    TriggerAdmitted,
    TriggerDuplicate,
    TriggerInvalid,
    TriggerRejected,
)
from .stores import CheckpointStore, FileStore

__all__ = [
    "AsyncflowError",
    "Batch",
    "BatchProgress",
    "BatchStatistics",
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
    "ExecutorError",
    "FanOutError",
    "FileStore",
    "Flow",
    "FlowDefinitionError",
    "FlowRef",
    "FlowRefError",
    "HostPolicy",
    "HostStatistics",
    "HttpRequestFinished",
    "InvalidRunIdError",
    "JsonCodec",
    "LeaseLostError",
    "Observer",
    "OnOpen",
    "ProgressBar",
    "Resources",
    "Retry",
    "RunFailedError",
    "RunFinished",
    "RunHook",
    "RunInputError",
    "RunResult",
    "RunStarted",
    "RunStatus",
    "ScheduleLag",
    "Service",
    "Step",
    "StepError",
    "StepFailed",
    "StepNotTaken",
    "StepRestored",
    "StepResult",
    "StepRetrying",
    "StepSkipped",
    "StepStarted",
    "StepStatus",
    "StepSucceeded",
    "StepTimeoutError",
    "StoreWrite",
    "SubflowDepthError",
    "TriggerAdmitted",
    "TriggerDuplicate",
    "TriggerInvalid",
    "TriggerRejected",
    "is_transient",
]

for _name in __all__:
    _value = globals()[_name]
    # Defined in private modules, they print as asyncflow.X (as httpx and trio do): that is
    # where users import them from. Names from public modules (asyncflow.events,
    # asyncflow.stores) keep theirs.
    if getattr(_value, "__module__", "").startswith("asyncflow._"):
        _value.__module__ = __name__
del _name, _value

try:  # written once, in pyproject.toml; the installed distribution's metadata carries it
    __version__ = _metadata.version("asyncflow-engine")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
