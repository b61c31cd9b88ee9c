"""Settings: ``--livekit-*`` options, ``livekit_*`` ini twins, environment, and the marker.

Every setting remembers where its value came from (``cli``, ``ini``, ``env``, ``default``) so the
pytest header can show it. Light imports only: this module is loaded with the plugin.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_livekit.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from pytest_livekit.agent.in_process import AgentTarget
    from pytest_livekit.agent.substitution import OfflinePlan
    from pytest_livekit.agent.vocabulary import SuiteVocabulary

#: Default seconds to wait for the agent to join and be listening.
DEFAULT_JOIN_TIMEOUT = 30.0
#: Default seconds to wait for a complete agent reply (a call's waits and a scenario's turns).
DEFAULT_REPLY_TIMEOUT = 30.0

MARKER_HELP = (
    "livekit(*, call_type=None, call_types=None, agent=None, agent_mode=None, join_timeout=None, "
    "limits=None, providers=None, llm_rules=None, default_reply=None, stt_model=None, "
    "**limit_overrides): configure the LiveKit call of this test: its call type (or "
    "call_types='all' / a list to run once per call type), the agent under test "
    "('module:attribute'), how it runs ('in-process' or 'worker'), seconds to wait for the agent "
    "to join, whether a breached limit fails the test or warns (limits='fail' or 'warn'), and "
    "per-test overrides of the call type's limits (e.g. ttfa_ms_max=2000), the agent's AI "
    "providers ('offline' doubles or 'real'), and in offline mode the scripted LLM's rules and "
    "default reply and the STT's model ('domain' or 'generic'). "
    "See https://github.com/pytest-livekit/pytest-livekit#marker"
)

_SERVER_MODES = ("auto", "binary", "docker", "external", "cluster")
AGENT_MODES = ("in-process", "worker")
#: ``offline``: the agent's cloud providers are replaced by doubles; ``real``: kept as written.
PROVIDER_MODES = ("offline", "real")
#: The offline STT's language model: the suite's vocabulary, or pocketsphinx's open one.
STT_MODELS = ("domain", "generic")
#: What a call that breaches a per-call limit of its call type does to its test.
LIMITS_MODES = ("fail", "warn")
#: Whether the managed server runs behind the packet relay (calls can then shape their RTP).
PACKET_RELAY_MODES = ("off", "on")


def _positive_float(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0 seconds")
    return value


def _port(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return value


def _cluster_nodes(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of nodes") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"a cluster needs at least 2 nodes, got {value}")
    return value


def _agent_workers(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of worker processes") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1 worker process, got {value}")
    return value


def add_options(parser: pytest.Parser) -> None:
    """Register the ``livekit`` option group (CLI defaults are None: unset != false)."""
    group = parser.getgroup("livekit", "LiveKit voice-agent calls")
    group.addoption(
        "--livekit-providers",
        choices=PROVIDER_MODES,
        default=None,
        help="the agent's AI providers: offline (default: its cloud STT/LLM/TTS/turn detector "
        "are replaced by offline doubles and the network is guarded) or real (as written; "
        "calls use the paid services and your keys).",
    )
    group.addoption(
        "--livekit-server",
        choices=_SERVER_MODES,
        default=None,
        help="server mode: auto (default: binary, else docker), binary, docker, external "
        "(needs --livekit-url), or cluster (a Redis and --livekit-cluster-nodes livekit-server "
        "nodes; needs redis-server).",
    )
    group.addoption(
        "--livekit-cluster-nodes",
        type=_cluster_nodes,
        default=None,
        help="how many livekit-server nodes --livekit-server=cluster starts (3).",
    )
    group.addoption("--livekit-server-binary", default=None, help="path of a livekit-server binary.")
    group.addoption(
        "--livekit-docker-image",
        default=None,
        help="image for --livekit-server=docker (livekit/livekit-server:v1.13.5).",
    )
    group.addoption(
        "--livekit-url",
        default=None,
        help="use an existing server (ws://host:port); key/secret from --livekit-api-key/"
        "--livekit-api-secret or LIVEKIT_API_KEY/LIVEKIT_API_SECRET.",
    )
    group.addoption("--livekit-api-key", default=None, help="API key for --livekit-url.")
    group.addoption("--livekit-api-secret", default=None, help="API secret for --livekit-url.")
    group.addoption("--livekit-port", type=_port, default=None, help="fixed HTTP port for the managed server.")
    group.addoption(
        "--livekit-agent", default=None, help="agent under test as 'package.module:attribute'."
    )
    group.addoption(
        "--livekit-agent-mode",
        choices=AGENT_MODES,
        default=None,
        help="run the agent in-process (default) or as a real livekit-agents worker process.",
    )
    group.addoption(
        "--livekit-agent-workers",
        type=_agent_workers,
        default=None,
        help="worker mode: how many worker processes register under the agent's name (1); "
        "livekit-server spreads the calls' jobs over them.",
    )
    group.addoption(
        "--livekit-artifacts", default=None, help="folder for per-call artifacts (.livekit/calls)."
    )
    group.addoption(
        "--livekit-startup-timeout",
        type=_positive_float,
        default=None,
        help="seconds to wait for the managed server to be ready (30).",
    )
    group.addoption(
        "--livekit-keep-previous",
        action="store_true",
        default=None,
        help="keep the call folders of earlier runs (by default they are removed once this run "
        "starts its calls, and the summary says how many).",
    )
    group.addoption(
        "--livekit-keep",
        choices=("all", "failed"),
        default=None,
        help="keep the recordings of every call (all, default) or only of calls that did not pass "
        "(failed); traces are always kept.",
    )
    group.addoption(
        "--livekit-report",
        default=None,
        metavar="FILE",
        help="write a self-contained HTML report of the run's calls to FILE.",
    )
    group.addoption(
        "--livekit-baseline-save",
        default=None,
        metavar="NAME",
        help="save this run's metrics as baseline NAME (.livekit/baselines/NAME.json).",
    )
    group.addoption(
        "--livekit-baseline-compare",
        default=None,
        metavar="NAME",
        help="compare this run against baseline NAME (or a baseline .json path); a regression "
        "beyond the tolerances fails the run.",
    )
    group.addoption(
        "--livekit-tolerance",
        action="append",
        default=None,
        metavar="METRIC=ALLOWANCE",
        help="allowed worsening for a baseline metric, e.g. ttfa_p95_ms=20%% or wer_mean=0.05 "
        "(repeatable; overrides [tool.pytest_livekit.baseline.tolerances]).",
    )
    group.addoption(
        "--livekit-otel",
        default=None,
        metavar="FILE",
        help="write the run's calls as OpenTelemetry spans to FILE (OTLP JSON).",
    )
    group.addoption(
        "--livekit-progress",
        choices=("auto", "on", "off"),
        default=None,
        help="progress line while a call runs: auto (on a terminal, not under -q), on, off.",
    )
    group.addoption(
        "--livekit-packet-relay",
        choices=PACKET_RELAY_MODES,
        default=None,
        help="run the managed server behind the packet relay, so calls can shape their RTP with "
        "network= (bandwidth, latency, loss, outages): off (default) or on. Needs scripts/netns-run.",
    )
    group.addoption(
        "--livekit-limits",
        choices=LIMITS_MODES,
        default=None,
        help="a call that breaches a per-call limit of its call type fails its test (fail, "
        "default) or only warns (warn).",
    )
    parser.addini("livekit_server", "server mode: auto, binary, docker, external or cluster", default=None)
    parser.addini("livekit_cluster_nodes", "livekit-server nodes of the cluster server mode (3)", default=None)
    parser.addini("livekit_server_binary", "path of a livekit-server binary", default=None)
    parser.addini("livekit_docker_image", "image for the docker server mode", default=None)
    parser.addini("livekit_agent", "agent under test, 'package.module:attribute'", default=None)
    parser.addini("livekit_agent_mode", "in-process (default) or worker", default=None)
    parser.addini("livekit_agent_workers", "worker mode: worker processes under the agent's name (1)", default=None)
    parser.addini("livekit_artifacts_dir", "folder for per-call artifacts", default=None)
    parser.addini("livekit_startup_timeout", "seconds to wait for server readiness", default=None)
    parser.addini("livekit_keep", "keep recordings of: all (default) or failed calls", default=None)
    parser.addini("livekit_keep_previous", "keep the call folders of earlier runs", type="bool", default=False)
    parser.addini("livekit_report", "write an HTML report of the run's calls to this file", default=None)
    parser.addini("livekit_otel", "write the run's calls as OTLP JSON spans to this file", default=None)
    parser.addini("livekit_progress", "progress line: auto, on or off", default=None)
    parser.addini("livekit_limits", "a breached per-call limit: fail (default) or warn", default=None)
    parser.addini(
        "livekit_packet_relay",
        "run the managed server behind the packet relay that shapes calls' RTP: off (default) or on",
        default=None,
    )
    parser.addini(
        "livekit_providers",
        "the agent's AI providers: offline (default; replaced by offline doubles) or real",
        default=None,
    )
    parser.addini(
        "livekit_stt_phrases",
        "extra phrases for the offline STT's vocabulary (one per line), or the path of a text file",
        type="linelist",
    )
    parser.addini(
        "livekit_call_types", "allowed call types for @pytest.mark.livekit(call_type=...)", type="linelist"
    )


@dataclass
class Setting:
    """A resolved value and where it came from."""

    value: Any
    """The value."""
    source: str
    """``cli``, ``ini``, ``env`` or ``default``."""


@dataclass
class LivekitSettings:
    """The plugin's resolved configuration for this session."""

    server_mode: Setting
    """``binary``, ``docker``, ``external`` or ``cluster``."""
    server_binary: Setting
    """Explicit binary path, or None to search."""
    docker_image: Setting
    """Image for the docker mode."""
    url: Setting
    """External server URL (external mode only)."""
    api_key: Setting
    """External server API key."""
    api_secret: Setting
    """External server API secret (never printed)."""
    port: int | None
    """Fixed port for the managed server."""
    agent_spec: Setting
    """Agent target spec."""
    agent_mode: Setting
    """``in-process`` or ``worker``."""
    artifacts_dir: Path
    """Folder for per-call artifacts."""
    startup_timeout: float
    """Seconds to wait for server readiness."""
    call_types: tuple[str, ...] = ()
    """Allowed call types (empty: any)."""
    call_type_configs: dict[str, Any] = field(default_factory=dict)
    """``[tool.pytest_livekit.call_types.*]`` as :class:`pytest_livekit.metrics.thresholds.CallType`."""
    rootdir: Path = field(default_factory=Path.cwd)
    """pytest rootdir (agent modules are imported relative to it)."""
    keep: str = "all"
    """Keep the recordings of ``all`` calls or only of ``failed`` ones (traces always stay)."""
    report_path: Path | None = None
    """Where to write the HTML report, if asked."""
    otel_path: Path | None = None
    """Where to write the OTLP JSON spans, if asked."""
    baseline_save: str | None = None
    """Save this run's metrics as this baseline name."""
    baseline_compare: str | None = None
    """Compare this run against this baseline name or path."""
    tolerances: dict[str, Any] = field(default_factory=dict)
    """Baseline tolerances (:class:`pytest_livekit.outputs.baseline.Tolerance` per metric)."""
    progress: str = "auto"
    """``auto``, ``on`` or ``off``."""
    limits_mode: Setting = field(default_factory=lambda: Setting("fail", "default"))
    """``fail``: a call that breaches a per-call limit fails its test; ``warn``: it warns."""
    packet_relay: Setting = field(default_factory=lambda: Setting("off", "default"))
    """``on``: the managed server runs behind :class:`~pytest_livekit.conditions.packet_relay.PacketRelay`
    (calls can pass ``network=``); ``off``: media goes straight to the server."""
    providers: Setting = field(default_factory=lambda: Setting("offline", "default"))
    """``offline``: the agent's cloud providers are replaced by doubles; ``real``: kept."""
    llm: dict[str, Any] = field(default_factory=dict)
    """``[tool.pytest_livekit.llm]``: run-wide rules and default reply of the offline LLM."""
    stt_phrases: tuple[str, ...] = ()
    """``livekit_stt_phrases``: extra phrases (or a file path) for the offline STT's vocabulary."""
    keep_previous: bool = False
    """Keep the call folders of earlier runs (``--livekit-keep-previous``)."""
    cluster_nodes: int = 3
    """How many livekit-server nodes the ``cluster`` server mode starts."""
    agent_workers: int = 1
    """Worker mode: how many worker processes register under the agent's name."""
    vocabulary: SuiteVocabulary | None = None
    """The run's offline STT vocabulary, collected once the tests are (see :mod:`pytest_livekit.agent.vocabulary`)."""

    @property
    def session_dir(self) -> Path:
        """Folder of session-wide files (``calls.jsonl``, logs): the artifacts folder's parent."""
        return self.artifacts_dir.parent

    @property
    def baselines_dir(self) -> Path:
        """Folder of saved baselines (``<session dir>/baselines``)."""
        return self.session_dir / "baselines"
    _target: AgentTarget | None = None

    @property
    def agent(self) -> str | None:
        """The configured agent spec, if any."""
        value = self.agent_spec.value
        return str(value) if value else None

    def agent_target(self) -> AgentTarget:
        """Import and cache the configured agent target."""
        if self._target is None:
            from pytest_livekit.agent.in_process import resolve_agent_target

            if self.agent is None:
                raise ConfigError(
                    "no agent under test is configured.\nHint: set livekit_agent = "
                    "package.module:server in your pytest ini, pass --livekit-agent, use "
                    "@pytest.mark.livekit(agent=...), or override the livekit_agent fixture."
                )
            self._target = resolve_agent_target(self.agent, rootdir=self.rootdir)
        return self._target

    def header(self) -> str:
        """The ``livekit:`` pytest header line."""
        mode = self.server_mode
        if mode.value == "external":
            server = f"server=external {self.url.value} ({mode.source})"
        elif mode.value == "cluster":
            binary = self.server_binary.value or "auto-detect"
            server = f"server=cluster {self.cluster_nodes} nodes + redis {binary} ({mode.source})"
        elif mode.value == "docker":
            server = f"server=docker {self.docker_image.value} ({mode.source}; image {self.docker_image.source})"
        else:
            binary = self.server_binary.value or "auto-detect"
            fallback = ", docker if no binary" if mode.source == "auto" else ""
            server = f"server=binary {binary} ({mode.source}{fallback})"
        agent = (
            f"agent={self.agent} ({self.agent_mode.value}, from {self.agent_spec.source})"
            if self.agent
            else f"agent=(not configured; {self.agent_mode.value})"
        )
        limits = f"limits={self.limits_mode.value} ({self.limits_mode.source})"
        providers = f"providers={self.providers.value} ({self.providers.source})"
        if self.providers.value == "real":
            providers += " - WARNING: calls use the agent's real, paid AI services and your keys"
        relay = " · packet relay=on" if self.packet_relay.value == "on" else ""
        return f"livekit: {server} · {agent} · {providers} · {limits}{relay} · artifacts={self.artifacts_dir}"


