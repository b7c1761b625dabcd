"""FlowRef: flows named by module or file, parsed, printed, loaded, and found from a flow."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

from asyncflow import Flow, FlowRef, FlowRefError

if TYPE_CHECKING:
    from pathlib import Path

#: A flow bound at module level: importable by reference as tests.test_ref:MODULE_FLOW.
MODULE_FLOW = Flow("ref")


@MODULE_FLOW.step
async def one() -> int:
    return 1


@pytest.mark.parametrize(
    ("text", "module", "attribute"),
    [
        ("pkg.pipeline:flow", "pkg.pipeline", "flow"),
        ("path/to/file.py:flow", "path/to/file.py", "flow"),
        ("C:/flows/file.py:flow", "C:/flows/file.py", "flow"),
    ],
)
def test_parse_and_str_round_trip(text: str, module: str, attribute: str) -> None:
    """The last colon splits module from attribute, and str() gives the text back."""
    ref = FlowRef.parse(text)
    assert (ref.module, ref.attribute) == (module, attribute)
    assert str(ref) == text
    assert FlowRef.parse(str(ref)) == ref


@pytest.mark.parametrize("text", ["pipeline", ":flow", "pipeline:", ""])
def test_malformed_text_is_refused(text: str) -> None:
    """Text without a module and an attribute around a colon is a FlowRefError."""
    with pytest.raises(FlowRefError, match=r"module:attribute or path/to/file\.py:attribute"):
        FlowRef.parse(text)


def test_of_a_module_level_flow_loads_the_same_flow() -> None:
    """A flow bound at the top of an importable module is referenced by module name."""
    ref = FlowRef.of(MODULE_FLOW)
    assert ref == FlowRef(__name__, "MODULE_FLOW")
    assert ref.load() is MODULE_FLOW


def test_of_a_flow_built_in_a_function_is_refused() -> None:
    """A flow no module binds to a name cannot be referenced; the message says why."""
    local = Flow("local")

    @local.step
    async def two() -> int:
        return 2

    with pytest.raises(FlowRefError, match="built inside a function") as info:
        FlowRef.of(local)
    assert info.value.ref == "local"


def test_of_a_flow_in_a_script_is_its_path(tmp_path: Path) -> None:
    """A flow in a script run as __main__ is referenced by the script's path, and loads."""
    script = tmp_path / "scripted.py"
    script.write_text(
        textwrap.dedent(
            """
            from asyncflow import Flow, FlowRef

            flow = Flow("scripted")

            @flow.step
            async def three() -> int:
                return 3

            if __name__ == "__main__":
                print(FlowRef.of(flow))
            """
        ),
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=60
    )
    ref = FlowRef.parse(out.stdout.strip())
    assert ref == FlowRef(str(script.resolve()), "flow")
    loaded = ref.load()
    assert (loaded.name, list(loaded.steps)) == ("scripted", ["three"])


def test_load_names_the_flows_a_module_has(tmp_path: Path) -> None:
    """An attribute that is missing, or not a Flow, is refused with the flows that exist."""
    path = tmp_path / "twoflows.py"
    path.write_text("from asyncflow import Flow\na = Flow('a')\nb = Flow('b')\nn = 3\n")
    with pytest.raises(FlowRefError, match=r"has no attribute 'c'\. Flows in it: a, b\."):
        FlowRef(str(path), "c").load()
    with pytest.raises(FlowRefError, match=r"is int, not a Flow\. Flows in it: a, b\."):
        FlowRef(str(path), "n").load()


def test_a_missing_module_is_a_flow_ref_error() -> None:
    """A module that does not exist is one clear FlowRefError, chained to the import error."""
    with pytest.raises(FlowRefError, match="no module named 'no_such_pkg_xyz'") as info:
        FlowRef.parse("no_such_pkg_xyz.mod:flow").load()
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
