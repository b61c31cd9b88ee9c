"""The support agent over a real mobile network: the caller's RTP shaped by the packet relay
(livekit_packet_relay = on in pyproject; see README "Real network conditions")."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest

from pytest_livekit import LivekitCall, assert_asr_accuracy, assert_tool_called, time_to_first_audio
from pytest_livekit.conditions.media import Bitrate, Conditions
from pytest_livekit.conditions.network import Bandwidth, BurstLoss, Latency, NetworkPath

REFUND = "I want a refund for order one two three four"

#: The ``make_livekit_call`` fixture: keyword overrides in, an ``async with`` call out.
MakeCall = Callable[..., AbstractAsyncContextManager[LivekitCall]]

# A 3G-like uplink: 32 kbit/s with a 300 ms queue, 150 ms one way, 3 % loss in bursts of ~2
# packets. The app caps its Opus encoder at 12 kbit/s (~30 kbit/s on the wire with RTP, SRTP,
# TURN and UDP headers), as mobile apps do: an uncapped encoder (~75 kbit/s on the wire) would
# lose two packets in three to the queue.
THREE_G_UPLINK = NetworkPath(
    uplink=(Bandwidth(kbps=32, queue_ms=300), Latency(ms=150), BurstLoss(rate=0.03, mean_burst=2)),
    seed=5,
)


# Every answer waits 150 ms longer for the caller's speech to arrive: the TTFA limit grows by
# that. A lost burst can cost a word (in a soak with one core busy the STT once heard "order one
# two two three four"): the agent then asks the caller to repeat, as it should rather than look
# up a wrong order, and the caller does, once, as a person on a bad line would.
@pytest.mark.livekit(call_type="refund", ttfa_ms_max=1650)
async def test_refund_over_a_3g_uplink(make_livekit_call: MakeCall) -> None:
    async with make_livekit_call(
        network=THREE_G_UPLINK, conditions=Conditions((Bitrate(max_bitrate_bps=12_000),))
    ) as call:
        await call.say(REFUND)
        exchanges = await call.converse(
            {r"repeat": REFUND, r"shall i refund": "Yes please refund it"}, until=r"on its way", max_turns=4
        )
        repeats = [agent for agent, caller in exchanges if caller == REFUND]
        assert len(repeats) <= 1, f"the caller had to repeat the order {len(repeats)} times: {exchanges}"
        assert_asr_accuracy(call, max_wer=0.2)
        assert_tool_called(call, "lookup_order", order_id="1234")
        assert_tool_called(call, "issue_refund")
    uplink = call.wire()["uplink"]
    # the network was really there: packets lost in bursts and delayed by the latency
    assert uplink["dropped_loss"] > 0
    assert uplink["added_delay_p50_ms"] >= 150


# the reply is cut for 2 s: the caller hears its start (and ~1 s of WebRTC concealment fading
# out), nothing during the cut, and the call goes on: the next answer is heard as usual
@pytest.mark.livekit(call_type="refund")
async def test_a_two_second_downlink_outage_mid_reply(make_livekit_call: MakeCall) -> None:
    async with make_livekit_call(network=NetworkPath()) as call:
        await call.say(REFUND)
        await call.wait_for_agent_audio()
        await call.network_outage(2.0, direction="downlink")
        await call.wait_for_agent_reply()
        await call.say("Yes please refund it")
        await call.wait_for_agent_reply()
        assert_tool_called(call, "issue_refund", order_id="1234")
    assert time_to_first_audio(call.record, 1) is not None  # the downlink came back
    downlink = call.wire()["downlink"]
    assert downlink["dropped_outage"] >= 80  # 2 s of 20 ms packets, plus RTCP
    cut = call.record.network["outages"][0]["t"]
    starts = [s.start for s in call.record.heard]
    assert not [t for t in starts if cut < t < cut + 2.0], (cut, call.record.heard)
