"""The cluster server mode's and the worker count's options as users meet them (pytester):
the header, the ini names and the messages of bad values. No server is started."""

from __future__ import annotations

import pytest


def test_cluster_mode_from_the_ini_is_in_the_header(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_server = cluster\nlivekit_cluster_nodes = 4\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["livekit: server=cluster 4 nodes + redis auto-detect (ini) · *"])


def test_cluster_mode_defaults_to_three_nodes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--livekit-server=cluster")
    result.stdout.fnmatch_lines(["livekit: server=cluster 3 nodes + redis auto-detect (cli) · *"])


@pytest.mark.parametrize(
    ("args", "ini", "words"),
    [
        (["--livekit-cluster-nodes=1"], "", "a cluster needs at least 2 nodes, got 1"),
        (["--livekit-cluster-nodes=many"], "", "'many' is not a number of nodes"),
        ([], "livekit_cluster_nodes = 1\n", "livekit_cluster_nodes must be at least 2, got 1"),
        ([], "livekit_cluster_nodes = three\n", "livekit_cluster_nodes = 'three' is not a number of nodes"),
        (["--livekit-agent-workers=0"], "", "at least 1 worker process, got 0"),
        ([], "livekit_agent_workers = 0\n", "livekit_agent_workers must be at least 1, got 0"),
        ([], "livekit_agent_workers = two\n", "livekit_agent_workers = 'two' is not a number of worker processes"),
    ],
    ids=["cli-one-node", "cli-not-a-number", "ini-one-node", "ini-not-a-number", "cli-no-worker",
         "ini-no-worker", "ini-workers-not-a-number"],
)
def test_bad_counts_are_usage_errors(pytester: pytest.Pytester, args: list[str], ini: str, words: str) -> None:
    pytester.makeini("[pytest]\n" + ini)
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert words in result.stderr.str()


def test_agent_workers_reach_the_session_pool(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlivekit_agent_workers = 3\n")
    pytester.makepyfile(
        """
        def test_pool(livekit_settings, livekit_workers):
            assert livekit_settings.agent_workers == 3
            assert livekit_workers.size == 3
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
