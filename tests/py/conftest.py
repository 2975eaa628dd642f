"""Fixtures: a real loopsy daemon in a temp LOOPSY_HOME, driven by the real `loopsy` binary.

LOOPSY_BIN names the binary under test (the Rust test runner sets it)."""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

BIN = os.environ.get("LOOPSY_BIN", "")


def loopsy(home, *args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPSY_")}
    env["NO_COLOR"] = "1"
    p = subprocess.run([BIN, "--home", home, *args], capture_output=True, text=True, env=env, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"loopsy {args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


class Daemon:
    def __init__(self, home):
        self.home = home

    def run(self, *args, check=True):
        return loopsy(self.home, *args, check=check)

    def status(self):
        return json.loads(self.run("status", "--json").stdout)


@pytest.fixture
def home():
    if not BIN or not os.access(BIN, os.X_OK):
        pytest.fail("LOOPSY_BIN must name the loopsy binary (run through `cargo nextest run`)")
    d = tempfile.mkdtemp(prefix="lp", dir="/tmp")
    yield d
    loopsy(d, "stop", check=False)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(home):
    loopsy(home, "start", "--port", "0", "--local-only", "--http-port", "0")
    return Daemon(home)


@pytest.fixture
def pair_of_daemons():
    """alpha and beta, started on loopback and paired (alpha trusts beta and back)."""
    homes = []
    for name in ("alpha", "beta"):
        d = tempfile.mkdtemp(prefix="lp", dir="/tmp")
        homes.append(d)
        loopsy(d, "init", "--name", name)
        loopsy(d, "start", "--port", "0", "--local-only")
    a, b = homes
    # b shows a code; a enters it.
    env_free = subprocess.Popen([BIN, "--home", b, "pair", "--json"], stdout=subprocess.PIPE, text=True)
    ticket = json.loads(env_free.stdout.readline())
    loopsy(a, "pair", ticket["addrs"][0], "--code", ticket["code"])
    assert env_free.wait(timeout=30) == 0
    yield a, b
    for d in homes:
        loopsy(d, "stop", check=False)
        # Session hosts outlive the daemon by design; end the test's own.
        subprocess.run(["pkill", "-f", f"session-host --sessions {d}/"], check=False)
        shutil.rmtree(d, ignore_errors=True)



@pytest.fixture
def anyio_backend():
    return "asyncio"
