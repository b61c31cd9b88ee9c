"""Integration: what the plugin's tokens and server must not allow, tried against the real server.

The caller's and the in-process agent's tokens carry the least grants: each joins one room and
nothing else. Here they try what they must not do (admin calls, other rooms, posing as the agent,
publishing a camera) and the real livekit-server refuses. The server listens on loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest

from pytest_livekit.tokens import agent_token, caller_token

pytestmark = pytest.mark.integration

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
        assert video.room == "room-a" and video.room_join
        for admin in ("room_create", "room_list", "room_record", "room_admin", "ingress_admin", "recorder", "hidden"):
            assert not getattr(video, admin), (role, admin)
    caller = verifier.verify(tokens["caller"]).video
    assert list(caller.can_publish_sources or []) == ["microphone"]
    assert not caller.can_update_own_metadata and not caller.agent


def test_the_server_listens_on_loopback_only(pytestconfig: pytest.Config, livekit_server: Any) -> None:
    """Signalling and API (TCP) on loopback; media (UDP) on loopback or, inside the test's own
    network namespace (scripts/netns-run), on its private veth addresses; never a wildcard.
    """
    from pytest_livekit.plugin import SERVER_KEY

    server = pytestconfig.stash[SERVER_KEY]
    assert server.pid is not None
    out = subprocess.run(["ss", "-H", "-a", "-n", "-p", "-t", "-u"], capture_output=True, text=True, check=True).stdout  # noqa: S607
    mine = [line.split() for line in out.splitlines() if f"pid={server.pid}," in line]
    listening = [f for f in mine if f[0] == "udp" or f[1] == "LISTEN"]
    assert any(f[0] == "tcp" for f in listening) and any(f[0] == "udp" for f in listening), out
    in_netns = os.environ.get("PYTEST_LIVEKIT_IN_NETNS") == "1"
    for netid, _state, _rq, _sq, local, *_ in listening:
        host = local.rsplit(":", 1)[0].strip("[]")
        loopback = host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1")
        if netid == "tcp" or not in_netns:
            assert loopback or (netid == "udp" and host not in ("0.0.0.0", "*", "::")), (netid, local)
        else:
            assert loopback or host.startswith("10.213.0."), (netid, local)  # the namespace's veth pair
    assert os.environ.get("LIVEKIT_API_SECRET") != livekit_server.api_secret  # not leaked into our env
