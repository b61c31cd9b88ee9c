"""Least-grant access tokens for the participants of a test call."""

from __future__ import annotations

from datetime import timedelta

from livekit import api

#: Attribute the worker sets on its participant; RemoteSession / wait_for_agent match it.
AGENT_NAME_ATTRIBUTE = "lk.agent.name"


def agent_token(
    api_key: str,
    api_secret: str,
    room: str,
    *,
    identity: str,
    agent_name: str = "agent-under-test",
    ttl: timedelta = timedelta(minutes=30),
) -> str:
    """Token for an in-process agent, mirroring what the server mints for dispatched agents.

    ``kind="agent"`` matters: the SFU keeps the ``participant_identity`` of data-stream headers
    only for agents, so without it user transcripts arrive attributed to the agent.
    ``can_update_own_metadata`` lets RoomIO publish the ``lk.agent.state`` attribute.
    """
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_kind("agent")
        .with_ttl(ttl)
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room,
                agent=True,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
                can_update_own_metadata=True,
            )
        )
        .with_attributes({AGENT_NAME_ATTRIBUTE: agent_name})
        .to_jwt()
    )


def caller_token(
    api_key: str,
    api_secret: str,
    room: str,
    *,
    identity: str,
    ttl: timedelta = timedelta(minutes=30),
    dispatch_agent: str | None = None,
    dispatch_metadata: str = "",
) -> str:
    """Token for the scripted caller: join this one room, publish a microphone, subscribe.

    No data publishing: the caller only reads data (the agent's session events on
    ``lk.agent.session``, its transcriptions) and sends none; LiveKit grants cannot limit data to
    some topics, so with the grant a holder of this token could send on the agent's topics
    (``lk.agent.session``, ``lk.chat``, RPC). The server drops data from a participant without
    ``can_publish_data``.

    With ``dispatch_agent``, the room this join creates gets an explicit dispatch of that agent
    name (token dispatch: the server assigns the job as part of creating the room).
    """
    token = api.AccessToken(api_key, api_secret)
    if dispatch_agent:
        token = token.with_room_config(
            api.RoomConfiguration(
                agents=[api.RoomAgentDispatch(agent_name=dispatch_agent, metadata=dispatch_metadata)]
            )
        )
    return (
        token
        .with_identity(identity)
        .with_ttl(ttl)
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=False,  # explicit: VideoGrants defaults it to True
                can_publish_sources=["microphone"],
            )
        )
        .to_jwt()
    )
