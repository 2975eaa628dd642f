"""MCP conformance of `loopsy mcp`, driven by the official Python SDK (a client nobody here wrote)."""

import json
import os
import subprocess
import time

import jsonschema
import pytest
from mcp import Client, StdioServerParameters

from conftest import BIN

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
with open(os.path.join(ROOT, "agents-spec", "schemas", "tool_error.schema.json")) as f:
    TOOL_ERROR_SCHEMA = json.load(f)


def params(home):
    return StdioServerParameters(command=BIN, args=["--home", home, "mcp"])


async def check_status(client, daemon):
    tools = await client.list_tools()
    by_name = {t.name: t for t in tools.tools}
    assert "loopsy_status" in by_name
    tool = by_name["loopsy_status"]
    assert tool.output_schema, "loopsy_status must declare an output schema"
    result = await client.call_tool("loopsy_status", {})
    assert not result.is_error
    jsonschema.validate(result.structured_content, tool.output_schema)
    expected = daemon.status()
    assert result.structured_content["peer_id"] == expected["peer_id"]
    assert result.structured_content["name"] == expected["name"]
    assert result.structured_content["listen_addrs"] == expected["listen_addrs"]
    assert result.content and result.content[0].text.startswith(expected["name"])


@pytest.mark.anyio
async def test_auto_mode_probe_path(daemon):
    """mcp 2.x's default: server/discover first, no 10 s stall."""
    t0 = time.monotonic()
    async with Client(params(daemon.home)) as client:
        connected = time.monotonic() - t0
        assert connected < 3, f"connect took {connected:.1f}s (a stalled server/discover probe?)"
        await check_status(client, daemon)


@pytest.mark.anyio
async def test_legacy_initialize(daemon):
    async with Client(params(daemon.home), mode="legacy") as client:
        assert client.server_info.name == "loopsy"
        assert client.protocol_version.startswith("20")
        await check_status(client, daemon)


@pytest.mark.anyio
async def test_invalid_arguments_are_tool_errors(daemon):
    async with Client(params(daemon.home), mode="legacy") as client:
        result = await client.call_tool("loopsy_status", {"unexpected": True})
        assert result.is_error
        assert result.structured_content["code"] == "invalid_arguments"
        jsonschema.validate(result.structured_content, TOOL_ERROR_SCHEMA)


def test_unknown_method_gets_32601_at_once(daemon):
    """Raw JSON-RPC through the bridge: an unknown method is answered -32601 immediately."""
    p = subprocess.Popen([BIN, "--home", daemon.home, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        def rpc(msg):
            p.stdin.write(json.dumps(msg) + "\n")
            p.stdin.flush()

        rpc({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
        assert json.loads(p.stdout.readline())["id"] == 1
        rpc({"jsonrpc": "2.0", "method": "notifications/initialized"})
        t0 = time.monotonic()
        rpc({"jsonrpc": "2.0", "id": 2, "method": "loopsy/no_such_method", "params": {}})
        reply = json.loads(p.stdout.readline())
        assert reply["id"] == 2 and reply["error"]["code"] == -32601, reply
        assert time.monotonic() - t0 < 1
    finally:
        p.stdin.close()
        p.wait(timeout=10)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_execute_streams_output_as_progress(daemon):
    """A waiting loopsy_execute reports new output as MCP progress notifications."""
    seen = []

    async def on_progress(progress, total, message):
        seen.append((progress, message))

    async with Client(params(daemon.home), mode="legacy") as client:
        result = await client.call_tool(
            "loopsy_execute",
            {"command": "for i in 1 2 3; do echo tick-$i; sleep 0.4; done", "wait_s": 30},
            progress_callback=on_progress,
        )
        assert not result.is_error
        sc = result.structured_content
        assert sc["finished"] and sc["job"]["exit_code"] == 0
        assert sc["stdout"] == "tick-1\ntick-2\ntick-3\n"
    text = "".join(m or "" for _, m in seen)
    assert "tick-1" in text and "tick-3" in text, seen
    assert len(seen) >= 2, f"output should arrive in several notifications while the job runs: {seen}"
    progress = [p for p, _ in seen]
    assert progress == sorted(progress), "progress must increase"


RUST_FORMATS = {"int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float", "double"}


def schema_findings(node, path, out):
    """Non-standard `format`s and rustdoc link syntax anywhere in a schema."""
    if isinstance(node, dict):
        if node.get("format") in RUST_FORMATS:
            out.append(f"{path}: format {node['format']}")
        d = node.get("description")
        if isinstance(d, str) and "[`" in d:
            out.append(f"{path}: rustdoc link in {d[:60]!r}")
        for k, v in node.items():
            schema_findings(v, f"{path}/{k}", out)
    elif isinstance(node, list):
        for v in node:
            schema_findings(v, path, out)


@pytest.mark.anyio
async def test_tool_schemas_are_plain_json_schema(daemon):
    """Every tool's input and output schema is a valid 2020-12 schema with only JSON Schema's
    own formats (strict validators warn about schemars' `uint64` & co.) and no rustdoc syntax;
    fixed-width unsigned integers keep their bound as `maximum`."""
    async with Client(params(daemon.home), mode="legacy") as client:
        tools = (await client.list_tools()).tools
        assert len(tools) > 30
        findings = []
        for t in tools:
            for which, schema in (("input", t.input_schema), ("output", t.output_schema)):
                if schema:
                    jsonschema.Draft202012Validator.check_schema(schema)
                    schema_findings(schema, f"{t.name}/{which}", findings)
        assert findings == [], "\n".join(findings[:20])
        by = {t.name: t for t in tools}
        assert "spare" not in json.dumps(by["loopsy_session_wait"].output_schema)
        # Limits the tools enforce are in the schema, not only in prose.
        limits = {
            ("loopsy_execute", "wait_s"): (0, 60),
            ("loopsy_job_wait", "timeout_s"): (0, 60),
            ("loopsy_job_output", "limit"): (1, 1 << 20),
            ("loopsy_session_wait", "timeout_s"): (0, 300),
            ("loopsy_context_wait", "timeout_s"): (0, 300),
            ("loopsy_send_message", "ttl_s"): (1, 30 * 24 * 3600),
            ("loopsy_send_message", "wait_s"): (0, 60),
        }
        for (tool, field), (lo, hi) in limits.items():
            prop = by[tool].input_schema["properties"][field]
            assert (prop.get("minimum"), prop.get("maximum")) == (lo, hi), f"{tool}.{field}: {prop}"