def _pick(config: pytest.Config, option: str, ini: str | None, env: str | None = None) -> Setting:
    cli_value = config.getoption(option)
    if cli_value is not None:
        return Setting(cli_value, "cli")
    if ini is not None:
        ini_value = config.getini(ini)
        if ini_value:
            return Setting(ini_value, "ini")
    if env is not None and os.environ.get(env):
        return Setting(os.environ[env], "env")
    return Setting(None, "default")


def resolve_settings(config: pytest.Config) -> LivekitSettings:
    """Resolve CLI > ini > env > default, and validate.

    ``LIVEKIT_URL`` in the environment is deliberately ignored: only an explicit
    ``--livekit-url`` sends test traffic to an existing server, so a developer's cloud project
    left in their shell is never called by a test run.
    """
    rootdir = Path(str(config.rootpath))
    mode = _pick(config, "livekit_server", "livekit_server")
    url = _pick(config, "livekit_url", None)
    if mode.value is None:
        mode = Setting("external", "cli --livekit-url") if url.value else Setting("binary", "auto")
    if mode.value not in _SERVER_MODES:
        raise ConfigError(
            f"{mode.value!r} is not a valid livekit_server mode. Valid modes: {', '.join(_SERVER_MODES)}."
            + did_you_mean(mode.value, _SERVER_MODES)
        )
    if mode.value == "auto":
        mode = Setting("external", "auto") if url.value else Setting("binary", "auto")
    nodes_setting = _pick(config, "livekit_cluster_nodes", "livekit_cluster_nodes")
    try:
        cluster_nodes = int(nodes_setting.value) if nodes_setting.value is not None else 3
    except ValueError:
        raise ConfigError(f"livekit_cluster_nodes = {nodes_setting.value!r} is not a number of nodes.") from None
    if cluster_nodes < 2:
        raise ConfigError(f"livekit_cluster_nodes must be at least 2, got {cluster_nodes}.")
    workers_setting = _pick(config, "livekit_agent_workers", "livekit_agent_workers")
    try:
        agent_workers = int(workers_setting.value) if workers_setting.value is not None else 1
    except ValueError:
        raise ConfigError(
            f"livekit_agent_workers = {workers_setting.value!r} is not a number of worker processes."
        ) from None
    if agent_workers < 1:
        raise ConfigError(f"livekit_agent_workers must be at least 1, got {agent_workers}.")
    key = _pick(config, "livekit_api_key", None, "LIVEKIT_API_KEY")
    secret = _pick(config, "livekit_api_secret", None, "LIVEKIT_API_SECRET")
    if mode.value == "external":
        if not url.value:
            raise ConfigError(
                "--livekit-server=external needs --livekit-url=ws://host:port.\n"
                "Hint: or drop --livekit-server to let the plugin start its own server."
            )
        if not str(url.value).startswith(("ws://", "wss://", "http://", "https://")):
            raise ConfigError(
                f"--livekit-url {url.value!r} is not a ws://, wss://, http:// or https:// URL."
            )
        if not key.value or not secret.value:
            raise ConfigError(
                "--livekit-url needs an API key and secret: pass --livekit-api-key/--livekit-api-secret "
                "or set LIVEKIT_API_KEY/LIVEKIT_API_SECRET."
            )
    timeout_setting = _pick(config, "livekit_startup_timeout", "livekit_startup_timeout")
    try:
        timeout = float(timeout_setting.value) if timeout_setting.value is not None else 30.0
    except ValueError:
        raise ConfigError(
            f"livekit_startup_timeout = {timeout_setting.value!r} is not a number of seconds."
        ) from None
    if timeout <= 0:
        raise ConfigError(f"livekit_startup_timeout must be > 0 seconds, got {timeout}.")
    artifacts = _pick(config, "livekit_artifacts", "livekit_artifacts_dir")
    artifacts_dir = Path(artifacts.value) if artifacts.value else Path(".livekit") / "calls"
    if not artifacts_dir.is_absolute():
        artifacts_dir = rootdir / artifacts_dir
    from pytest_livekit.metrics.thresholds import load_call_types

    inipath = Path(str(config.inipath)) if config.inipath else None
    pyproject = inipath if inipath is not None and inipath.name == "pyproject.toml" else rootdir / "pyproject.toml"
    call_type_configs = load_call_types(pyproject)
    listed = [str(c).strip() for c in config.getini("livekit_call_types") if str(c).strip()]
    call_types = tuple(dict.fromkeys([*listed, *call_type_configs]))
    docker_image = _pick(config, "livekit_docker_image", "livekit_docker_image")
    if docker_image.value is None:
        from pytest_livekit.server.docker import DEFAULT_IMAGE

        docker_image = Setting(DEFAULT_IMAGE, "default")
    agent_mode = _pick(config, "livekit_agent_mode", "livekit_agent_mode")
    if agent_mode.value is None:
        agent_mode = Setting("in-process", "default")
    if agent_mode.value not in AGENT_MODES:
        raise ConfigError(
            f"{agent_mode.value!r} is not a valid livekit_agent_mode. Valid modes: {', '.join(AGENT_MODES)}."
            + did_you_mean(agent_mode.value, AGENT_MODES)
        )
    keep = _pick(config, "livekit_keep", "livekit_keep").value or "all"
    if keep not in ("all", "failed"):
        raise ConfigError(f"livekit_keep = {keep!r} is not valid. Valid values: all, failed.")
    progress = _pick(config, "livekit_progress", "livekit_progress").value or "auto"
    if progress not in ("auto", "on", "off"):
        raise ConfigError(f"livekit_progress = {progress!r} is not valid. Valid values: auto, on, off.")
    limits_mode = _pick(config, "livekit_limits", "livekit_limits")
    if limits_mode.value is None:
        limits_mode = Setting("fail", "default")
    if limits_mode.value not in LIMITS_MODES:
        raise ConfigError(
            f"livekit_limits = {limits_mode.value!r} is not valid. Valid values: {', '.join(LIMITS_MODES)}."
        )
    packet_relay = _pick(config, "livekit_packet_relay", "livekit_packet_relay")
    if packet_relay.value is None:
        packet_relay = Setting("off", "default")
    if packet_relay.value not in PACKET_RELAY_MODES:
        raise ConfigError(
            f"livekit_packet_relay = {packet_relay.value!r} is not valid. Valid values: "
            f"{', '.join(PACKET_RELAY_MODES)}." + did_you_mean(str(packet_relay.value), PACKET_RELAY_MODES)
        )

    providers = _pick(config, "livekit_providers", "livekit_providers")
    if providers.value is None:
        providers = Setting("offline", "default")
    if providers.value not in PROVIDER_MODES:
        raise ConfigError(
            f"livekit_providers = {providers.value!r} is not valid. Valid values: {', '.join(PROVIDER_MODES)}."
        )
    from pytest_livekit.metrics.thresholds import plugin_table

    llm_table = plugin_table(pyproject).get("llm", {})
    if not isinstance(llm_table, dict):
        raise ConfigError("[tool.pytest_livekit.llm] must be a table (rules, default_reply).")
    if llm_table or any(c.llm for c in call_type_configs.values()):
        from pytest_livekit.agent.llm_rules import parse_llm_settings

        # a wrong rule is said at start, with where it is, not when a call needs it
        parse_llm_settings(llm_table, "tool.pytest_livekit.llm")
        for name, call_type in call_type_configs.items():
            parse_llm_settings(call_type.llm, f"tool.pytest_livekit.call_types.{name}.llm")
    stt_phrases = tuple(str(p).strip() for p in config.getini("livekit_stt_phrases") if str(p).strip())

    def out_path(option: str, ini: str) -> Path | None:
        value = _pick(config, option, ini).value
        if not value:
            return None
        path = Path(str(value))
        # CLI paths are relative to where pytest was started, ini paths to the rootdir
        return path if path.is_absolute() else (Path.cwd() if config.getoption(option) else rootdir) / path

    compare = config.getoption("livekit_baseline_compare")
    save = config.getoption("livekit_baseline_save")
    tolerances = _tolerances(config, pyproject) if (compare or save) else {}
    if save:
        from pytest_livekit.outputs.baseline import check_baseline_name

        try:
            check_baseline_name(save)
        except ValueError as exc:
            raise ConfigError(f"--livekit-baseline-save: {exc}") from None
    report_path = out_path("livekit_report", "livekit_report")
    otel_path = out_path("livekit_otel", "livekit_otel")
    for label, path in (("--livekit-report", report_path), ("--livekit-otel", otel_path)):
        if path is not None and path.is_dir():
            raise ConfigError(f"{label} {str(path)!r} is a folder; give a file name (e.g. report.html).")
    if compare:
        from pytest_livekit.outputs.baseline import load_baseline

        try:  # a typo in the name is said now, not after a long run
            load_baseline(compare, (artifacts_dir.parent / "baselines"))
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(f"--livekit-baseline-compare: {exc}") from None
    return LivekitSettings(
        server_mode=mode,
        server_binary=_pick(config, "livekit_server_binary", "livekit_server_binary"),
        docker_image=docker_image,
        url=url,
        api_key=key,
        api_secret=secret,
        port=config.getoption("livekit_port"),
        cluster_nodes=cluster_nodes,
        agent_workers=agent_workers,
        agent_spec=_pick(config, "livekit_agent", "livekit_agent"),
        agent_mode=agent_mode,
        artifacts_dir=artifacts_dir,
        startup_timeout=timeout,
        call_types=call_types,
        call_type_configs=call_type_configs,
        rootdir=rootdir,
        keep=str(keep),
        report_path=report_path,
        otel_path=otel_path,
        baseline_save=save,
        baseline_compare=compare,
        tolerances=tolerances,
        progress=str(progress),
        limits_mode=limits_mode,
        packet_relay=packet_relay,
        providers=providers,
        keep_previous=bool(config.getoption("livekit_keep_previous") or config.getini("livekit_keep_previous")),
        llm=dict(llm_table),
        stt_phrases=stt_phrases,
    )


