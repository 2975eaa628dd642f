"""An agent on machine A (the official Python MCP SDK) drives a terminal session on machine B:
start it, type a command, wait for a pattern, read the result, stop it."""

import jsonschema
import pytest
from mcp import Client, StdioServerParameters

from conftest import BIN, loopsy


@pytest.mark.anyio
async def test_agent_on_a_drives_a_session_on_b(pair_of_daemons):
    a, b = pair_of_daemons
    params = StdioServerParameters(command=BIN, args=["--home", a, "mcp"])
    async with Client(params, mode="legacy") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        for name in ("loopsy_session_start", "loopsy_session_write", "loopsy_session_wait",
                     "loopsy_session_read", "loopsy_session_stop", "loopsy_session_list"):
            assert name in tools, name

        r = await client.call_tool("loopsy_session_start",
                                   {"peer": "beta", "kind": "custom", "command": "/bin/sh", "name": "remote"})
        assert not r.is_error, r
        jsonschema.validate(r.structured_content, tools["loopsy_session_start"].output_schema)
        sid = r.structured_content["id"]

        r = await client.call_tool("loopsy_session_write",
                                   {"peer": "beta", "id": sid, "text": "echo from-$((6*7))-on-$LOOPSY_SESSION",
                                    "keys": ["Enter"]})
        assert not r.is_error, r
        r = await client.call_tool("loopsy_session_wait",
                                   {"peer": "beta", "id": sid, "pattern": r"from-42-on-\w+", "timeout_s": 30})
        assert not r.is_error and r.structured_content["reason"] == "pattern", r
        assert r.structured_content["matched"] == f"from-42-on-{sid}"

        r = await client.call_tool("loopsy_session_read", {"peer": "beta", "id": sid})
        assert not r.is_error
        jsonschema.validate(r.structured_content, tools["loopsy_session_read"].output_schema)
        assert f"from-42-on-{sid}" in r.structured_content["text"].splitlines()

        # The session lives on B, not A.
        here = await client.call_tool("loopsy_session_list", {})
        assert here.structured_content["sessions"] == []
        there = await client.call_tool("loopsy_session_list", {"peer": "beta"})
        assert [s["id"] for s in there.structured_content["sessions"]] == [sid]

        r = await client.call_tool("loopsy_session_stop", {"peer": "beta", "id": sid})
        assert not r.is_error and r.structured_content["state"] == "exited", r

    # Without the pty capability, B refuses.
    loopsy(b, "peers", "revoke", "alpha", "pty")
    async with Client(params, mode="legacy") as client:
        r = await client.call_tool("loopsy_session_list", {"peer": "beta"})
        assert r.is_error and r.structured_content["code"] == "permission_denied", r
