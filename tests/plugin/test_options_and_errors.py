"""The plugin as users meet it: options, marker validation, header, and error messages (pytester)."""

from __future__ import annotations

import socket
import stat
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _write_fake_server(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_help_lists_options_even_with_a_bad_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_startup_timeout = soon\n")
    result = pytester.runpytest("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*livekit*", "*--livekit-server-binary=*", "*--livekit-agent=*"])


def test_bad_startup_timeout_in_ini_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_startup_timeout = soon\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*livekit_startup_timeout = 'soon' is not a number of seconds*"])


def test_marker_registered_with_signature(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.livekit(*, call_type=None, call_types=None, agent=None, agent_mode=None, join_timeout=None, **limit_overrides)*"])


def test_header_shows_mode_agent_and_sources(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_agent = my_agent:server\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        ["livekit: server=binary auto-detect (auto, docker if no binary) · agent=my_agent:server (in-process, from ini)*"]
    )


def test_header_shows_worker_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_agent = my_agent:server\nlivekit_agent_mode = worker\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["livekit: * agent=my_agent:server (worker, from ini)*"])


def test_bad_agent_mode_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.livekit(agent_mode="thread")
        def test_x():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*'thread' is not a valid agent_mode. Valid modes: in-process, worker."]
    )


def test_unknown_marker_key_fails_at_collection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.livekit(call_typ="refund")
        def test_x():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*test_unknown_marker_key_fails_at_collection.py::test_x: 'call_typ' is not a valid "
            "@pytest.mark.livekit argument. Valid keys: call_type, call_types, agent, agent_mode, join_timeout, limits, "
            "providers, llm_rules, default_reply, stt_model, scenarios, or a limit: *",
        ]
    )


def test_positional_marker_argument_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.livekit("refund")
        def test_x():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*takes keyword arguments only, got positional ('refund',)*"])


def test_unknown_call_type_lists_valid_ones(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_call_types =\n    refund\n    booking\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.livekit(call_type="refnud")
        def test_x():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*'refnud' is not a valid call_type. Valid call types: refund, booking. Did you mean 'refund'?", "Hint: *"]
    )