def _tolerances(config: pytest.Config, pyproject: Path) -> dict[str, Any]:
    """Baseline tolerances: ``[tool.pytest_livekit.baseline.tolerances]``, then the CLI's."""
    from pytest_livekit.metrics.thresholds import plugin_table
    from pytest_livekit.outputs.baseline import DEFAULT_TOLERANCES, parse_tolerance

    out: dict[str, Any] = dict(DEFAULT_TOLERANCES)
    table = dict(plugin_table(pyproject).get("baseline", {}).get("tolerances", {}))
    for item in config.getoption("livekit_tolerance") or []:
        metric, sep, allowance = str(item).partition("=")
        if not sep:
            raise ConfigError(
                f"--livekit-tolerance {item!r} is not METRIC=ALLOWANCE (e.g. ttfa_p95_ms=20% or wer_mean=0.05)."
            )
        table[metric.strip()] = allowance.strip()
    for metric, allowance in table.items():
        try:
            out[metric] = parse_tolerance(metric, allowance)
        except ValueError as exc:
            raise ConfigError(f"baseline tolerance {metric} = {allowance!r}: {exc}") from None
    return out


@dataclass(frozen=True, kw_only=True)
class MarkerOptions:
    """Merged ``@pytest.mark.livekit(...)`` keyword arguments (closest marker wins)."""

    call_type: str | None = None
    """Call type label (``refund``, ``booking``, ...)."""
    call_types: tuple[str, ...] = ()
    """Run the test once per call type listed (``"all"``: every configured one)."""
    limits: dict[str, Any] = field(default_factory=dict)
    """Per-test overrides of the call type's limits."""
    agent: str | None = None
    """Agent target spec overriding the configured one."""
    agent_mode: str | None = None
    """``in-process`` or ``worker``, overriding the configured mode."""
    join_timeout: float | None = None
    """Seconds to wait for the agent to join and listen."""
    limits_mode: str | None = None
    """``fail`` or ``warn`` (marker key ``limits=``), overriding ``--livekit-limits``."""
    providers: str | None = None
    """``offline`` or ``real``, overriding ``--livekit-providers``."""
    llm_rules: tuple[Any, ...] | None = None
    """Offline LLM rules of this test (dicts or :class:`~pytest_livekit.offline.Rule`), tried
    before the call type's and the run's."""
    default_reply: str | None = None
    """What the offline LLM says when no rule matches, overriding the call type's and the run's."""
    stt_model: str | None = None
    """``domain`` (the suite's vocabulary, default) or ``generic`` (open vocabulary)."""
    scenarios: tuple[str, ...] = ()
    """Scenario files (relative to the test file) to run the test once per scenario of
    (:mod:`pytest_livekit.call.scenarios`; the ``livekit_scenario`` fixture)."""


