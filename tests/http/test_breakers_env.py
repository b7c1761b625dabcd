"""The breaker and retry tests again, where aiobreaker's defects would show.

aiobreaker mixes local time and UTC (wrong by hours west of UTC, None and a TypeError east of
it) and, on Python 3.12+, emits ``datetime.utcnow()`` DeprecationWarnings that become errors
under ``filterwarnings = error``. So the same modules run in subprocesses: under
``TZ=America/New_York`` and ``TZ=Asia/Tokyo``, and on Python 3.13 in a cached venv
(``.venv313``, git-ignored). Each child must report every test passed, including one that checks
the child really had the requested zone, so a run that did nothing cannot pass.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV313 = REPO / ".venv313"
MODULES = ["tests/http/test_breakers.py", "tests/test_retry.py"]


def run_pytest(python: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [python, "-m", "pytest", *MODULES, "-v", "-p", "no:cacheprovider", "-W", "error"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "test_timezone_is_the_one_requested PASSED" in output, output
    summary = output.strip().splitlines()[-1]
    assert " passed" in summary, output
    assert " failed" not in summary, output
    assert " skipped" not in summary, output
    return output


def zone_env(tz: str) -> dict[str, str]:
    offset = datetime.now(ZoneInfo(tz)).utcoffset()
    assert offset is not None
    return {
        **os.environ,
        "TZ": tz,
        "ASYNCFLOW_EXPECT_UTC_OFFSET": str(int(offset.total_seconds())),
    }


@pytest.mark.timeout(240)
@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Tokyo"])
def test_breakers_pass_east_and_west_of_utc(tz: str) -> None:
    """The breaker tests pass with the local zone hours away from UTC, either way."""
    run_pytest(sys.executable, zone_env(tz))


def find_python313() -> str | None:
    candidates = [Path.home() / ".pyenv/versions/3.13.0/bin/python", shutil.which("python3.13")]
    for candidate in candidates:
        if candidate is None or not Path(candidate).exists():
            continue
        probe = subprocess.run(
            [str(candidate), "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.stdout.strip() == "True":
            return str(candidate)
    return None


def venv313(python: str) -> str:
    """A Python 3.13 venv with asyncflow (editable) and the test tools, rebuilt when pyproject changes."""
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    stamp = VENV313 / f".installed-{digest}"
    venv_python = VENV313 / "bin" / "python"
    if not stamp.exists():
        subprocess.run([python, "-m", "venv", "--clear", str(VENV313)], check=True)
        subprocess.run(
            [
                str(venv_python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "-e",
                f"{REPO}[testing]",
                "pytest>=8.3",
                "pytest-timeout>=2.3",
            ],
            check=True,
            capture_output=True,
        )
        stamp.touch()
    return str(venv_python)


@pytest.mark.timeout(600)  # the first run creates the venv
def test_breakers_pass_on_python_313_with_warnings_as_errors() -> None:
    """On 3.13 aiobreaker's utcnow() DeprecationWarning must not stop a circuit from opening."""
    python = find_python313()
    if python is None:
        pytest.skip("no Python 3.13: looked for ~/.pyenv/versions/3.13.0/bin/python and python3.13")
    run_pytest(venv313(python), zone_env("Asia/Tokyo"))


def test_tests_http_does_not_shadow_the_standard_library() -> None:
    """tests/http is a folder, not a package: scripts run from tests/ still import stdlib http.

    The child scripts in tests/ run as ``python tests/x_child.py``, which puts tests/ first on
    sys.path; with a tests/http/__init__.py, httpx's ``import http.cookiejar`` would find it.
    """
    probe = "import http, http.cookiejar, httpx; print(http.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO / "tests",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert not Path(out.stdout.strip()).is_relative_to(REPO / "tests"), out.stdout
