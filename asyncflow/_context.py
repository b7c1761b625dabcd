"""Context: what a step knows about the run it is part of, and what the engine hands it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol, TypeVar

from ._errors import AsyncflowError
from ._identity import subflow_run_id

if TYPE_CHECKING:
    import httpx

    from ._flow import Flow
    from ._result import RunResult

__all__ = ["Context", "Resources", "SubflowRunner"]

T = TypeVar("T")


class Resources(Mapping[str, object]):
    """The engine's resources by name (``Engine(resources=...)``), read-only.

    A missing name raises a ``KeyError`` that names the ones there are.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, object] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, name: str) -> object:
        try:
            return self._items[name]
        except KeyError:
            there = ", ".join(map(repr, self._items)) or "none"
            raise KeyError(
                f"No resource {name!r} (there are: {there}). Give it to the engine: "
                f"Engine(resources={{{name!r}: ...}})."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Resources({sorted(self._items)})"  # names only: values may hold secrets


#: What a Context without an engine has.
NO_RESOURCES = Resources()


class SubflowRunner(Protocol):
    """Runs a flow on the engine a step runs on (given to the step's Context by the engine)."""

    async def __call__(
        self, flow: Flow, /, *, run_id: str, inputs: Mapping[str, object]
    ) -> RunResult:
        """Run ``flow`` with ``inputs`` as run ``run_id``."""


class Context:
    """What a step knows about the run it is part of. Take it as a parameter annotated ``Context``.

    Attributes:
        run_id: the run's id.
        step: the step's name.
        attempt: the attempt number, from 1.
        resources: what the engine was given as ``Engine(resources=...)``, by name: settings
            and clients that must not change a run's identity (an API base URL, a key, a
            client). They are never part of a fingerprint or a checkpoint.
    """

    __slots__ = ("_calls", "_http", "_runner", "attempt", "resources", "run_id", "step")

    def __init__(
        self,
        *,
        run_id: str,
        step: str,
        attempt: int = 1,
        http: httpx.AsyncClient | None = None,
        resources: Resources = NO_RESOURCES,
        runner: SubflowRunner | None = None,
    ) -> None:
        self.run_id = run_id
        self.step = step
        self.attempt = attempt
        self._http = http
        self._runner = runner
        self._calls = 0
        self.resources = resources

    def resource(self, name: str, kind: type[T], /) -> T:
        """The resource ``name``, checked to be a ``kind``: ``ctx.resource("api", ApiClient)``.

        Raises:
            KeyError: the engine has no resource of that name (the message lists those it has).
            TypeError: the resource is not a ``kind``.
        """
        value = self.resources[name]
        if not isinstance(value, kind):
            raise TypeError(
                f"Resource {name!r} is a {type(value).__qualname__}, not an instance of "
                f"{kind.__qualname__}. "
                f"Check what Engine(resources={{{name!r}: ...}}) is given."
            )
        return value

    @property
    def http(self) -> httpx.AsyncClient:
        """The engine's HTTP client: requests through it pass the host's gate and circuit breaker.

        Always there inside a step an engine runs.

        Raises:
            AsyncflowError: this context was made outside an engine, without a client.
        """
        http = self._http
        if http is None:
            raise AsyncflowError(
                f"Step {self.step!r} has no HTTP client: this Context was made outside an "
                f"engine. Run the step with an Engine, or build Context(..., http=client)."
            )
        return http

    async def run(self, flow: Flow, /, *, key: str | None = None, **inputs: object) -> RunResult:
        """Run ``flow`` as a sub-flow of this step, on the engine running this step.

        The sub-flow shares the engine's circuits, host gates, store and observers. Its run id
        is derived from this run's and this step's: ``"<run_id>.<step>"``, then ``.2``, ``.3``
        for the step's later calls in the same attempt, or ``"<run_id>.<step>.<key>"`` with
        ``key=`` (give one when calls run concurrently, so each has the same id every time).
        So when the parent is resumed and this step runs again, the sub-flow resumes from its
        own checkpoints. While the sub-flow runs, this step gives back its slot of the
        engine's ``concurrency``, so parents that fill the limit never starve their children;
        its step's own ``concurrency=`` slot stays held, and a run of the same step nested
        under it (a flow that runs itself) shares that slot. Runs nest at most 20 deep.

        A failed sub-flow does not raise: its result says so (``raise_for_status()``).

        Args:
            flow: the flow to run.
            key: names this call among the step's calls, in the sub-flow's run id (not a
                number: numbers name the calls without a key).
            **inputs: the sub-flow's run inputs.

        Raises:
            AsyncflowError: this context was made outside an engine.
            SubflowDepthError: runs would nest too deep (a flow that calls itself forever).
            RunInputError: the inputs do not fit the flow.
        """
        runner = self._runner
        if runner is None:
            raise AsyncflowError(
                f"Step {self.step!r} cannot run a sub-flow: this Context was made outside an "
                f"engine. Run the step with an Engine."
            )
        self._calls += 1
        if key is None and self._calls > 1:
            key = str(self._calls)
        run_id = subflow_run_id(self.run_id, self.step, key)
        return await runner(flow, run_id=run_id, inputs=inputs)

    def __repr__(self) -> str:
        return f"Context(run_id={self.run_id!r}, step={self.step!r}, attempt={self.attempt})"