# limits_mode is the marker key limits= (the field named limits holds the per-limit overrides)
_MARKER_KEYS = tuple(
    "limits" if f.name == "limits_mode" else f.name for f in fields(MarkerOptions) if f.name != "limits"
)


def marker_options(item: pytest.Item, settings: LivekitSettings) -> MarkerOptions:
    """Merge and validate the item's ``livekit`` markers.

    Raises:
        ConfigError: positional arguments, unknown keys, wrong types or an unknown call type.
    """
    merged: dict[str, Any] = {}
    for mark in reversed(list(item.iter_markers("livekit"))):  # farthest first, closest wins
        if mark.args:
            raise ConfigError(
                f"@pytest.mark.livekit takes keyword arguments only, got positional {mark.args!r}. "
                f"Valid keys: {', '.join(_MARKER_KEYS)}."
            )
        from pytest_livekit.metrics.thresholds import CALL_LIMITS

        unknown = sorted(set(mark.kwargs) - set(_MARKER_KEYS) - set(CALL_LIMITS))
        if unknown:
            raise ConfigError(
                f"{', '.join(map(repr, unknown))} is not a valid @pytest.mark.livekit argument. "
                f"Valid keys: {', '.join(_MARKER_KEYS)}, or a limit: {', '.join(CALL_LIMITS)}."
                + did_you_mean(unknown[0], [*_MARKER_KEYS, *CALL_LIMITS])
            )
        merged.update(mark.kwargs)
    call_type = merged.get("call_type")
    if call_type is not None and not isinstance(call_type, str):
        raise ConfigError(f"call_type must be a string, got {call_type!r}.")
    if call_type is not None and settings.call_types and call_type not in settings.call_types:
        raise ConfigError(
            f"{call_type!r} is not a valid call_type. Valid call types: "
            f"{', '.join(settings.call_types)}.{did_you_mean(call_type, settings.call_types)}\n"
            "Hint: add it to livekit_call_types in your ini."
        )
    from pytest_livekit.metrics.thresholds import CALL_LIMITS, validate_limits

    limits = validate_limits(
        "@pytest.mark.livekit", {k: v for k, v in merged.items() if k in CALL_LIMITS}, CALL_LIMITS
    )
    raw_types = merged.get("call_types")
    call_types: tuple[str, ...] = ()
    if raw_types == "all":
        call_types = settings.call_types
        if not call_types:
            raise ConfigError(
                "call_types='all' but no call types are configured.\nHint: add "
                "[tool.pytest_livekit.call_types.<name>] tables to pyproject.toml."
            )
    elif raw_types is not None:
        if not isinstance(raw_types, (list, tuple)) or not all(isinstance(t, str) for t in raw_types):
            raise ConfigError(f"call_types must be 'all' or a list of call type names, got {raw_types!r}.")
        call_types = tuple(raw_types)
    if call_types and call_type is not None:
        raise ConfigError("give either call_type or call_types, not both.")
    for name in call_types:
        if settings.call_types and name not in settings.call_types:
            raise ConfigError(
                f"{name!r} is not a valid call_type. Valid call types: {', '.join(settings.call_types)}."
                + did_you_mean(name, settings.call_types)
            )
    agent = merged.get("agent")
    if agent is not None and not isinstance(agent, str):
        raise ConfigError(f"agent must be a 'package.module:attribute' string, got {agent!r}.")
    if agent is not None:
        from pytest_livekit.agent.in_process import resolve_agent_target

        resolve_agent_target(agent, rootdir=settings.rootdir)  # fail at collection on a typo
    agent_mode = merged.get("agent_mode")
    if agent_mode is not None and agent_mode not in AGENT_MODES:
        raise ConfigError(
            f"{agent_mode!r} is not a valid agent_mode. Valid modes: {', '.join(AGENT_MODES)}."
            + did_you_mean(agent_mode, AGENT_MODES)
        )
    timeout = merged.get("join_timeout")
    if timeout is not None and (
        not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0
    ):
        raise ConfigError(f"join_timeout must be a number of seconds > 0, got {timeout!r}.")
    limits_mode = merged.get("limits")
    if limits_mode is not None and limits_mode not in LIMITS_MODES:
        raise ConfigError(
            f"limits={limits_mode!r} is not valid. Valid values: {', '.join(map(repr, LIMITS_MODES))}.\n"
            "Hint: override one limit with its own key, e.g. @pytest.mark.livekit(ttfa_ms_max=2000)."
        )
    providers = merged.get("providers")
    if providers is not None and providers not in PROVIDER_MODES:
        raise ConfigError(
            f"providers={providers!r} is not valid. Valid values: {', '.join(map(repr, PROVIDER_MODES))}."
        )
    llm_rules = merged.get("llm_rules")
    if llm_rules is not None:
        if not isinstance(llm_rules, (list, tuple)):
            raise ConfigError(f"llm_rules must be a list of rules (dicts or Rule objects), got {llm_rules!r}.")
        from pytest_livekit.agent.llm_rules import parse_rules

        parse_rules(list(llm_rules), "@pytest.mark.livekit(llm_rules=...)")  # fail at collection
        llm_rules = tuple(llm_rules)
    default_reply = merged.get("default_reply")
    if default_reply is not None and (not isinstance(default_reply, str) or not default_reply.strip()):
        raise ConfigError(f"default_reply must be a non-empty string, got {default_reply!r}.")
    stt_model = merged.get("stt_model")
    if stt_model is not None and stt_model not in STT_MODELS:
        raise ConfigError(
            f"stt_model={stt_model!r} is not valid. Valid values: {', '.join(map(repr, STT_MODELS))}."
        )
    scenarios = merged.get("scenarios", ())
    if isinstance(scenarios, str):
        scenarios = (scenarios,)
    if not isinstance(scenarios, (list, tuple)) or not all(isinstance(p, str) and p for p in scenarios):
        raise ConfigError(f"scenarios must be a scenario file name or a list of them, got {scenarios!r}.")
    if scenarios and call_types:
        raise ConfigError("give either scenarios or call_types, not both (each scenario names its call type).")
    return MarkerOptions(
        scenarios=tuple(scenarios),
        providers=providers,
        llm_rules=llm_rules,
        default_reply=default_reply,
        stt_model=stt_model,
        call_type=call_type,
        call_types=call_types,
        limits=limits,
        agent=agent,
        agent_mode=agent_mode,
        join_timeout=timeout,
        limits_mode=limits_mode,
    )


