"""The Service's ASGI app (Starlette): ``/healthz``, the triggers' routes, mounted apps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.requests import Request

    from ._service import Service

__all__ = ["add_mount", "build_app"]


def build_app(service: Service, mounts: Sequence[tuple[str, Any]]) -> Starlette:
    """The app of ``service``: its health, each trigger's routes, then ``mounts``."""

    async def healthz(request: Request) -> JSONResponse:
        stats = service.statistics()
        return JSONResponse(
            {"status": "ok" if service.accepting else "stopped", **stats},
            status_code=200 if service.accepting else 503,
        )

    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"])]
    for trigger in service.triggers:
        intake = service._intakes[trigger.name]
        for path, methods, endpoint in trigger.routes(intake):
            routes.append(Route(path, endpoint, methods=list(methods)))
    routes.extend(Mount(path, app=app) for path, app in mounts)
    return Starlette(routes=routes)


def add_mount(app: Starlette, path: str, mounted: Any) -> None:
    """Mount ``mounted`` at ``path`` in an app already built."""
    app.router.routes.append(Mount(path, app=mounted))
