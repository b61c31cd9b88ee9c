"""Integration: what the plugin's tokens and server must not allow, tried against the real server.

The caller's and the in-process agent's tokens carry the least grants: each joins one room and
nothing else, and the caller publishes no data. Here they try what they must not do (admin calls,
joining another room, posing as the agent, publishing a camera, sending on the agent's data topics
and RPC) and the real livekit-server refuses. The server listens on loopback only (or on the test
namespace's private addresses for media), in binary, Docker and cluster mode alike.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pytest_livekit.server.tokens import agent_token, caller_token

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_AGENT = "example_suite.support_agent:server"


def _twirp(server: Any, method: str, token: str, body: dict[str, Any]) -> int:
    """POST a RoomService call with ``token`` as the bearer; the HTTP status."""
    request = urllib.request.Request(
        server.url.replace("ws://", "http://") + f"/twirp/livekit.RoomService/{method}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _tokens(server: Any, room: str) -> dict[str, str]:
    key, secret = server.api_key, server.api_secret
    return {
        "caller": caller_token(key, secret, room, identity="intruder"),
        "agent": agent_token(key, secret, room, identity="intruder-agent"),
    }


@pytest.mark.livekit(agent=EXAMPLE_AGENT)
async def test_call_tokens_cannot_administer_or_reach_another_room(livekit_call: Any, livekit_server: Any) -> None:
    room = livekit_call.room_name
    other_room = f"{room}-other"
    for role, token in _tokens(livekit_server, room).items():
        refused = {
            "ListRooms": _twirp(livekit_server, "ListRooms", token, {}),
            "CreateRoom": _twirp(livekit_server, "CreateRoom", token, {"name": other_room}),
            "DeleteRoom": _twirp(livekit_server, "DeleteRoom", token, {"room": room}),
            "ListParticipants(other room)": _twirp(livekit_server, "ListParticipants", token, {"room": other_room}),
            "RemoveParticipant(caller)": _twirp(
                livekit_server, "RemoveParticipant", token, {"room": room, "identity": "caller"}
            ),
            "UpdateParticipant(own grants)": _twirp(
                livekit_server, "UpdateParticipant", token,
                {"room": room, "identity": "intruder", "permission": {"can_publish": True, "agent": True}},
            ),
        }
        allowed = {call: status for call, status in refused.items() if status not in (401, 403)}
        assert not allowed, f"the {role} token was allowed: {allowed}"
    # the call itself is untouched by the refused attempts
    await livekit_call.say("Hello")
    await livekit_call.wait_for_agent_reply()


@pytest.mark.livekit(agent=EXAMPLE_AGENT)
async def test_the_caller_token_cannot_pose_as_the_agent_or_publish_a_camera(
    livekit_call: Any, livekit_server: Any
) -> None:
    from livekit import api, rtc

    room = rtc.Room()
    token = caller_token(livekit_server.api_key, livekit_server.api_secret, livekit_call.room_name, identity="intruder")
    await room.connect(livekit_server.url, token)
    try:
        # livekit rtc 1.1 returns from set_attributes even when the server refuses it (the
        # server logs "could not update metadata"): what counts is what the room shows
        with contextlib.suppress(Exception):
            await asyncio.wait_for(room.local_participant.set_attributes({"lk.agent.state": "speaking"}), 10)
        source = rtc.VideoSource(64, 64)
        track = rtc.LocalVideoTrack.create_video_track("camera", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
        with pytest.raises(Exception):  # noqa: B017,PT011 - the SDK's error type varies; refusal is the point
            await asyncio.wait_for(room.local_participant.publish_track(track, options), 10)
        async with api.LiveKitAPI(
            livekit_server.url.replace("ws://", "http://"), livekit_server.api_key, livekit_server.api_secret
        ) as lk:
            people = await lk.room.list_participants(api.ListParticipantsRequest(room=livekit_call.room_name))
        intruder = next(p for p in people.participants if p.identity == "intruder")
        assert "lk.agent.state" not in intruder.attributes
        assert intruder.kind == api.ParticipantInfo.Kind.STANDARD
        assert not intruder.tracks  # no camera got through
    finally:
        await room.disconnect()


def test_token_claims_are_the_least_grants(livekit_server: Any) -> None:
    from livekit import api

    verifier = api.TokenVerifier(livekit_server.api_key, livekit_server.api_secret)
    tokens = _tokens(livekit_server, "room-a")
    for role, token in tokens.items():
        video = verifier.verify(token).video
        assert video is not None, role
        assert video.room == "room-a" and video.room_join
        for admin in ("room_create", "room_list", "room_record", "room_admin", "ingress_admin", "recorder", "hidden"):
            assert not getattr(video, admin), (role, admin)
    caller = verifier.verify(tokens["caller"]).video
    assert caller is not None
    assert list(caller.can_publish_sources or []) == ["microphone"]
    assert not caller.can_update_own_metadata and not caller.agent
    # explicit False: VideoGrants (and the server) take a missing canPublishData as True
    assert caller.can_publish_data is False


# -- the caller publishes no data --------------------------------------------------------------


def _caller_grants_with_data(server: Any, room: str, identity: str) -> str:
    """The caller's grants plus ``can_publish_data`` (what the caller token carried before): the
    control that shows the agent answers a standard participant who may publish data."""
    from livekit import api

    grants = api.VideoGrants(
        room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True,
        can_publish_sources=["microphone"],
    )
    return api.AccessToken(server.api_key, server.api_secret).with_identity(identity).with_grants(grants).to_jwt()


async def _rpc_error_code(room: Any, agent: str) -> int | None:
    """Ask the agent for an RPC method nobody registered; the error code (None: it answered)."""
    from livekit import rtc

    try:
        # the round-trip bound is what a refused request waits out (the SDK's default is 7 s)
        await room.local_participant.perform_rpc(
            destination_identity=agent, method="pytest-livekit.probe", payload="probe",
            response_timeout=8.0, max_round_trip_latency=4.0,
        )
    except rtc.RpcError as exc:
        return int(exc.code)
    return None


async def _outcome(coro: Any) -> str:
    """What became of a request: ``answered``, or the exception's type name."""
    try:
        await coro
    except Exception as exc:  # noqa: BLE001 - the kind of failure is the result
        return type(exc).__name__
    return "answered"


