"""A refund-support voice agent built with livekit-agents — the agent under test of the example suite.

It is a normal livekit-agents program (run it as a worker with ``python support_agent.py start``);
only its AI providers are pytest-livekit's offline doubles, so it runs in CI with no API keys:
pocketsphinx STT with a domain language model, espeak-ng TTS, and a rule-based scripted LLM.
Swap them for your cloud providers in production.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    InterruptionOptions,
    JobContext,
    JobProcess,
    RunContext,
    cli,
    room_io,
)
from livekit.agents.llm import function_tool
from livekit.plugins import silero

from pytest_livekit.offline import EspeakTTS, Rule, ScriptedLLM, SphinxSTT, tool

#: Orders the fake back office knows.
ORDERS = {
    "1234": {"item": "blue kettle", "amount": "forty two dollars", "refundable": True},
    "5678": {"item": "garden chair", "amount": "eighty dollars", "refundable": False},
}

#: What callers say in the example suite; the STT's domain language model is built from these.
CALLER_PHRASES = [
    "i want a refund for order one two three four",
    "where is my order one two three four",
    "can i speak to a human please",
    "yes please refund it",
    "hello",
    "thank you goodbye",
    # Backchannels ("mm-hmm" while the agent talks). A cloud STT writes them down ("mhm");
    # without them in the model, pocketsphinx can only answer with the words above ("human
    # you two"), and the patient agent below counts words (hence one-word spellings).
    "mhm",
    "hmm",
    "uh huh",
]

_DIGITS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
           "six": "6", "seven": "7", "eight": "8", "nine": "9"}

RULES = [
    Rule(
        pattern=r"refund.*order one two three four",
        tools=(tool("lookup_order", order_id="1234"),),
        after_tools="I found your order. Shall I refund it to your card?",
    ),
    Rule(
        pattern=r"yes.*refund",
        tools=(tool("issue_refund", order_id="1234"),),
        after_tools="Done. Your refund is on its way.",
    ),
    Rule(
        pattern=r"where.*order one two three four",
        tools=(tool("lookup_order", order_id="1234"),),
        after_tools="Your order has shipped and arrives tomorrow.",
    ),
    Rule(
        pattern=r"human|person|agent",
        tools=(tool("transfer_to_human", reason="caller asked for a human"),),
        after_tools="Sure, I am transferring you to a colleague now.",
    ),
    Rule(pattern=r"goodbye|thank", reply="You are welcome. Goodbye."),
    Rule(pattern=r"hello|hi", reply="Hello. How can I help you today?"),
]


_WORD = {digit: word for word, digit in _DIGITS.items() if word != "oh"}


def spoken_digits_to_id(text: str) -> str:
    """``"one two three four"`` -> ``"1234"``."""
    return "".join(_DIGITS.get(w, "") for w in text.split())


class SupportAgent(Agent):
    """Refund and order support."""

    def __init__(self) -> None:
        super().__init__(instructions="You help callers with refunds and orders.")

    # Docstring "Args" become the tool's schema for the LLM; the injected RunContext is not a
    # tool argument, so it is left out on purpose (D417 below).
    @function_tool
    async def lookup_order(self, context: RunContext[None], order_id: str) -> str:  # noqa: D417
        """Look up an order by its id.

        Args:
            order_id: the order number, digits only.
        """
        order_id = spoken_digits_to_id(order_id) or order_id.replace(" ", "")
        order = ORDERS.get(order_id)
        if order is None:
            return f"no order {order_id}"
        return f"order {order_id}: {order['item']}, {order['amount']}, refundable={order['refundable']}"

    @function_tool
    async def issue_refund(self, context: RunContext[None], order_id: str) -> str:  # noqa: D417
        """Refund an order to the original card.

        Args:
            order_id: the order number, digits only.
        """
        return f"refund issued for order {order_id}"

    @function_tool
    async def transfer_to_human(self, context: RunContext[None], reason: str) -> str:  # noqa: D417
        """Hand the call to a human colleague.

        Args:
            reason: why the caller wants a human.
        """
        return "transfer queued"


#: Silence (seconds) after which the VAD ends the caller's speech. silero's default is 0.55 s;
#: tuned for latency, 0.3 s. silero hears speech go on about 0.1 s after the audio stops and
#: hears silence in a pause about as much late, so the turn ends about 0.4 s after the last
#: word, while a 0.25 s mid-sentence pause looks like about 0.15 s of silence to it.
VAD_MIN_SILENCE_S = 0.3


def prewarm(proc: JobProcess) -> None:
    """Load the models once per process (a worker does this before its first job)."""
    proc.userdata["vad"] = silero.VAD.load(min_silence_duration=VAD_MIN_SILENCE_S)
    # A streaming STT: it decodes while the caller speaks, so the transcript is final a few
    # milliseconds after the VAD's end of speech (the session flushes the stream then).
    stt = SphinxSTT(phrases=CALLER_PHRASES)
    stt.prewarm()
    proc.userdata["stt"] = stt


async def run_support_session(
    ctx: JobContext,
    interruption: InterruptionOptions,
    *,
    agent: Agent | None = None,
    llm: ScriptedLLM | None = None,
) -> None:
    """Start the support agent (or ``agent``) in the job's room with the given interruption options."""
    userdata: dict[str, Any] = ctx.proc.userdata
    session: AgentSession[None] = AgentSession(
        vad=userdata["vad"],
        stt=userdata["stt"],
        llm=llm or ScriptedLLM(RULES),
        tts=EspeakTTS(),
        # Offline and deterministic: VAD-based turns (the default turn detector and adaptive
        # interruption can reach LiveKit Cloud), no speculative LLM calls, barge-in allowed from
        # the first agent turn. Endpointing as a latency-minded team sets it: the turn ends
        # min_delay after the last word (as the VAD places it), but not before the VAD's end of
        # speech and the final transcript; with min_delay equal to the VAD's silence, the VAD
        # decides, about 0.4 s after the last word.
        turn_handling={
            "turn_detection": "vad",
            "interruption": {"mode": "vad", **interruption},
            "endpointing": {"min_delay": VAD_MIN_SILENCE_S, "max_delay": 2.0},
            "preemptive_generation": {"enabled": False},
        },
        aec_warmup_duration=None,
        user_away_timeout=None,
        # On hang-up the session waits this long for a pending user transcript; our STT has
        # nothing pending by then, and the 2 s default would be paid by every test's teardown.
        session_close_transcript_timeout=0.3,
    )
    await session.start(
        agent or SupportAgent(),
        room=ctx.room,
        # A caller whose connection drops and comes back (a full reconnect leaves with reason
        # CLIENT_INITIATED) must not end the conversation; the room's deletion ends it.
        room_options=room_io.RoomOptions(close_on_disconnect=False),
    )
    await ctx.connect()


