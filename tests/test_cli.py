"""The command line: run, map, resume, graph; runs, show and forget over a store; exit statuses.

Errors are clear, one line each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

import asyncflow
from asyncflow import Engine, FlowRef

# The command line's entry point has no public Python name (it is the asyncflow script and
# python -m asyncflow, tested in subprocesses below); calling it in-process keeps these fast.
from asyncflow._cli import NOT_KEPT, UsageError, main, parse_since

FLOW = """
from asyncflow import Flow

flow = Flow("cli")


@flow.step
async def load(n: int, label: str = "x") -> int:
    return n * 2


@flow.step(timeout=5.0)
async def check(load: int) -> int:
    if load > 100:
        raise ValueError("too big")
    return load + 1


@flow.step(after=[check])
async def notify() -> None: ...
"""


@pytest.fixture
def target(tmp_path: Path) -> str:
    path = tmp_path / "cliflow.py"
    path.write_text(textwrap.dedent(FLOW), encoding="utf-8")
    return f"{path}:flow"


def test_graph_formats(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Graph draws the steps in order as text, mermaid (dashed for after=) and dot."""
    assert main(["graph", target]) == 0
    text = capsys.readouterr().out
    assert text.splitlines() == [
        "flow 'cli': 3 steps",
        "  load(n, label)",
        "  check(load)  [timeout=5.0]",
        "  notify() after check",
    ]
    assert main(["graph", target, "--format", "mermaid"]) == 0
    mermaid = capsys.readouterr().out
    assert "load --> check" in mermaid
    assert "check -.-> notify" in mermaid
    assert main(["graph", target, "--format", "dot"]) == 0
    assert '"check" -> "notify" [style=dashed];' in capsys.readouterr().out


