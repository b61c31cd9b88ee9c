"""Integration: the HTML report of two real calls, rendered by headless Chromium (Debian's chromium).

The inner run places two real calls through a real livekit-server with the example agent (one
passes, one fails on a limit) and writes ``--livekit-report=report.html``. Chromium, started
inside the test's network namespace, dumps the DOM (the report's script counts what rendered with
a non-zero size) and takes a screenshot whose pixels must show the timeline's caller and agent
colours. Chromium's network log must hold no request made by the page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from pytest_livekit.outputs.report import AGENT_COLOUR, CALLER_COLOUR

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_AGENT = "example_suite.support_agent:server"
CHROMIUM_TIMEOUT_S = 120

PYPROJECT = f"""
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
asyncio_default_test_loop_scope = "function"
livekit_agent = "{EXAMPLE_AGENT}"

[tool.pytest_livekit.call_types.refund]
ttfa_ms_max = 5000
wer_max = 0.5
expected_tools = ["lookup_order"]

[tool.pytest_livekit.call_types.refund.slo]
ttfa_p95_ms_max = 5000

[tool.pytest_livekit.call_types.escalation]
ttfa_ms_max = 5000
expected_tools = ["transfer_to_human"]
"""

CALLS = """
import pytest
from pytest_livekit import assert_within_limits

REFUND = "I want a refund for order one two three four"


@pytest.mark.livekit(call_type="refund")
async def test_refund(livekit_call):
    await livekit_call.say(REFUND)
    await livekit_call.wait_for_agent_reply()
    assert_within_limits(livekit_call)


# 1 ms cannot be met: this call fails on its limit, so the report shows a failed call first
@pytest.mark.livekit(call_type="escalation", ttfa_ms_max=1)
async def test_barge_in_then_escalation(livekit_call):
    await livekit_call.say(REFUND)
    await livekit_call.barge_in("Can I speak to a human please", offset_s=0.2)
    await livekit_call.wait_for_agent_reply()
    assert_within_limits(livekit_call)
"""


@pytest.fixture
def chromium() -> str:
    """Debian's chromium; a missing browser skips locally and fails in CI."""
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run every test: no chromium (apt-get install chromium)")
        pytest.skip("no chromium browser (apt-get install chromium)")
    return path