def offline_plan_for(
    settings: LivekitSettings, call_type: Any, opts: MarkerOptions, *, fixture_rules: Any = ()
) -> OfflinePlan:
    """The :class:`~pytest_livekit.agent.substitution.OfflinePlan` of a test's call: the offline LLM's
    rules (the ``livekit_llm_rules`` fixture's first, then the marker's, the call type's and the
    run's), its default reply (the closest one set), and the run's STT vocabulary.

    Raises:
        ConfigError: one of the fixture's rules is wrong (the message says which and why).
    """
    from pytest_livekit.agent.substitution import OfflinePlan

    fixture_rules = list(fixture_rules or ())
    if fixture_rules:
        from pytest_livekit.agent.llm_rules import parse_rules

        parse_rules(fixture_rules, "the livekit_llm_rules fixture")  # say what is wrong, and where
    type_llm = dict(getattr(call_type, "llm", None) or {})
    run_llm = settings.llm
    rules: list[Any] = [
        *fixture_rules,
        *(opts.llm_rules or ()),
        *type_llm.get("rules", []),
        *run_llm.get("rules", []),
    ]
    default_reply = opts.default_reply or type_llm.get("default_reply") or run_llm.get("default_reply")
    greeting = type_llm.get("greeting") or run_llm.get("greeting")
    latency = type_llm.get("time_to_first_token", run_llm.get("time_to_first_token", 0.0))
    sources = [
        label
        for label, present in (
            ("the livekit_llm_rules fixture", fixture_rules),
            ("the test's marker", opts.llm_rules),
            (f"call type {call_type.name!r}" if call_type is not None else "", type_llm.get("rules")),
            ("[tool.pytest_livekit.llm]", run_llm.get("rules")),
        )
        if present and label
    ]
    vocabulary = settings.vocabulary
    phrases = list(getattr(vocabulary, "texts", ()) or ())
    stt_model = opts.stt_model or ("domain" if phrases else "generic")
    return OfflinePlan(
        llm_rules=rules,
        default_reply=str(default_reply or OfflinePlan.default_reply),
        greeting=str(greeting) if greeting else None,
        stt_phrases=phrases,
        stt_model=stt_model,
        time_to_first_token=float(latency or 0.0),
        source=", ".join(sources) or "no rules",
    )


