"""Observers that export what the engine does: metrics (and, later, logs and traces).

Each exporter is an :class:`~asyncflow.events.Observer` in its own module, whose third-party
library is an optional extra imported only when that exporter is used:

- :class:`~asyncflow.observe.prometheus.PrometheusObserver` (``pip install
  'asyncflow-engine[prometheus]'``): Prometheus metrics in a registry you expose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .prometheus import PrometheusObserver

__all__ = ["PrometheusObserver"]


def __getattr__(name: str) -> object:
    # Lazy: importing asyncflow.observe must not import prometheus_client.
    if name == "PrometheusObserver":
        from .prometheus import PrometheusObserver

        return PrometheusObserver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
