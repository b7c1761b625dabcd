"""Observers that turn an engine's :mod:`events <asyncflow.events>` into logs, metrics and traces.

Each exporter lives in its own module; one that needs an optional dependency imports it only
there, so importing this package costs nothing extra.

- :class:`LogObserver`: stdlib logging to the ``asyncflow`` logger.
- :func:`redact_urls`: URLs in a text without credentials, query strings or fragments.
- :data:`quiet_stamina`: the filter that keeps stamina's own line about asyncflow's retries
  off the console (asyncflow logs a better one); remove it to get stamina's line back.
- :class:`asyncflow.observe.prometheus.PrometheusObserver` (``pip install
  'asyncflow-engine[prometheus]'``): Prometheus metrics in a registry you expose; import it
  from its module, so that importing this package never imports ``prometheus_client``.
- :class:`asyncflow.observe.otel.OpenTelemetryObserver` (``pip install
  'asyncflow-engine[otel]'``): a span per run and per step attempt, through
  ``opentelemetry-api``; likewise imported from its module only.
"""

from __future__ import annotations

from ._logging import LogObserver
from ._redact import redact_urls
from ._stamina import quiet_stamina

__all__ = ["LogObserver", "quiet_stamina", "redact_urls"]

LogObserver.__module__ = redact_urls.__module__ = __name__  # they print as asyncflow.observe.X
