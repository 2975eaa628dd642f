"""The Windows build under wine: a daemon's life (start, status, stop) and the MCP surface an
agent uses (loopsy_status, loopsy_execute through cmd.exe, context set/get), driven by the
official Python MCP SDK through `loopsy.exe mcp`.

LOOPSY_WIN_BIN names loopsy.exe (scripts/test-windows sets it); wine must be ready
(scripts/setup-wine)."""

import json
import os
import shutil
import subprocess
import tempfile

import pytest
from mcp import Client, StdioServerParameters

EXE = os.environ.get("LOOPSY_WIN_BIN", "")
WINE_ENV = {"WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml="}


def win_path(p):
    """The wine (Z:) path of a Unix path."""
    return "Z:" + p.replace("/", "\\")


def wine(*args, env=None, timeout=120):
    """Run `wine args…`; output goes through files, not pipes: a process wine starts (the
    daemon, wine's own services) inherits the Unix descriptors of the one that started it, so a
    pipe would stay open after the command ends."""
    env = env if env is not None else {**os.environ, **WINE_ENV}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(["wine", *args], stdout=out, stderr=err, env=env, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        out.seek(0)
        err.seek(0)
        p.stdout = out.read().decode(errors="replace")
        p.stderr = err.read().decode(errors="replace")
    return p


def loopsy(home, *args, check=True, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPSY_")}
    env.update(WINE_ENV, NO_COLOR="1")
    p = wine(EXE, "--home", win_path(home), *args, env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"loopsy {args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture
def home():
    if not EXE or not os.path.isfile(EXE):
        pytest.fail("LOOPSY_WIN_BIN must name loopsy.exe (run through scripts/test-windows)")
    d = tempfile.mkdtemp(prefix="lw", dir="/tmp")
    yield d
    loopsy(d, "stop", check=False)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_daemon_starts_answers_and_stops(home):
    loopsy(home, "init", "--name", "winbox")
    loopsy(home, "start", "--port", "0", "--local-only")
    st = json.loads(loopsy(home, "status", "--json").stdout)
    assert st["name"] == "winbox"
    assert st["peer_id"].startswith("12D3Koo")
    # A second start finds the running daemon (through its pipe) instead of starting another.
    again = loopsy(home, "start", "--port", "0", "--local-only", check=False)
    assert "already running" in again.stdout + again.stderr, again.stdout + again.stderr
    loopsy(home, "stop")
    gone = loopsy(home, "status", check=False)
    assert gone.returncode != 0, gone.stdout


@pytest.mark.anyio
async def test_mcp_status_exec_and_context(home):
    loopsy(home, "init", "--name", "winbox")
    loopsy(home, "start", "--port", "0", "--local-only")
    params = StdioServerParameters(command="wine", args=[EXE, "--home", win_path(home), "mcp"],
                                   env={**os.environ, **WINE_ENV})
    async with Client(params, mode="legacy") as client:
        status = await client.call_tool("loopsy_status", {})
        assert not status.is_error, status
        assert status.structured_content["name"] == "winbox"

        ran = await client.call_tool("loopsy_execute", {"command": "echo hello from cmd", "wait_s": 60})
        assert not ran.is_error, ran
        out = ran.structured_content
        assert out["finished"], out
        assert out["job"]["exit_code"] == 0, out
        assert out["stdout"].strip() == "hello from cmd", out

        failed = await client.call_tool("loopsy_execute", {"command": "exit 7", "wait_s": 60})
        assert failed.structured_content["job"]["exit_code"] == 7, failed

        put = await client.call_tool("loopsy_context_set", {"key": "build/status", "value": "green"})
        assert not put.is_error, put
        got = await client.call_tool("loopsy_context_get", {"key": "build/status"})
        assert not got.is_error, got
        assert got.structured_content["found"], got.structured_content
        assert got.structured_content["entry"]["value"] == "green", got.structured_content


def test_the_logon_task_xml_is_accepted_by_task_scheduler(home):
    """The task `loopsy enable` registers (shown by `enable --dry-run`) goes through
    `schtasks /Create /XML` (wine's Task Scheduler parses it: well-formed, and the elements it
    knows read as it expects them) and can then be deleted."""
    loopsy(home, "init", "--name", "winbox")
    dry = loopsy(home, "enable", "--dry-run").stdout
    xml = dry[dry.index("<?xml"):]
    assert "<LogonTrigger>" in xml and "<Command>" in xml, xml
    path = os.path.join(home, "task.xml")
    with open(path, "wb") as f:
        f.write(xml.encode("utf-16"))  # with a BOM, as `enable` writes it
    made = wine("schtasks", "/Create", "/F", "/TN", "loopsy-smoke", "/XML", win_path(path))
    assert made.returncode == 0, made.stdout + made.stderr
    # wine's /Query answers 0 for any name; /Delete fails for a task that is not there.
    gone = wine("schtasks", "/Delete", "/F", "/TN", "loopsy-smoke")
    assert gone.returncode == 0, "the task was not registered: " + gone.stdout + gone.stderr
    again = wine("schtasks", "/Delete", "/F", "/TN", "loopsy-smoke")
    assert again.returncode != 0, "the task is still there after /Delete"


def test_task_scheduler_refuses_a_broken_task(home):
    """The check above can fail: a task file that is not well-formed XML is refused."""
    path = os.path.join(home, "broken.xml")
    with open(path, "wb") as f:
        f.write("<Task><Triggers><LogonTrigger></Task>".encode("utf-16"))
    made = wine("schtasks", "/Create", "/F", "/TN", "loopsy-broken", "/XML", win_path(path))
    assert made.returncode != 0