def test_closest_marker_wins(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_call_types =\n    refund\n    booking\n")
    pytester.makepyfile(
        """
        import pytest
        from pytest_livekit.config import marker_options

        pytestmark = pytest.mark.livekit(call_type="refund", join_timeout=5)

        @pytest.mark.livekit(call_type="booking")
        def test_x(request, livekit_settings):
            opts = marker_options(request.node, livekit_settings)
            assert opts.call_type == "booking"
            assert opts.join_timeout == 5
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("no_colon", "*'no_colon' is not a valid agent target. Expected 'package.module:attribute'*"),
        ("missing_mod:server", "*module 'missing_mod' not found*"),
        ("agent_mod:nope", "*module 'agent_mod' has no attribute 'nope'. It has: *server*"),
        ("agent_mod:NUMBER", "*is a int, not an AgentServer or an 'async def entrypoint*"),
    ],
)
def test_bad_agent_target_fails_at_collection(
    pytester: pytest.Pytester, spec: str, expected: str
) -> None:
    pytester.makepyfile(agent_mod="NUMBER = 3\nasync def server(ctx):\n    pass\n")
    pytester.makeini(f"[pytest]\nlivekit_agent = {spec}\n")
    pytester.makepyfile(test_bad_target="async def test_x(livekit_call):\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


def test_missing_server_binary_names_three_ways(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PYTEST_LIVEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PYTEST_LIVEKIT_SERVER_BINARY", raising=False)
    pytester.makepyfile("def test_x(livekit_server):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "ServerBinaryNotFoundError: No livekit-server binary found. Looked in:",
            "*Hint: get one in any of these ways:",
            "*python -m pytest_livekit install-server*",
            "*'livekit-server'*",
            "*--livekit-server-binary=PATH*",
        ],
        consecutive=False,
    )
    assert "Traceback" not in result.stdout.str()


def test_server_that_exits_at_start_shows_its_log(pytester: pytest.Pytester, tmp_path: Path) -> None:
    fake = _write_fake_server(
        tmp_path / "livekit-server",
        'if [ "$1" = "--version" ]; then echo "livekit-server version 9.9.9"; exit 0; fi\n'
        'echo "starting fake server"\necho "FATAL could not parse config: bad things"\nexit 3',
    )
    pytester.makepyfile("def test_x(livekit_server):\n    pass\n")
    result = pytester.runpytest(f"--livekit-server-binary={fake}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            f"ServerStartError: livekit-server ({fake}) exited with code 3 before it was ready.",
            "Last log lines*",
            "starting fake server",
            "FATAL could not parse config: bad things",
            "Hint: *",
        ]
    )


def test_a_pytest_run_by_an_xdist_worker_names_its_logs_as_its_own(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pytest that a test of xdist worker gw3 starts inherits PYTEST_XDIST_WORKER=gw3 without
    being a worker: its server log is still ``livekit-server-main.log``."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    fake = _write_fake_server(
        tmp_path / "livekit-server",
        'if [ "$1" = "--version" ]; then echo "livekit-server version 9.9.9"; exit 0; fi\necho "bad"\nexit 3',
    )
    pytester.makepyfile("def test_x(livekit_server):\n    pass\n")
    result = pytester.runpytest(f"--livekit-server-binary={fake}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["Last log lines (*livekit-server-main.log):"])
    assert "gw3" not in result.stdout.str()


def test_port_already_taken(pytester: pytest.Pytester, tmp_path: Path) -> None:
    fake = _write_fake_server(tmp_path / "livekit-server", "sleep 30")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        pytester.makepyfile("def test_x(livekit_server):\n    pass\n")
        result = pytester.runpytest(f"--livekit-server-binary={fake}", f"--livekit-port={port}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [f"PortInUseError: HTTP port {port}/tcp on 127.0.0.1 is already in use*", "Hint: drop the fixed port*"]
    )


def test_unreachable_external_server(pytester: pytest.Pytester) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when we leave: nothing listens there
    pytester.makepyfile("def test_x(livekit_server):\n    pass\n")
    result = pytester.runpytest(
        f"--livekit-url=ws://127.0.0.1:{port}", "--livekit-api-key=k", "--livekit-api-secret=s" * 8
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [f"ServerUnreachableError: livekit-server at http://127.0.0.1:{port} is unreachable*", "Hint: *"]
    )


def test_livekit_url_in_environment_is_ignored(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "wss://my-project.livekit.cloud")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["livekit: server=binary *"])
    assert "livekit.cloud" not in result.stdout.str()


def test_external_mode_needs_credentials(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--livekit-url=ws://127.0.0.1:7880")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--livekit-url needs an API key and secret*"])


def test_plugin_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import sys

        def pytest_sessionfinish(session):
            heavy = sorted(m for m in ("livekit", "livekit.rtc", "numpy", "jiwer", "soundfile")
                           if m in sys.modules)
            print("HEAVY=" + ",".join(heavy))
        """
    )
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("-s", "-p", "no:hypothesispytest", "-p", "no:anyio")
    result.assert_outcomes(passed=1)
    import re

    found = re.search(r"HEAVY=(\S*)", result.stdout.str())
    assert found is not None and found.group(1) == "", f"heavy modules imported: {found}"
    assert "pytest_livekit" in sys.modules  # sanity: the plugin is installed for these tests


BROKEN_PYPROJECT = """\
[tool.pytest.ini_options]
asyncio_mode = "auto"

[tool.pytest_livekit.call_types.refund]
ttfa_ms_max = 1500
wer_max =
description = "a refund"
"""


def test_a_pyproject_with_a_toml_error_stops_the_session_naming_the_file_and_line(pytester: pytest.Pytester) -> None:
    """The pyproject is pytest's own config file: pytest reads it first and says where."""
    pyproject = pytester.makepyprojecttoml(BROKEN_PYPROJECT)
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {pyproject}: *(at line 6, column *)"])
    assert "passed" not in result.stdout.str()


def test_a_pyproject_the_plugin_reads_with_a_toml_error_names_the_file_and_line(pytester: pytest.Pytester) -> None:
    """pytest's config lives elsewhere (``-c``): the plugin reads the rootdir's pyproject.toml
    for its call types and says where the TOML is broken, at session start.
    """
    pyproject = pytester.makepyprojecttoml(BROKEN_PYPROJECT)
    (pytester.path / "ci").mkdir()
    (pytester.path / "ci" / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-c", "ci/pytest.ini", f"--rootdir={pytester.path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {pyproject}: invalid TOML: *(at line 6, column *)"])
    assert "passed" not in result.stdout.str()
