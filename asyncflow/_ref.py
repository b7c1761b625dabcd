"""FlowRef: a flow named by where it lives, ``"pkg.mod:flow"`` or ``"path/to/file.py:flow"``.

A reference is text, so it crosses process boundaries where a :class:`Flow` cannot: the command
line takes one, and a service or a worker process can load the same flow from it. What can be
referenced is a flow bound to a module-level name: ``flow = Flow("documents")`` at the top of
a module or a script. A flow built inside a function, or only held in a local variable or a
list, has no such name, so there is nothing another process could import:
:meth:`FlowRef.of` refuses it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import FlowRefError
from ._flow import Flow

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["FlowRef"]

#: What asyncio.run (and asyncio.Runner) and anyio.run say when a loop already runs.
_LOOP_RUNNING = re.compile(r"running event loop|Already running \w+ in this thread")
_FORM = "give the flow as module:attribute or path/to/file.py:attribute"


@dataclass(frozen=True, slots=True)
class FlowRef:
    """Where a flow lives: a module or a ``.py`` file, and the attribute naming the flow.

    ``str(ref)`` is the text :meth:`parse` reads back. Make one with :meth:`parse` from text or
    :meth:`of` from a flow; :meth:`load` imports the module and returns the flow.

    Attributes:
        module: a dotted module name (``"pkg.pipeline"``) or a path to a ``.py`` file.
        attribute: the module-level name the flow is bound to.
    """

    module: str
    attribute: str

    def __str__(self) -> str:
        return f"{self.module}:{self.attribute}"

    @property
    def is_file(self) -> bool:
        """True when :attr:`module` is a path to a file rather than a module name."""
        return self.module.endswith(".py") or "/" in self.module

    @classmethod
    def parse(cls, text: str) -> FlowRef:
        """Read ``"module:attribute"`` or ``"path/to/file.py:attribute"``.

        The last ``:`` splits the two, so a path may hold colons. Nothing is imported yet.

        Raises:
            FlowRefError: the text has no ``:``, or nothing on either side of it.
        """
        where, sep, attr = text.rpartition(":")
        if not sep or not where or not attr:
            raise FlowRefError(f"{text!r}: {_FORM}.", ref=text)
        return cls(where, attr)

    @classmethod
    def of(cls, flow: Flow) -> FlowRef:
        """The reference of a flow bound to a module-level name of an imported module.

        The modules of the flow's steps are searched first, then every imported module. A flow
        in a script run as ``__main__`` is referenced by the script's path.

        Raises:
            FlowRefError: no imported module binds this flow to a name (it was built inside a
                function, or is held only in a local variable or a container).
        """
        step_modules = [getattr(s.fn, "__module__", None) for s in flow.steps.values()]
        names = dict.fromkeys([*filter(None, step_modules), *list(sys.modules)])
        for name in names:
            module = sys.modules.get(name)
            attr = _bound_name(module, flow) if module is not None else None
            if module is None or attr is None:
                continue
            if name == "__main__" and getattr(module, "__file__", None):
                return cls(str(Path(module.__file__ or "").resolve()), attr)
            return cls(name, attr)
        raise FlowRefError(
            f"Flow {flow.name!r} is not bound to a name at the top of any imported module, so "
            f"it cannot be referenced (a flow built inside a function cannot be imported by "
            f"another process). Define it at module level: {flow.name} = Flow(...).",
            ref=flow.name,
        )

    def load(self) -> Flow:
        """Import the module (or execute the file) and return the flow it names.

        A module already imported is not imported again. A file is executed on every call, as
        a module named after its stem (replacing one of that name in ``sys.modules``), with its
        folder put first on ``sys.path`` so that it can import its neighbours.

        Raises:
            FlowRefError: the module is missing or fails to import (the message names the
                module and the error, with the line it was raised at; a module that starts an
                event loop at import, loaded inside a running one, is told to guard that call
                with ``if __name__ == "__main__":``), or the attribute is missing or is not a
                Flow.
        """
        module = _import_file(self.module) if self.is_file else _import(self.module)
        flows = sorted(name for name, value in vars(module).items() if isinstance(value, Flow))
        hint = f" Flows in it: {', '.join(flows)}." if flows else " It defines no Flow."
        if not hasattr(module, self.attribute):
            raise FlowRefError(
                f"{self.module!r} has no attribute {self.attribute!r}.{hint}", ref=str(self)
            )
        flow = getattr(module, self.attribute)
        if not isinstance(flow, Flow):
            raise FlowRefError(
                f"{str(self)!r} is {type(flow).__name__}, not a Flow.{hint}", ref=str(self)
            )
        return flow


def _bound_name(module: ModuleType, flow: Flow) -> str | None:
    try:
        items = list(vars(module).items())
    except TypeError:  # a module stand-in without a __dict__
        return None
    return next((name for name, value in items if value is flow), None)


def _import(name: str) -> ModuleType:
    if not all(part.isidentifier() for part in name.split(".")):
        raise FlowRefError(f"{name!r} is not a module name: {_FORM}.", ref=name)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # The target itself (or a package on its path) is missing, not something it imports.
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise FlowRefError(
                f"Cannot import {name!r}: there is no module named {exc.name!r} here. Give an "
                f"importable module:attribute, or path/to/file.py:attribute.",
                ref=name,
            ) from exc
        raise FlowRefError(_import_failed(name, exc), ref=name) from exc
    except Exception as exc:
        raise FlowRefError(_import_failed(name, exc), ref=name) from exc


def _import_file(where: str) -> ModuleType:
    path = Path(where)
    if not path.is_file():
        raise FlowRefError(f"{where!r} is not a file.", ref=where)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise FlowRefError(f"Cannot import {where!r}.", ref=where)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(path.stem, None)
        raise FlowRefError(_import_failed(where, exc), ref=where) from exc
    return module


def _close_unstarted(exc: BaseException) -> None:
    """Close the coroutines the refused ``asyncio.run(main())`` left unstarted (no warning)."""
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if inspect.iscoroutine(value) and inspect.getcoroutinestate(value) == "CORO_CREATED":
                value.close()
        tb = tb.tb_next


def _import_failed(where: str, exc: Exception) -> str:
    """One line for an exception raised while importing the user's module."""
    if isinstance(exc, RuntimeError) and _LOOP_RUNNING.search(str(exc)):
        _close_unstarted(exc)
        return (
            f"Importing {where!r} starts an event loop (asyncio.run or anyio.run at the top "
            f"level of the module), so its flow cannot be loaded without running it. Put that "
            f'call under if __name__ == "__main__": so that it runs only as a script.'
        )
    if isinstance(exc, SyntaxError):
        at = f" in {exc.filename}, line {exc.lineno}" if exc.filename else ""
        return f"Cannot import {where!r}: {type(exc).__name__}{at}: {exc.msg}."
    # The innermost frame outside importlib's own, frozen, modules: where it was raised.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    at = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"Importing {where!r} raised {type(exc).__name__}: {exc}{at}."