@pytest.mark.livekit(agent=EXAMPLE_AGENT)
async def test_data_the_caller_publishes_never_reaches_the_agent(livekit_call: Any, livekit_server: Any) -> None:
    """A participant with the caller's token sends on the agent's topics (``lk.agent.session``:
    a RemoteSession ``run`` request that would make the agent handle "a refund", a forged session
    event; ``lk.chat``; a raw data packet; an RPC): the server drops all of it, neither the agent
    nor a witness participant gets any. A control participant with the same grants plus
    ``can_publish_data`` is answered by the agent at once, so the silence is the missing grant's
    doing. The call's record shows none of it.
    """
    from livekit import rtc
    from livekit.agents.voice.remote_session import (
        TOPIC_SESSION_MESSAGES,
        RemoteSession,
        RoomSessionTransport,
    )
    from livekit.protocol.agent_pb import agent_session as agent_pb

    agent = livekit_call.agent_identity
    key, secret, url, name = livekit_server.api_key, livekit_server.api_secret, livekit_server.url, livekit_call.room_name
    intruder, control, witness = rtc.Room(), rtc.Room(), rtc.Room()
    seen: list[str] = []  # what reached the witness from the intruder, whatever the topic
    heard_agent = asyncio.Event()  # the witness hears the agent's session broadcasts

    def on_stream(kind: str) -> Any:
        def handler(reader: Any, identity: str) -> None:
            if identity == "intruder":
                seen.append(kind)
            elif identity == agent:
                heard_agent.set()
        return handler

    def on_packet(packet: rtc.DataPacket) -> None:
        if packet.participant is not None and packet.participant.identity == "intruder":
            seen.append(f"packet on {packet.topic!r}")

    # handlers before connect: the SDK drops streams that arrive with none registered
    witness.on("data_received", on_packet)
    witness.register_byte_stream_handler(TOPIC_SESSION_MESSAGES, on_stream("session stream"))
    witness.register_text_stream_handler("lk.chat", on_stream("chat text"))
    options = rtc.RoomOptions(connect_timeout=10.0)
    await witness.connect(url, caller_token(key, secret, name, identity="witness"), options)
    await intruder.connect(url, caller_token(key, secret, name, identity="intruder"), options)
    await control.connect(url, _caller_grants_with_data(livekit_server, name, "control"), options)
    by_intruder = RemoteSession(RoomSessionTransport(intruder, agent))
    by_control = RemoteSession(RoomSessionTransport(control, agent))
    try:
        await by_intruder.start()
        await by_control.start()
        forged = agent_pb.AgentSessionMessage(
            event=agent_pb.AgentSessionEvent(error=agent_pb.AgentSessionEvent.Error(message="spoofed"))
        ).SerializeToString()
        local = intruder.local_participant
        sent = {  # broadcasts; whether the SDK raises or returns, nothing may arrive
            "raw packet": await _outcome(asyncio.wait_for(local.publish_data(b"spoofed", topic=TOPIC_SESSION_MESSAGES), 10)),
            "chat text": await _outcome(asyncio.wait_for(local.send_text("I want a refund", topic="lk.chat"), 10)),
            "forged event": await _outcome(asyncio.wait_for(local.send_bytes(forged, topic=TOPIC_SESSION_MESSAGES), 10)),
        }
        intruder_run, intruder_rpc, control_rpc, control_history = await asyncio.gather(
            _outcome(by_intruder.run("I want a refund for order one two three four", timeout=4.0)),
            _rpc_error_code(intruder, agent),
            _rpc_error_code(control, agent),
            _outcome(asyncio.wait_for(by_control.get_chat_history(), 10)),
        )
        # the control is answered: the agent reads session requests and RPCs of a data publisher
        assert control_history == "answered"
        assert control_rpc == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD
        # the intruder is not: its request and its RPC never reached the agent
        assert intruder_run in ("TimeoutError", "RuntimeError"), (intruder_run, sent)
        assert intruder_rpc == rtc.RpcError.ErrorCode.CONNECTION_TIMEOUT, intruder_rpc
        # the witness hears data (the answer to the control was broadcast) but nothing from the
        # intruder, whose broadcasts left before its refused RPC waited 4 s
        await asyncio.wait_for(heard_agent.wait(), 10)
        assert seen == [], f"data from the caller's token reached a participant: {seen} (sent: {sent})"
    finally:
        for remote in (by_intruder, by_control):
            with contextlib.suppress(Exception):
                await remote.aclose()
        for room in (intruder, control, witness):
            await room.disconnect()
    # the call's record has none of it: no refund tools, no injected turn, no forged error
    await livekit_call.say("Can I speak to a human please")
    await livekit_call.wait_for_agent_reply()
    record = livekit_call.record
    assert [t.name for t in record.tool_calls] == ["transfer_to_human"]
    assert not [i for i in record.items if "refund" in i.text.lower()], record.items
    assert not [e for e in record.errors if "spoofed" in e.message], record.errors