def collect_vocabulary(
    settings: LivekitSettings, test_paths: list[Path], extra: Sequence[tuple[str, str]] = ()
) -> Any:
    """Build the run's offline STT vocabulary once, from what the suite declares: the call types'
    scripts, ``livekit_stt_phrases``, the texts the collected tests pass to ``say()``, and
    ``extra`` ``(phrase, source)`` pairs (the collected scenarios' caller lines).

    Returns:
        The :class:`~pytest_livekit.agent.vocabulary.SuiteVocabulary` (also stored on ``settings``).

    Raises:
        ConfigError: a phrase has a word the recogniser's dictionary lacks (with where it came from).
    """
    from pytest_livekit.agent.vocabulary import SuiteVocabulary

    vocabulary = SuiteVocabulary.collect(
        call_types=list(settings.call_type_configs.values()),
        stt_phrases=list(settings.stt_phrases) or None,
        test_paths=sorted(set(test_paths)),
        root=settings.rootdir,
    )
    if extra:
        more = SuiteVocabulary.from_phrases(list(extra))
        known = set(vocabulary.texts)
        vocabulary = SuiteVocabulary(
            phrases=vocabulary.phrases + tuple(p for p in more.phrases if p.text not in known), scan=vocabulary.scan
        )
    if vocabulary.phrases:
        vocabulary.check()
    settings.vocabulary = vocabulary
    return vocabulary
