"""The runs page: a read-only, server-rendered view of a store's runs (Starlette, no JavaScript).

Needs the ``web`` extra (``pip install 'asyncflow-engine[web]'``: starlette, uvicorn).
:func:`runs_app` is an ASGI app over a store; :class:`LiveView` is an observer that adds what
only a live engine knows (circuits per host, batch progress, steps running now). ``asyncflow
web`` serves it; the Service mounts it at ``/runs``.
"""

from __future__ import annotations

from ._app import MAX_ROWS, runs_app
from ._live import BatchView, HostView, LiveView, RunView, StepView

__all__ = ["MAX_ROWS", "BatchView", "HostView", "LiveView", "RunView", "StepView", "runs_app"]

for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type) or callable(_value):
        _value.__module__ = __name__  # they print as asyncflow.web.X, where users import them
del _name, _value