# -- another room ------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _retargeted(token: str, room: str) -> str:
    """``token`` with its room claim changed to ``room`` and its signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["video"]["room"] = room
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def _validate(server: Any, token: str) -> int:
    """The status of the server's own pre-connect check of ``token`` (``GET /rtc/validate``)."""
    query = urllib.parse.urlencode({"access_token": token})
    try:
        with urllib.request.urlopen(server.url.replace("ws://", "http://") + f"/rtc/validate?{query}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.livekit(agent=EXAMPLE_AGENT)
async def test_the_caller_token_cannot_join_another_room(livekit_call: Any, livekit_server: Any) -> None:
    """The caller's token names its room; a client cannot choose another one. The same token with
    its room claim changed, or a token for another room signed with any other secret, is refused
    by the server when connecting, and the other room never comes to exist.
    """
    from livekit import api, rtc

    key, secret = livekit_server.api_key, livekit_server.api_secret
    own, other = livekit_call.room_name, f"{livekit_call.room_name}-other"
    token = caller_token(key, secret, own, identity="intruder")
    attempts = {
        "room claim changed": _retargeted(token, other),
        "signed with another secret": caller_token(key, "not-the-server-secret-" + "x" * 32, other, identity="intruder"),
    }
    assert _validate(livekit_server, token) == 200  # the check itself accepts an honest token
    for what, forged in attempts.items():
        assert _validate(livekit_server, forged) == 401, what
        room = rtc.Room()
        try:
            with pytest.raises(rtc.ConnectError):
                await room.connect(livekit_server.url, forged, rtc.RoomOptions(connect_timeout=10.0))
        finally:
            await room.disconnect()
    async with api.LiveKitAPI(livekit_server.url.replace("ws://", "http://"), key, secret) as lk:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[own, other]))
    assert [r.name for r in rooms.rooms] == [own]