#: The support agent: half a second of caller speech interrupts it (quick to yield on barge-in).
server = AgentServer()
server.setup_fnc = prewarm


@server.rtc_session(agent_name="support-agent")
async def entrypoint(ctx: JobContext) -> None:
    """Support agent that yields to 0.5 s of caller speech."""
    await run_support_session(ctx, {"min_duration": 0.5})


#: The same agent tuned to ignore backchannels: only a transcript of three or more words
#: interrupts it ("mm-hmm" does not), at the price of yielding only once the caller's words are
#: transcribed. Pick per product; the example suite tests both behaviours.
patient_server = AgentServer()
patient_server.setup_fnc = prewarm


@patient_server.rtc_session(agent_name="support-agent-patient")
async def patient_entrypoint(ctx: JobContext) -> None:
    """Support agent that keeps talking through backchannels."""
    await run_support_session(ctx, {"min_duration": 0.5, "min_words": 3})


# --- The same support line with account verification ----------------------------------------
# Before a refund the agent checks who is calling: it needs the caller's name and the order
# number, and asks for them in whichever order the conversation takes (a caller who mentions
# "my order" is asked for its number first, anyone else for their name first; a caller who
# gives both at once is asked for neither). The verification state lives in the agent, as in a
# real agent (the "LLM" is still the offline rule engine: stateless rules, stateful tools).

#: Account holders of the example back office: name -> their order, with the orders above.
ACCOUNTS = {
    "alice martin": "1234",
    "bob jones": "2468",
    "carol smith": "1357",
    "david brown": "4321",
    "emma wilson": "8642",
}
VERIFIED_ORDERS = {
    "2468": {"item": "red toaster", "amount": "thirty dollars", "refundable": True},
    "1357": {"item": "desk lamp", "amount": "twenty five dollars", "refundable": True},
    "4321": {"item": "coffee grinder", "amount": "fifty five dollars", "refundable": True},
    "8642": {"item": "wool blanket", "amount": "sixty dollars", "refundable": True},
    **ORDERS,
}

_DIGIT = r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)"
_ORDER = rf"(?P<order>{_DIGIT}(?:\s+{_DIGIT}){{3}})"
_NAME = r"(?P<name>[a-z]+ [a-z]+)"

VERIFIED_RULES = [
    Rule(  # both at once: "my name is alice martin and my order number is one two three four"
        pattern=rf"name is {_NAME}\b.*\b{_ORDER}\b",
        tools=(tool("record_name", name="{name}"), tool("record_order_number", order_id="{order:digits}")),
        after_tools="{output}",
    ),
    Rule(pattern=r"\byes\b.*\brefund", tools=(tool("confirm_refund"),), after_tools="{output}"),
    # the last four digits said: "the order number is four three two one" heard in noise as
    # "the order number three four three two one" is still order 4321
    Rule(pattern=rf".*\b{_ORDER}\b", tools=(tool("record_order_number", order_id="{order:digits}"),),
         after_tools="{output}"),
    Rule(pattern=rf"(?:name is|this is|it is|i am) {_NAME}", tools=(tool("record_name", name="{name}"),),
         after_tools="{output}"),
    Rule(pattern=r"(?:refund|money back).*\border\b", tools=(tool("start_refund", ask_first="order number"),),
         after_tools="{output}"),
    Rule(pattern=r"refund|money back", tools=(tool("start_refund", ask_first="name"),), after_tools="{output}"),
    Rule(pattern=r"goodbye|thank", reply="You are welcome. Goodbye."),
    Rule(pattern=r"hello|hi", reply="Hello. How can I help you today?"),
]
#: Said when no rule matches (an answer it did not expect, or words the STT got wrong).
VERIFIED_FALLBACK = "Sorry, I did not catch that. Could you say it again?"