def run_chromium(binary: str, profile: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run, bounded by :data:`CHROMIUM_TIMEOUT_S`."""
    cmd = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
        "--disable-features=MediaRouter,OptimizationHints",
        # Chromium's own background fetches (time, update, accounts) ignore the flags above: no
        # name resolves, and the network namespace has no route out anyway
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--force-color-profile=srgb", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--window-size=1400,2400", *extra, url,
    ]
    env = {**os.environ, "HOME": str(profile)}  # no writes to the real home
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def body_data(dom: str) -> dict[str, str]:
    """The ``data-*`` attributes of ``<body>`` in a dumped DOM."""
    m = re.search(r"<body([^>]*)>", dom)
    assert m is not None, dom[:2000]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', m.group(1)))


def page_requests(net_log: Path) -> list[str]:
    """URLs of network requests the page made (Chromium's own have no origin as initiator)."""
    log = json.loads(net_log.read_text())
    types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    out = []
    for event in log["events"]:
        params = event.get("params") or {}
        if types.get(event["type"]) == "URL_REQUEST_START_JOB" and "url" in params:
            if params.get("initiator") != "not an origin":
                out.append(str(params["url"]))
    return out


def decode_png(data: bytes) -> np.ndarray:
    """``(height, width, 3)`` uint8 pixels of an 8-bit RGB/RGBA non-interlaced PNG (what
    Chromium writes; Pillow is not a dependency)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos: pos + 4])
        kind, body = data[pos + 4: pos + 8], data[pos + 8: pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    rows = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        start = y * (stride + 1)
        # the row's filter type (a byte), then its filtered bytes
        filt, line = raw[start], np.frombuffer(raw, np.uint8, stride, start + 1).astype(np.int32)
        if filt == 1:  # sub: running sum per channel
            line = np.cumsum(line.reshape(width, channels), axis=0).reshape(-1) & 255
        elif filt == 2:  # up
            line = (line + prev) & 255
        elif filt in (3, 4):  # average, paeth: each byte depends on the one just decoded
            out = line.tolist()
            up = prev.tolist()
            for x in range(stride):
                a = out[x - channels] if x >= channels else 0
                b = up[x]
                if filt == 3:
                    out[x] = (out[x] + (a + b) // 2) & 255
                else:
                    c = up[x - channels] if x >= channels else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    out[x] = (out[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            line = np.array(out, dtype=np.int32)
        rows[y] = line
        prev = line
    return rows.reshape(height, width, channels)[:, :, :3]


def count_colour(pixels: np.ndarray, colour: str) -> int:
    """Pixels of exactly ``#rrggbb``."""
    rgb = [int(colour[i: i + 2], 16) for i in (1, 3, 5)]
    return int(np.all(pixels == rgb, axis=-1).sum())


def encode_png(pixels: np.ndarray, filters: list[int]) -> bytes:
    """An RGB PNG of ``pixels`` with the given filter type per row (reference encoder)."""
    height, width, _ = pixels.shape
    raw = b""
    prev = [0] * (width * 3)
    for y in range(height):
        line = pixels[y].reshape(-1).tolist()
        out = []
        for x, value in enumerate(line):
            a = line[x - 3] if x >= 3 else 0
            b = prev[x]
            c = prev[x - 3] if x >= 3 else 0
            p = a + b - c
            paeth = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else b if abs(p - b) <= abs(p - c) else c
            predictor = (0, a, b, (a + b) // 2, paeth)[filters[y]]
            out.append((value - predictor) & 255)
        raw += bytes([filters[y], *out])
        prev = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_decode_png_undoes_every_filter() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    assert decode_png(encode_png(pixels, [0, 1, 2, 3, 4])).tolist() == pixels.tolist()
    assert decode_png(encode_png(pixels, [4, 3, 2, 1, 0])).tolist() == pixels.tolist()


def test_report_of_real_calls_renders_in_chromium(
    pytester: pytest.Pytester, server_binary: Path, chromium: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(test_report_calls=CALLS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--livekit-report=report.html", f"--livekit-server-binary={server_binary}",
        timeout=600,
    )
    result.assert_outcomes(passed=1, failed=1)
    report = pytester.path / "report.html"
    assert report.is_file(), result.stdout.str()[-3000:]
    assert f"report: {report}" in result.stdout.str()
    document = report.read_text()
    assert "http://" not in document and "https://" not in document

    profile = pytester.path / "chromium-profile"
    url = report.as_uri()
    net_log = pytester.path / "net-log.json"
    # 1. as opened: the failed call is expanded, the passed one collapsed
    dom = run_chromium(chromium, profile, url, "--dump-dom", f"--log-net-log={net_log}").stdout
    data = body_data(dom)
    assert data["rendered"] == "ok", data
    assert data["calls"] == "2" and data["timelines"] == "2" and data["players"] == "2"
    assert data["timelines-visible"] == "1"  # only the failed call's
    assert data["latency-plots"] == "2" and data["latency-plots-visible"] == "2"  # refund, escalation
    assert page_requests(net_log) == []
    sections = re.findall(r'<details class="call [^"]*" id="(call-\d)"[^>]*data-nodeid="([^"]*)"([^>]*)>', dom)
    assert [(s[0], s[1].split("::")[-1], "open" in s[2]) for s in sections] == [
        ("call-1", "test_barge_in_then_escalation", True),
        ("call-2", "test_refund", False),
    ]
    # 2. every call expanded (report.html#all): both timelines lay out with a real width
    dom_all = run_chromium(chromium, profile, url + "#all", "--dump-dom").stdout
    data = body_data(dom_all)
    assert data["rendered"] == "ok" and data["timelines-visible"] == "2", data
    failed = dom_all[dom_all.index('id="call-1"'): dom_all.index('id="call-2"')]
    assert failed.count('class="caller-turn"') == 2
    assert failed.count('class="barge-in-mark barge_in"') == 1
    assert failed.count('class="ttfa-mark breach"') >= 1  # against 1 ms, every answered turn
    assert 'class="agent-heard"' in failed and 'class="agent-turn' in failed
    assert re.search(r'class="tool-mark"><title>[^<]*transfer_to_human', failed)
    assert 'class="waveform waveform-caller"' in failed and 'class="waveform waveform-agent"' in failed
    assert "ttfa_ms_max" in failed and "replay: <code>python -m pytest_livekit replay" in failed
    assert re.search(r'<audio controls[^>]* src="data:audio/ogg;base64,', failed)
    # 3. screenshot: the timeline's caller and agent bars are on screen
    shot = report.with_suffix(".png")  # next to the report, for humans
    run_chromium(chromium, profile, url, f"--screenshot={shot}")
    pixels = decode_png(shot.read_bytes())
    assert pixels.shape == (2400, 1400, 3)
    caller, agent = count_colour(pixels, CALLER_COLOUR), count_colour(pixels, AGENT_COLOUR)
    # the legend swatches hold ~100 px each: thousands mean the bars themselves rendered
    assert caller > 800 and agent > 800, (caller, agent, shot)
    not_white = int(np.any(pixels < 250, axis=-1).sum())
    assert not_white > 0.05 * pixels.shape[0] * pixels.shape[1], not_white
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 50  # text, plots, waveform: not blank
    print(f"screenshot {shot}: {caller} caller-colour px, {agent} agent-colour px, "
          f"{not_white / pixels.shape[0] / pixels.shape[1]:.0%} not white, {colours} colours; "
          f"report {report.stat().st_size / 1e3:.0f} kB")
