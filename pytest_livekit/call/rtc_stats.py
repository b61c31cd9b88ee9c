"""A ``livekit.rtc`` room's WebRTC side: what a participant received (its stats), and the
relay-only configuration that routes a shaped participant through the packet relay.

Used by the caller's process (its own room) and by the test process (an in-process agent's room).
"""

from __future__ import annotations

from typing import Any

__all__ = ["audio_rtc_stats", "relay_only_config"]


def audio_rtc_stats(stats: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """From a room's ``get_rtc_stats()`` answer: receive-side stats of the remote audio this
    participant gets (``packets_received``, ``packets_lost``, ``jitter`` s, ``concealed_samples``,
    ``total_samples_received``), what its transports received and sent in all
    (``transport_packets_received``, ``transport_packets_sent``: every DTLS, SRTP and SRTCP
    datagram over all its peer connections, counted before SRTP drops replayed copies, so a
    duplicated packet shows here and not in ``packets_received``), its round-trip time to the
    server (``round_trip_time``, s), its
    own audio as sent and as the server's receiver reports saw it (``uplink_packets_sent``,
    ``uplink_packets_lost``, ``uplink_fraction_lost`` of the last report), and the audio codecs in
    use (``{"codecs": [...]}``).
    """
    out: dict[str, float] = {}
    # With a single peer connection (livekit-server >= 1.9 offers it) every stat is in
    # publisher_stats; otherwise receive stats are in subscriber_stats. Scan both.
    everything = [*stats.publisher_stats, *stats.subscriber_stats]
    used = set()
    for item in everything:
        which = item.WhichOneof("stats")
        if which in ("inbound_rtp", "outbound_rtp"):
            stream = getattr(item, which).stream
            if stream.kind == "audio":
                used.add(stream.codec_id)
    codecs = {
        item.codec.rtc.id: {
            "mime_type": item.codec.codec.mime_type,
            "clock_rate": item.codec.codec.clock_rate,
            "channels": item.codec.codec.channels,
            "payload_type": item.codec.codec.payload_type,
        }
        for item in everything
        if item.WhichOneof("stats") == "codec" and item.codec.rtc.id in used
    }
    media = {"codecs": sorted(codecs.values(), key=lambda c: str(c["mime_type"]))}
    for item in everything:
        if item.WhichOneof("stats") == "inbound_rtp":
            rtp = item.inbound_rtp
            if rtp.stream.kind != "audio":
                continue
            out["packets_received"] = out.get("packets_received", 0.0) + rtp.received.packets_received
            out["packets_lost"] = out.get("packets_lost", 0.0) + rtp.received.packets_lost
            out["jitter"] = max(out.get("jitter", 0.0), rtp.received.jitter)
            out["concealed_samples"] = out.get("concealed_samples", 0.0) + rtp.inbound.concealed_samples
            out["total_samples_received"] = (
                out.get("total_samples_received", 0.0) + rtp.inbound.total_samples_received
            )
    for item in everything:
        if item.WhichOneof("stats") == "transport":
            transport = item.transport.transport
            out["transport_packets_received"] = out.get("transport_packets_received", 0.0) + transport.packets_received
            out["transport_packets_sent"] = out.get("transport_packets_sent", 0.0) + transport.packets_sent
    for item in everything:
        if item.WhichOneof("stats") == "remote_inbound_rtp":
            remote = item.remote_inbound_rtp
            if remote.remote_inbound.round_trip_time:
                out["round_trip_time"] = remote.remote_inbound.round_trip_time
            if remote.stream.kind == "audio":
                # the server's receiver report on our audio: our uplink as the server saw it
                out["uplink_packets_lost"] = out.get("uplink_packets_lost", 0.0) + remote.received.packets_lost
                out["uplink_fraction_lost"] = max(out.get("uplink_fraction_lost", 0.0), remote.remote_inbound.fraction_lost)
        elif item.WhichOneof("stats") == "outbound_rtp" and item.outbound_rtp.stream.kind == "audio":
            out["uplink_packets_sent"] = out.get("uplink_packets_sent", 0.0) + item.outbound_rtp.sent.packets_sent
    return out, media


def relay_only_config(ice_servers: list[dict[str, Any]]) -> Any:
    """An ``rtc.RtcConfiguration`` that connects only through the given TURN servers
    (``[{"urls": [...], "username": ..., "password": ...}]``): no host or server-reflexive
    candidate, so no path around them.
    """
    from livekit import rtc
    from livekit.rtc._proto import room_pb2

    return rtc.RtcConfiguration(
        ice_transport_type=room_pb2.TRANSPORT_RELAY,
        ice_servers=[
            room_pb2.IceServer(urls=list(s["urls"]), username=s["username"], password=s["password"]) for s in ice_servers
        ],
    )