def test_run_then_resume(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Run prints a JSON report; resume takes the inputs from the manifest and restores."""
    assert main(["run", target, "n=4", "--run-id", "r1"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "succeeded"
    assert first["steps"]["check"] == {"status": "succeeded", "attempts": 1}
    assert main(["resume", target, "r1"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert {s["status"] for s in again["steps"].values()} == {"restored"}


def test_failed_run_exits_1(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A failed run reports the error and exits 1."""
    assert main(["run", target, "n=500", "--no-store"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["steps"]["check"]["status"] == "failed"
    assert "too big" in report["steps"]["check"]["error"]
    assert report["steps"]["notify"]["status"] == "skipped"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "{target}", "m=1"], "missing 'n'"),
        (["run", "{target}", "n"], "give inputs as name=value"),
        (["run", "nosuchfile.py:flow"], "is not a file"),
        (["run", "{target}x"], "has no attribute 'flowx'. Flows in it: flow."),
        (["graph", "no-colon"], "module:attribute"),
        (["resume", "{target}", "never-ran"], "There is no run 'never-ran'"),
        (["run", "{target}", "n=1", "--run-id", "../escape"], "run id"),
        (["run", "{target}", "traceparent=x"], "use --traceparent"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(
    target: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Bad input says what is wrong on stderr and exits 2."""
    assert main([a.format(target=target) for a in args]) == 2
    assert message in capsys.readouterr().err


def test_a_traceparent_that_is_not_w3c_is_a_usage_error(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", target, "n=1", "--traceparent", "x"])
    assert exited.value.code == 2
    assert "is not a W3C traceparent" in capsys.readouterr().err


def test_python_dash_m(target: str) -> None:
    """Python -m asyncflow is the same command."""
    out = subprocess.run(
        [sys.executable, "-m", "asyncflow", "graph", target],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.startswith("flow 'cli': 3 steps")


#: Files beside the target for the misuse cases: broken in each way a user's module can be.
BROKEN = {
    "syntax.py": "from asyncflow import Flow\n\nflow = Flow('x'\n",
    "raises.py": "raise RuntimeError('no API key at import')\n",
    "needs.py": "import nosuch_dependency_xyz\n",
    "needsmod.py": "import nosuch_dependency_xyz\n",
}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nosuch_module_xyz:flow"], "no module named 'nosuch_module_xyz'"),
        (["graph", "nosuch_pkg_xyz.flows:flow"], "no module named 'nosuch_pkg_xyz'"),
        (["graph", ".:flow"], "'.' is not a module name"),
        (
            ["graph", "syntax.py:flow"],
            "Cannot import 'syntax.py': SyntaxError in {dir}/syntax.py, line 3:",
        ),
        (["graph", "raises.py:flow"], "raised RuntimeError: no API key at import"),
        (
            ["graph", "needs.py:flow"],
            "Importing 'needs.py' raised ModuleNotFoundError: "
            "No module named 'nosuch_dependency_xyz' ({dir}/needs.py, line 1).",
        ),
        (
            ["graph", "needsmod:flow"],
            "Importing 'needsmod' raised ModuleNotFoundError: "
            "No module named 'nosuch_dependency_xyz'",
        ),
        (["run", "cliflow.py:flow", "n=" + "[" * 5000], "nested more than 100 levels"),
        (["run", "cliflow.py:flow", "n=" + "[" * 500 + "]" * 500], "nested more than 100"),
        (["run", "cliflow.py:flow", "n=1", "run_id=r"], "run_id is not a run input; use --run-id"),
        (["run", "cliflow.py:flow", "n=1", "fail_fast=true"], "use --fail-fast"),
        (["run", "cliflow.py:flow", "n=1", "n=2"], "Input 'n' is given twice"),
        (["run"], "the following arguments are required: target"),
    ],
    ids=[
        "missing-module",
        "missing-package",
        "not-a-module-name",
        "syntax-error",
        "raises-at-import",
        "file-imports-missing-module",
        "module-imports-missing-module",
        "json-past-its-recursion-limit",
        "json-too-deep",
        "run-id-as-input",
        "fail-fast-as-input",
        "input-twice",
        "argparse",
    ],
)
def test_misuse_is_one_line_and_exit_2(
    target: str, tmp_path: Path, args: list[str], message: str
) -> None:
    """The real command, misused, prints one line naming the problem and exits 2: no traceback."""
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    script = Path(sys.executable).with_name("asyncflow")
    out = subprocess.run(
        [str(script), *args, "--no-store"] if args[0] == "run" else [str(script), *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (out.returncode, out.stdout) == (2, "")
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("asyncflow: error: ")
    assert message.format(dir=tmp_path) in out.stderr


def test_python_dash_m_misuse(tmp_path: Path) -> None:
    """Python -m asyncflow reports an import failure in the same one line and exit status."""
    (tmp_path / "raises.py").write_text(BROKEN["raises.py"], encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "asyncflow", "run", "raises:flow", "--no-store"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"asyncflow: error: Importing 'raises' raised RuntimeError: no API key at import "
        f"({tmp_path}/raises.py, line 1)."
    ]


def test_fail_fast_option(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--fail-fast is the run option that fail_fast=... as an input used to reach by accident."""
    assert main(["run", target, "n=500", "--no-store", "--fail-fast"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["steps"]["check"]["status"] == "failed"


# --- inspecting a store: the real console script against FileStore folders made by real runs ---

SCRIPT = Path(sys.executable).with_name("asyncflow")

#: A flow whose second step waits forever, once it has said so in a file beside the script.
HANGS = """
from pathlib import Path

import anyio

from asyncflow import Flow

flow = Flow("hangs")


@flow.step
async def first() -> int:
    return 1


@flow.step
async def wait(first: int) -> None:
    (Path(__file__).parent / "waiting").touch()
    await anyio.sleep_forever()
"""


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``asyncflow`` script, run in ``cwd``."""
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def rows(out: str) -> dict[str, dict[str, object]]:
    """``runs --json`` output by run id (each line must be a JSON object)."""
    parsed = [json.loads(line) for line in out.splitlines()]
    return {str(row["run_id"]): row for row in parsed}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with cliflow.py and its store: run good-1 succeeded, bad-1 failed, broken.json."""
    where = tmp_path_factory.mktemp("made")
    (where / "cliflow.py").write_text(textwrap.dedent(FLOW), encoding="utf-8")
    assert cli(where, "run", "cliflow.py:flow", "n=4", "--run-id", "good-1").returncode == 0
    assert cli(where, "run", "cliflow.py:flow", "n=500", "--run-id", "bad-1").returncode == 1
    (where / ".asyncflow" / "broken.json").write_text('{"format": "asyncflow.run", ', "utf-8")
    return where


@pytest.fixture
def store(made: Path, tmp_path: Path) -> Path:
    """A copy of ``made`` for one test to change."""
    shutil.copytree(made, tmp_path / "w")
    return tmp_path / "w"


def test_run_tells_its_run_id_before_it_ends_so_a_killed_run_can_be_found(tmp_path: Path) -> None:
    """``run`` writes its run id on stderr as it starts; killed, the run is listed as running."""
    (tmp_path / "hangs.py").write_text(textwrap.dedent(HANGS), encoding="utf-8")
    with subprocess.Popen(
        [str(SCRIPT), "run", "hangs.py:flow"], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            while not (tmp_path / "waiting").exists():  # its first step's checkpoint is saved
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.01)
        finally:
            proc.kill()
        first = proc.communicate()[1].splitlines()[0]
    prefix = "asyncflow: run "
    assert first.startswith(prefix)
    run_id = first.removeprefix(prefix).strip()
    listed = cli(tmp_path, "runs", "--json")
    assert listed.returncode == 0
    assert rows(listed.stdout)[run_id]["status"] == "running"
    shown = json.loads(cli(tmp_path, "show", run_id, "--json").stdout)
    assert shown["steps"] == {
        "first": {
            "status": "succeeded",
            "digest": shown["steps"]["first"]["digest"],
            "output_bytes": 1,
        }
    }


def test_runs_lists_status_flow_times_and_failed_steps_and_corrupt_files(made: Path) -> None:
    """Each run once, as JSON lines; a run file that cannot be read is listed as corrupt."""
    out = cli(made, "runs", "--json")
    assert out.returncode == 0
    listed = rows(out.stdout)
    assert set(listed) == {"good-1", "bad-1", "broken"}
    assert listed["good-1"]["status"] == "succeeded"
    assert listed["good-1"]["failed_steps"] == []
    assert (listed["bad-1"]["status"], listed["bad-1"]["flow"]) == ("failed", "cli")
    assert listed["bad-1"]["failed_steps"] == ["check"]
    assert str(listed["bad-1"]["created_at"]) <= str(listed["bad-1"]["updated_at"])
    assert listed["broken"] == {
        "run_id": "broken",
        "status": "corrupt",
        "file": str(made / ".asyncflow" / "broken.json"),
    }
    table = cli(made, "runs").stdout.splitlines()
    assert table[0].split() == ["RUN", "STATUS", "FLOW", "CREATED", "UPDATED", "FAILED", "STEPS"]
    assert [line.split()[:3] for line in table[1:]] == [
        ["good-1", "succeeded", "cli"],
        ["bad-1", "failed", "cli"],
        ["broken", "corrupt", "-"],
    ]
    assert table[2].endswith("  check")


@pytest.mark.parametrize(
    ("args", "listed"),
    [
        (["--status", "failed"], {"bad-1"}),
        (["--status", "corrupt"], {"broken"}),
        (["--flow", "cli"], {"good-1", "bad-1"}),
        (["--flow", "other"], set()),
        (["--since", "1h"], {"good-1", "bad-1"}),
        (["--since", "2999-01-01T00:00"], set()),
        (["--since", "2000-01-01T00:00:00+00:00", "--status", "succeeded"], {"good-1"}),
    ],
)
def test_runs_filters(made: Path, args: list[str], listed: set[str]) -> None:
    """--status, --flow and --since (an ISO time or a time ago) filter the listing."""
    out = cli(made, "runs", "--json", *args)
    assert out.returncode == 0
    assert set(rows(out.stdout)) == listed


def test_since_reads_iso_times_and_times_ago() -> None:
    """A time ago counts back from now; an ISO time without a zone is UTC."""
    now = datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_since("90m", now) == datetime(2026, 1, 31, 10, 30, tzinfo=UTC)
    assert parse_since("2d", now) == datetime(2026, 1, 29, 12, tzinfo=UTC)
    assert parse_since("2026-01-31T11:00") == datetime(2026, 1, 31, 11, tzinfo=UTC)
    with pytest.raises(UsageError, match="--since 'yesterday'"):
        parse_since("yesterday")


def test_show_a_failed_run(made: Path) -> None:
    """Show gives the run's inputs, each kept step's output size and digest, the failed steps."""
    out = cli(made, "show", "bad-1", "--json")
    assert out.returncode == 0
    shown = json.loads(out.stdout)
    assert (shown["flow"], shown["status"], shown["inputs"]) == ("cli", "failed", {"n": 500})
    assert shown["steps"]["load"]["output_bytes"] == len("1000")
    assert len(shown["steps"]["load"]["digest"]) == 32
    assert shown["steps"]["check"] == {"status": "failed"}
    text = cli(made, "show", "bad-1").stdout.splitlines()
    assert text[0] == "run bad-1"
    assert '  inputs: {"n": 500}' in text
    assert "  check  failed" in text
    assert text[-1] == NOT_KEPT


def test_show_a_corrupt_run_reports_what_was_discarded(store: Path) -> None:
    """A run file that cannot be read is shown with why, and where its bytes were kept."""
    out = cli(store, "show", "broken", "--json")
    assert out.returncode == 0
    (discarded,) = json.loads(out.stdout)["discarded"]
    assert "not valid JSON" in discarded["reason"]
    assert Path(discarded["kept_in"]).read_text("utf-8").startswith('{"format"')
    # Set aside now, it is still listed as corrupt.
    assert rows(cli(store, "runs", "--json").stdout)["broken"]["status"] == "corrupt"


@pytest.mark.parametrize(
    ("command", "typo", "hint"),
    [
        ("show", "bad", "Did you mean bad-1?"),
        ("forget", "good-2", "Did you mean good-1"),
        ("show", "zzzzzzzz", "See `asyncflow runs` for the runs it holds."),
    ],
)
def test_an_unknown_run_names_the_nearest(made: Path, command: str, typo: str, hint: str) -> None:
    """An unknown run id is a usage error listing the nearest ids in the store."""
    out = cli(made, command, typo)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.startswith(f"asyncflow: error: There is no run {typo!r} in the store ")
    assert hint in out.stderr.splitlines()[-1]


def test_forget_deletes_a_run(store: Path) -> None:
    """Forget deletes one run's checkpoints; the others stay; run again, it starts anew."""
    out = cli(store, "forget", "bad-1")
    assert (out.returncode, out.stdout) == (0, "forgot run bad-1\n")
    assert set(rows(cli(store, "runs", "--json").stdout)) == {"good-1", "broken"}
    assert cli(store, "show", "bad-1").returncode == 2
    again = cli(store, "run", "cliflow.py:flow", "n=500", "--run-id", "bad-1")
    assert json.loads(again.stdout)["steps"]["load"]["status"] == "succeeded"  # not restored


@pytest.mark.anyio
async def test_forget_refused_while_an_open_engine_holds_the_run_exits_3(store: Path) -> None:
    """A store that refuses (the run is in a live engine's journal) is exit 3, one line."""
    async with Engine(store=store / ".asyncflow") as engine:
        flow = FlowRef.parse(f"{store / 'cliflow.py'}:flow").load()
        await engine.run(flow, run_id="good-1", n=4)  # restored: its manifest is journaled
        out = await anyio.to_thread.run_sync(cli, store, "forget", "good-1")
    assert (out.returncode, out.stdout) == (3, "")
    (line,) = out.stderr.splitlines()
    assert line.startswith("asyncflow: error: Run 'good-1' still has records in the journal")
    assert cli(store, "forget", "good-1").returncode == 0  # once it has closed


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("nowhere", "There is no store at 'nowhere'"),
        ("cliflow.py", "'cliflow.py' is not an asyncflow store"),
        (".", "'.' is not an asyncflow store (a folder with a .journal folder in it)"),
    ],
)
@pytest.mark.parametrize("command", [["runs"], ["show", "good-1"], ["forget", "good-1"]])
def test_a_path_that_is_not_a_store_says_so(
    made: Path, command: list[str], where: str, message: str
) -> None:
    """Inspecting commands never make a store: a wrong --store is a usage error naming it."""
    out = cli(made, *command, "--store", where)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.splitlines() == [out.stderr.strip()]
    assert message in out.stderr
    assert not (made / "nowhere").exists()


def test_map_runs_each_line_and_writes_results_as_json_lines(store: Path) -> None:
    """Map runs one run per line ("run_id" names it), results as JSON lines; a failure exits 1."""
    lines = ['{"n": 1, "run_id": "m-1"}', "", '{"n": 500, "run_id": "m-2"}', '{"n": 3}']
    (store / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = cli(store, "map", "cliflow.py:flow", "in.jsonl", "--out", "results.jsonl")
    assert (out.returncode, out.stdout) == (1, "")
    results = rows((store / "results.jsonl").read_text("utf-8"))
    assert len(results) == 3
    assert results["m-1"]["status"] == "succeeded"
    assert results["m-2"]["status"] == "failed"
    listed = rows(cli(store, "runs", "--json", "--status", "failed").stdout)
    assert set(listed) == {"bad-1", "m-2"}
    ok = cli(store, "map", "cliflow.py:flow", "in.jsonl", "--concurrency", "1")
    assert ok.returncode == 1
    assert len(ok.stdout.splitlines()) == 3  # stdout without --out


def test_map_bad_line_is_a_usage_error(store: Path) -> None:
    """A line that is not a JSON object is named, exit 2, before anything runs."""
    (store / "in.jsonl").write_text('{"n": 1}\n[1, 2]\n', encoding="utf-8")
    out = cli(store, "map", "cliflow.py:flow", "in.jsonl")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.startswith("asyncflow: error: in.jsonl, line 2: give each run's inputs")
    assert "runs" not in rows(cli(store, "runs", "--json").stdout)  # nothing ran


def test_version(tmp_path: Path) -> None:
    """--version prints the package's version."""
    out = cli(tmp_path, "--version")
    assert (out.returncode, out.stdout) == (0, f"asyncflow {asyncflow.__version__}\n")


@pytest.mark.parametrize(
    "starts",
    ["asyncio.run(main())", "anyio.run(main)"],
)
def test_a_module_starting_an_event_loop_at_import_is_told_the_fix(
    tmp_path: Path, starts: str
) -> None:
    """Its pipeline does not run; one line names the fix, with no traceback or warning."""
    module = textwrap.dedent(FLOW) + textwrap.dedent(f"""
        import asyncio

        import anyio


        async def main() -> None:
            print("the pipeline ran")


        {starts}
    """)
    (tmp_path / "script.py").write_text(module, encoding="utf-8")
    for args in (["graph", "script.py:flow"], ["run", "script.py:flow", "n=1"]):
        out = cli(tmp_path, *args)
        assert (out.returncode, out.stdout) == (2, "")
        (line,) = out.stderr.splitlines()
        assert line.startswith("asyncflow: error: Importing 'script.py' starts an event loop")
        assert 'Put that call under if __name__ == "__main__":' in line


#: A module naming stores for --store-ref: a store, a function making one, and neither.
STORES = """
from pathlib import Path

from asyncflow import FileStore

HERE = Path(__file__).parent
store = FileStore(HERE / "kept")


def make() -> FileStore:
    return FileStore(HERE / "kept")


not_a_store = 42
"""


def test_any_store_by_reference(store: Path) -> None:
    """--store-ref module:attribute names the store (or a maker of one) for every command."""
    (store / "mystores.py").write_text(textwrap.dedent(STORES), encoding="utf-8")
    ran = cli(
        store, "run", "cliflow.py:flow", "n=4", "--run-id", "r", "--store-ref", "mystores.py:store"
    )
    assert ran.returncode == 0
    (store / "in.jsonl").write_text('{"n": 500, "run_id": "m"}\n', encoding="utf-8")
    assert (
        cli(
            store, "map", "cliflow.py:flow", "in.jsonl", "--store-ref", "mystores.py:make"
        ).returncode
        == 1
    )
    listed = rows(cli(store, "runs", "--json", "--store-ref", "mystores.py:make").stdout)
    assert {k: v["status"] for k, v in listed.items()} == {"r": "succeeded", "m": "failed"}
    assert "good-1" in rows(cli(store, "runs", "--json").stdout)  # --store's folder is apart
    shown = json.loads(cli(store, "show", "m", "--json", "--store-ref", "mystores.py:store").stdout)
    assert shown["failed_steps"] == ["check"]
    assert (
        cli(store, "resume", "cliflow.py:flow", "r", "--store-ref", "mystores.py:store").returncode
        == 0
    )
    assert cli(store, "forget", "m", "--store-ref", "mystores.py:store").returncode == 0
    assert set(rows(cli(store, "runs", "--json", "--store-ref", "mystores.py:store").stdout)) == {
        "r"
    }
    bad = cli(store, "runs", "--store-ref", "mystores.py:not_a_store")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert "'mystores.py:not_a_store' is int, not a CheckpointStore" in bad.stderr


@pytest.mark.anyio
async def test_runs_lists_admitted_runs_as_pending_and_resume_starts_them(store: Path) -> None:
    """An admitted run is listed "pending" (the store's own filter) until it is started."""
    flow = FlowRef.parse(f"{store / 'cliflow.py'}:flow").load()
    async with Engine(store=store / ".asyncflow") as engine:
        assert await engine.admit(flow, run_id="hook-1", n=3) is True
    out = await anyio.to_thread.run_sync(
        lambda: cli(store, "runs", "--json", "--status", "pending")
    )
    assert out.returncode == 0
    assert set(rows(out.stdout)) == {"hook-1"}
    assert rows(out.stdout)["hook-1"]["status"] == "pending"
    table = await anyio.to_thread.run_sync(lambda: cli(store, "runs"))
    assert ["hook-1", "pending", "cli"] in [line.split()[:3] for line in table.stdout.splitlines()]
    resumed = await anyio.to_thread.run_sync(
        lambda: cli(store, "resume", "cliflow.py:flow", "hook-1")
    )
    assert resumed.returncode == 0, resumed.stderr
    out = await anyio.to_thread.run_sync(lambda: cli(store, "runs", "--json", "--flow", "cli"))
    assert rows(out.stdout)["hook-1"]["status"] == "succeeded"