# -- listening sockets -------------------------------------------------------------------------


def _descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (a container's process tree, say)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(children.get(current, []))
    return found


def _sockets(pids: set[int]) -> list[tuple[str, str, str, int]]:
    """``(netid, state, local address, pid)`` of every TCP and UDP socket the processes hold
    (``ss`` reads them from the kernel and maps them to processes through /proc/<pid>/fd).
    """
    out = subprocess.run(["ss", "-H", "-a", "-n", "-p", "-t", "-u"], capture_output=True, text=True, check=True).stdout  # noqa: S607
    found = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+),", line)} & pids
        if owners:
            netid, state, _rq, _sq, local, *_ = line.split()
            found.append((netid, state, local, min(owners)))
    return found


def _exposed(sockets: list[tuple[str, str, str, int]]) -> list[str]:
    """The sockets that listen beyond what is allowed: TCP (signalling, API, Redis) on loopback
    only; UDP (media) on loopback or, inside the test's network namespace (scripts/netns-run), on
    its private addresses; never a wildcard. UDP counts in any state (a conservative reading)."""
    in_netns = os.environ.get("PYTEST_LIVEKIT_IN_NETNS") == "1"
    private = os.environ.get("PYTEST_LIVEKIT_NETNS_ADDRESSES", "10.213.0.1 10.213.0.2").split()
    bad = []
    for netid, state, local, pid in sockets:
        if netid == "tcp" and state != "LISTEN":
            continue  # an outgoing connection (a node to its Redis, say)
        host = local.rsplit(":", 1)[0].strip("[]").split("%")[0]
        if host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1"):
            continue
        wildcard = host in ("0.0.0.0", "*", "::", "::ffff:0.0.0.0")
        if netid == "udp" and not wildcard and (host in private if in_netns else True):
            continue
        bad.append(f"{netid} {state} {local} (pid {pid})")
    return bad


def _port(local: str) -> int:
    return int(local.rsplit(":", 1)[1])


def _check_server(sockets: list[tuple[str, str, str, int]], ports: Any, what: str) -> None:
    """The server's own ports are among the sockets found (the right process was read), and
    nothing listens beyond loopback / the namespace."""
    assert any(n == "tcp" and s == "LISTEN" and _port(a) == ports.http for n, s, a, _ in sockets), (what, sockets)
    assert any(n == "udp" and _port(a) == ports.rtc_udp for n, s, a, _ in sockets), (what, sockets)
    assert not _exposed(sockets), (what, _exposed(sockets))


#: Why the server binds nothing but its ports during calls: with full ICE, livekit-server gathers
#: server-reflexive candidates from its stun_servers on a socket bound to 0.0.0.0, one per peer
#: connection (measured in the namespace: two sockets while two participants publish); the
#: plugin's config runs it ICE-lite (rtc.use_ice_lite), which gathers nothing.


@contextlib.asynccontextmanager
async def _two_participants(url: str, key: str, secret: str) -> Any:
    """Two participants in one room, each publishing a microphone the other has subscribed to:
    the server then holds its peer connections, with whatever sockets they bind."""
    from livekit import rtc

    rooms: list[Any] = []
    subscribed = asyncio.Event()
    try:
        for identity in ("first", "second"):
            room = rtc.Room()
            rooms.append(room)
            if identity == "second":
                room.on("track_subscribed", lambda *_: subscribed.set())
            await room.connect(url, caller_token(key, secret, "loopback-check", identity=identity),
                               rtc.RoomOptions(connect_timeout=10.0))
            track = rtc.LocalAudioTrack.create_audio_track("mic", rtc.AudioSource(48000, 1))
            await room.local_participant.publish_track(
                track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            )
        await asyncio.wait_for(subscribed.wait(), 15)  # both directions negotiated and connected
        yield
    finally:
        for room in rooms:
            await room.disconnect()


