"""The foundation bench's timings for the Windows build, under wine (`scripts/bench-windows`).

Reported, not compared: wine translates every Win32 call, so these figures say that the
Windows build's paths work end to end and roughly what they cost there, not what a Windows
machine would show. Measured through the official Python MCP SDK's stdio client (its own
overhead included), as an agent would drive it:

- cold: `loopsy.exe mcp` with nothing running (it starts the daemon) → initialized → a
  `loopsy_status` answered;
- warm: `loopsy.exe mcp` spawned with the daemon running → initialized → `tools/list`;
- round trip: `loopsy_status` over one session, median and p99.

LOOPSY_WIN_BIN names loopsy.exe. Flags: `--quick` (fewer runs).
"""

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from mcp import Client, StdioServerParameters

EXE = os.environ.get("LOOPSY_WIN_BIN", "")
WINE_ENV = {"WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml="}


def win_path(p):
    return "Z:" + p.replace("/", "\\")


def loopsy(home, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPSY_")}
    env.update(WINE_ENV, NO_COLOR="1")
    with tempfile.TemporaryFile() as out:
        p = subprocess.run(["wine", EXE, "--home", win_path(home), *args], stdout=out,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                           timeout=120)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"loopsy {args} failed ({p.returncode}):\n{text}")
    return text


def params(home):
    return StdioServerParameters(command="wine", args=[EXE, "--home", win_path(home), "mcp"],
                                 env={**os.environ, **WINE_ENV})


async def cold(home):
    t0 = time.perf_counter()
    async with Client(params(home), mode="legacy") as c:
        r = await c.call_tool("loopsy_status", {})
        assert not r.is_error, r
        t = time.perf_counter() - t0
    loopsy(home, "stop")
    return t * 1e3


async def warm(home):
    t0 = time.perf_counter()
    async with Client(params(home), mode="legacy") as c:
        await c.list_tools()
        return (time.perf_counter() - t0) * 1e3


async def round_trips(home, n):
    async with Client(params(home), mode="legacy") as c:
        for _ in range(20):
            await c.call_tool("loopsy_status", {})
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = await c.call_tool("loopsy_status", {})
            out.append((time.perf_counter() - t0) * 1e3)
            assert not r.is_error, r
        return out


async def main():
    if not EXE or not os.path.isfile(EXE):
        raise SystemExit("LOOPSY_WIN_BIN must name loopsy.exe (run scripts/bench-windows)")
    quick = "--quick" in sys.argv
    runs, n = (3, 100) if quick else (8, 500)
    home = tempfile.mkdtemp(prefix="lwb", dir="/tmp")
    try:
        loopsy(home, "init", "--name", "winbench")
        with open(os.path.join(home, "config.toml"), "w") as f:
            f.write('[node]\nname = "winbench"\n[mesh]\nlisten_port = 0\nlocal_only = true\n')
        colds = [await cold(home) for _ in range(runs)]
        loopsy(home, "start")
        warms = [await warm(home) for _ in range(runs)]
        rtt = sorted(await round_trips(home, n))
        loopsy(home, "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"\n## foundation, Windows build under wine ({'quick' if quick else 'full'}; reported, not compared)\n")
    print("| measure | loopsy.exe under wine | target on Windows |")
    print("|---|---|---|")
    print(f"| cold: `loopsy mcp` with nothing running → initialized → `loopsy_status` answered (median of {runs}) | {statistics.median(colds):.1f} ms | ≤ 50 ms |")
    print(f"| warm: `loopsy mcp` spawn → initialized → `tools/list` (median of {runs}) | {statistics.median(warms):.1f} ms | ≤ 30 ms |")
    print(f"| `loopsy_status` round trip, one session (median of {n}) | {statistics.median(rtt):.3f} ms | ≤ 1 ms |")
    print(f"| the same, p99 | {rtt[int((len(rtt) - 1) * 0.99)]:.3f} ms | — |")
    print("\nThe Python SDK client's own cost is in every row; wine's process start is in the first two.")


asyncio.run(main())
