"""The optional Streamable HTTP endpoint: bearer auth, Host/Origin checks, key rotation without restart."""

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def url_of(daemon):
    url = daemon.status()["http_url"]
    assert url and url.startswith("http://127.0.0.1:"), url
    return url


def token(daemon):
    return daemon.run("key", "show").stdout.strip()


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_sdk_client_over_http_with_bearer(daemon):
    url = url_of(daemon)
    headers = {"Authorization": f"Bearer {token(daemon)}"}
    async with httpx2.AsyncClient(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            result = await client.call_tool("loopsy_status", {})
            assert not result.is_error
            assert result.structured_content["peer_id"] == daemon.status()["peer_id"]
    audit = open(f"{daemon.home}/logs/audit.jsonl").read()
    assert '"caller":"http","tool":"loopsy_status","outcome":"ok"' in audit, audit


def test_refusals(daemon):
    url = url_of(daemon)
    good = {"Authorization": f"Bearer {token(daemon)}", **ACCEPT}
    with httpx2.Client() as http:
        assert http.post(url, json=INIT, headers=ACCEPT).status_code == 401
        assert http.post(url, json=INIT, headers={**ACCEPT, "Authorization": "Bearer " + "0" * 64}).status_code == 401
        assert http.post(url, json=INIT, headers={**ACCEPT, "Authorization": "Basic eDp5"}).status_code == 401
        # DNS rebinding: a foreign Host is refused even with the right token.
        assert http.post(url, json=INIT, headers={**good, "Host": "evil.example:80"}).status_code in (400, 403)
        # Browsers are not clients: any Origin is refused.
        assert http.post(url, json=INIT, headers={**good, "Origin": "https://evil.example"}).status_code == 403
        ok = http.post(url, json=INIT, headers=good)
        assert ok.status_code == 200, ok.text


def test_rotation_takes_effect_without_restart(daemon):
    url = url_of(daemon)
    pid = daemon.status()["pid"]
    old = token(daemon)
    rotated = daemon.run("key", "rotate").stdout.strip()
    assert rotated != old and len(rotated) == 64
    assert token(daemon) == rotated
    with httpx2.Client() as http:
        assert http.post(url, json=INIT, headers={**ACCEPT, "Authorization": f"Bearer {old}"}).status_code == 401
        r = http.post(url, json=INIT, headers={**ACCEPT, "Authorization": f"Bearer {rotated}"})
        assert r.status_code == 200, r.text
    assert daemon.status()["pid"] == pid, "no restart happened"
