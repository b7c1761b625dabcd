"""Context: what a step knows about the run it is part of, and what the engine hands it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

from ._errors import AsyncflowError

if TYPE_CHECKING:
    import httpx

__all__ = ["Context", "Resources"]

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

    __slots__ = ("_http", "attempt", "resources", "run_id", "step")

    def __init__(
        self,
        *,
        run_id: str,
        step: str,
        attempt: int = 1,
        http: httpx.AsyncClient | None = None,
        resources: Resources = NO_RESOURCES,
    ) -> None:
        self.run_id = run_id
        self.step = step
        self.attempt = attempt
        self._http = http
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

    def __repr__(self) -> str:
        return f"Context(run_id={self.run_id!r}, step={self.step!r}, attempt={self.attempt})"