#: What callers of the verification line say: the domain language model covers the names,
#: the four-digit order numbers and the phrasings (a trigram model generalises across them).
VERIFIED_PHRASES = [
    *CALLER_PHRASES,
    "i want a refund",
    "i want a refund for my order",
    "i would like my money back",
    "i would like my money back for my order",
    "i need a refund please",
    "hi i need a refund for an order please",
    *(f"my name is {name}" for name in ACCOUNTS),
    *(f"it is {name}" for name in ACCOUNTS),
    *(f"the order number is {' '.join(_WORD[d] for d in order)}" for order in VERIFIED_ORDERS),
    *(f"it is order {' '.join(_WORD[d] for d in order)}" for order in VERIFIED_ORDERS),
    *(f"my name is {name} and my order number is {' '.join(_WORD[d] for d in order)}"
      for name, order in ACCOUNTS.items()),
    "yes please refund it",
    "sorry what was that",
    "um",
]


def _spell(order_id: str) -> str:
    """``"1234"`` -> ``"one two three four"`` (how the agent reads an order number back)."""
    return " ".join(_WORD.get(d, d) for d in order_id)


class VerifyingSupportAgent(SupportAgent):
    """Refunds only for a verified caller: name and order number must belong together."""

    def __init__(self) -> None:
        super().__init__()
        self.caller_name: str | None = None
        self.order_id: str | None = None
        self.refunded: str | None = None

    def _next_step(self) -> str:
        """What the agent says once it has learnt something: the missing fact, or the offer."""
        if self.caller_name is None:
            return "And what is your name please?"
        first = self.caller_name.split()[0].capitalize()
        if self.order_id is None:
            return f"Thank you {first}. What is the order number?"
        if ACCOUNTS.get(self.caller_name) != self.order_id:
            self.order_id = None
            return f"Sorry {first}, that order is not on your account. What is the order number?"
        order = VERIFIED_ORDERS[ACCOUNTS[self.caller_name]]
        return f"Thank you {first}, you are verified. I found your {order['item']}. Shall I refund it?"

    @function_tool
    async def start_refund(self, context: RunContext[None], ask_first: str) -> str:  # noqa: D417
        """Start a refund: the caller must be verified first.

        Args:
            ask_first: which detail to ask for first, "name" or "order number".
        """
        if ask_first == "order number":
            return "I can help with that. What is the order number?"
        return "I can help with that. First, what is your name?"

    @function_tool
    async def record_name(self, context: RunContext[None], name: str) -> str:  # noqa: D417
        """Record the caller's full name for verification.

        Args:
            name: first and last name, lower case.
        """
        name = " ".join(name.lower().split())
        if name not in ACCOUNTS:
            return "Sorry, I cannot find an account under that name. What is your name?"
        self.caller_name = name
        return self._next_step()

    @function_tool
    async def record_order_number(self, context: RunContext[None], order_id: str) -> str:  # noqa: D417
        """Record the order number the caller gave.

        Args:
            order_id: the order number, digits only.
        """
        order_id = spoken_digits_to_id(order_id) or order_id.replace(" ", "")
        if order_id not in VERIFIED_ORDERS:
            return f"Sorry, I cannot find order {_spell(order_id)}. What is the order number?"
        self.order_id = order_id
        if self.caller_name is None:
            return "Thank you. And what is your name please?"
        return self._next_step()

    @function_tool
    async def confirm_refund(self, context: RunContext[None]) -> str:
        """Refund the verified caller's order to the original card."""
        if self.caller_name is None or self.order_id is None or ACCOUNTS.get(self.caller_name) != self.order_id:
            return "I need your name and order number before I can refund anything."
        self.refunded = self.order_id
        return f"Done. Your refund of {VERIFIED_ORDERS[self.order_id]['amount']} is on its way."


def prewarm_verified(proc: JobProcess) -> None:
    """Load the models once per process, with the verification line's vocabulary."""
    proc.userdata["vad"] = silero.VAD.load(min_silence_duration=VAD_MIN_SILENCE_S)
    stt = SphinxSTT(phrases=VERIFIED_PHRASES)
    stt.prewarm()
    proc.userdata["stt"] = stt


#: The verification line: refunds after the caller's name and order number check out.
verified_server = AgentServer()
verified_server.setup_fnc = prewarm_verified


@verified_server.rtc_session(agent_name="support-agent-verified")
async def verified_entrypoint(ctx: JobContext) -> None:
    """Support agent that verifies the caller before a refund."""
    await run_support_session(
        ctx, {"min_duration": 0.5}, agent=VerifyingSupportAgent(),
        llm=ScriptedLLM(VERIFIED_RULES, fallback=VERIFIED_FALLBACK),
    )


if __name__ == "__main__":
    cli.run_app(server)
