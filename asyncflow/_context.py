"""Context: what a step knows about the run it is part of."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import AsyncflowError

if TYPE_CHECKING:
    import httpx

__all__ = ["Context"]


class Context:
    """What a step knows about the run it is part of. Take it as a parameter annotated ``Context``.

    Attributes:
        run_id: the run's id.
        step: the step's name.
        attempt: the attempt number, from 1.
    """

    __slots__ = ("_http", "attempt", "run_id", "step")

    def __init__(
        self, *, run_id: str, step: str, attempt: int = 1, http: httpx.AsyncClient | None = None
    ) -> None:
        self.run_id = run_id
        self.step = step
        self.attempt = attempt
        self._http = http

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
