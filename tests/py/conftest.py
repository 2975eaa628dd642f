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