def test_the_server_listens_on_loopback_only(tmp_path: Path, livekit_server: Any) -> None:
    """Signalling and API (TCP) on loopback; media (UDP) on loopback or, inside the test's own
    network namespace (scripts/netns-run), on its private veth addresses; never a wildcard.

    A server of its own (the plugin's config, as binary mode starts it), idle: the session's
    server may still hold the peer connections of earlier calls (see the test below).
    """
    from pytest_livekit.server.binary import LivekitServer, find_server_binary

    with LivekitServer(find_server_binary(root=ROOT), log_path=tmp_path / "server.log") as server:
        assert server.pid is not None
        _check_server(_sockets({server.pid}), server.ports, "livekit-server")
    assert os.environ.get("LIVEKIT_API_SECRET") != livekit_server.api_secret  # not leaked into our env


async def test_the_server_listens_on_loopback_only_during_a_call(tmp_path: Path) -> None:
    """The same while participants are connected: a peer connection's sockets count too."""
    from pytest_livekit.server.binary import LivekitServer, find_server_binary

    with LivekitServer(find_server_binary(root=ROOT), log_path=tmp_path / "server.log") as server:
        assert server.pid is not None
        async with _two_participants(server.url, server.api_key, server.api_secret):
            _check_server(_sockets({server.pid}), server.ports, "livekit-server during a call")


def _container_pid(container_id: str) -> int:
    """The host pid of a container's first process (a child of containerd-shim)."""
    pid = int(subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", container_id],  # noqa: S607
        capture_output=True, text=True, check=True,
    ).stdout.strip())
    assert pid > 0, f"container {container_id[:12]} has no process"
    return pid


@pytest.mark.docker
async def test_the_docker_server_listens_on_loopback_only(tmp_path: Path) -> None:
    """The container runs with host networking (in the test's namespace under scripts/netns-run):
    its livekit-server binds what the binary server binds, idle."""
    from pytest_livekit.server.docker import DockerLivekitServer

    with DockerLivekitServer(log_path=tmp_path / "server.log") as server:
        assert server.container_id is not None
        pids = _descendants(_container_pid(server.container_id))
        _check_server(_sockets(pids), server.ports, f"container {server.container_id[:12]}")


@pytest.mark.docker
async def test_the_docker_server_listens_on_loopback_only_during_a_call(tmp_path: Path) -> None:
    """The same with two participants connected."""
    from pytest_livekit.server.docker import DockerLivekitServer

    with DockerLivekitServer(log_path=tmp_path / "server.log") as server:
        assert server.container_id is not None
        pids = _descendants(_container_pid(server.container_id))
        async with _two_participants(server.url, server.api_key, server.api_secret):
            _check_server(_sockets(pids), server.ports, f"container {server.container_id[:12]} during a call")


NO_REDIS = pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("CI"),
    reason="no redis-server (apt-get install -y redis-server)",  # in CI a missing one fails the start
)


@contextlib.contextmanager
def _cluster(tmp_path: Path) -> Any:
    from pytest_livekit.server.binary import find_server_binary
    from pytest_livekit.server.cluster import LivekitCluster

    cluster = LivekitCluster(find_server_binary(root=ROOT), nodes=3, log_dir=tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.cleanup_files()


def _check_cluster(cluster: Any, when: str) -> None:
    for index, node in enumerate(cluster.nodes):
        assert node.pid is not None
        _check_server(_sockets({node.pid}), node.ports, f"node {index} {when}")
    redis = cluster.redis
    assert redis.pid is not None
    sockets = _sockets({redis.pid})
    assert any(n == "tcp" and s == "LISTEN" and _port(a) == redis.port for n, s, a, _ in sockets), sockets
    assert not _exposed(sockets), (f"redis {when}", _exposed(sockets))


@NO_REDIS
def test_the_cluster_listens_on_loopback_only(tmp_path: Path) -> None:
    """Every node of a cluster and its Redis, idle: nothing beyond loopback / the namespace."""
    with _cluster(tmp_path) as cluster:
        _check_cluster(cluster, "idle")


@NO_REDIS
async def test_the_cluster_listens_on_loopback_only_during_a_call(tmp_path: Path) -> None:
    """The same with two participants connected (their room on one of the nodes)."""
    with _cluster(tmp_path) as cluster:
        async with _two_participants(cluster.urls[0], cluster.api_key, cluster.api_secret):
            _check_cluster(cluster, "during a call")
