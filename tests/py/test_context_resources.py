"""Context keys as MCP resources: list, read, and subscribe so an agent is told when a key
changes (here, or on a peer) instead of polling. Both subscription styles: the legacy
`resources/subscribe` and the 2026-07-28 `subscriptions/listen`."""

import json
import warnings

import anyio
import pytest
from mcp import Client, StdioServerParameters, types
from mcp.shared.subscriptions import ResourceUpdated

from conftest import BIN, loopsy

URI = "loopsy://context/"


def params(home):
    return StdioServerParameters(command=BIN, args=["--home", home, "mcp"])


@pytest.mark.anyio
async def test_templates_list_and_read(daemon):
    loopsy(daemon.home, "ctx", "set", "build/status", "green")
    loopsy(daemon.home, "ctx", "set", "a key with spaces/ünï", '{"n": 1}', "--json")
    async with Client(params(daemon.home), mode="legacy") as client:
        t = await client.list_resource_templates()
        assert [x.uri_template for x in t.resource_templates] == [URI + "{key}"]

        listed = {r.name: r.uri for r in (await client.list_resources()).resources}
        assert listed["build/status"] == URI + "build/status"
        spaced = listed["a key with spaces/ünï"]
        assert spaced == URI + "a%20key%20with%20spaces/%C3%BCn%C3%AF"

        r = await client.read_resource(spaced)
        entry = json.loads(r.contents[0].text)
        assert entry["value"] == {"n": 1} and entry["key"] == "a key with spaces/ünï"

        with pytest.raises(Exception, match="not set"):
            await client.read_resource(URI + "nope")
        with pytest.raises(Exception, match="loopsy serves"):
            await client.read_resource("file:///etc/passwd")


@pytest.mark.anyio
async def test_legacy_subscribe_notifies_on_change_here_and_from_a_peer(pair_of_daemons):
    a, b = pair_of_daemons
    send, updates = anyio.create_memory_object_stream(100)

    async def on_message(msg):
        if isinstance(msg, types.ServerNotification) and isinstance(msg, types.ResourceUpdatedNotification):
            send.send_nowait(str(msg.params.uri))

    async def next_update():
        with anyio.fail_after(20):
            return await updates.receive()

    async def subscribe(client, uri, on=True):
        # The legacy calls are deprecated in the SDK (2026-07-28 replaced them); still served.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return await (client.subscribe_resource if on else client.unsubscribe_resource)(uri)

    async with Client(params(a), mode="legacy", message_handler=on_message) as client:
        # A key that does not exist yet: its creation is a change.
        await subscribe(client, URI + "job/state")
        await subscribe(client, URI + "other")

        # Written by another client on this machine.
        loopsy(a, "ctx", "set", "job/state", "queued")
        assert await next_update() == URI + "job/state"

        # Written on the peer: replication brings it here, and the subscriber hears of it.
        loopsy(b, "ctx", "set", "job/state", "done")
        assert await next_update() == URI + "job/state"
        r = await client.read_resource(URI + "job/state")
        entry = json.loads(r.contents[0].text)
        assert (entry["value"], entry["written_by"]) == ("done", "beta")

        # Unsubscribed keys stay quiet; a later change to a watched one still arrives, alone.
        await subscribe(client, URI + "job/state", on=False)
        loopsy(a, "ctx", "set", "job/state", "again")
        loopsy(a, "ctx", "set", "other", "x")
        assert await next_update() == URI + "other"

        with pytest.raises(Exception, match="loopsy serves"):
            await subscribe(client, "loopsy://elsewhere/x")


@pytest.mark.anyio
async def test_listen_streams_updates_for_subscribed_keys(daemon):
    async with Client(params(daemon.home)) as client:
        async with client.listen(resource_subscriptions=[URI + "deploy", URI + "bad\x01key"]) as sub:
            # Only the well-formed URI is honoured.
            assert sub.honored.resource_subscriptions == [URI + "deploy"]
            loopsy(daemon.home, "ctx", "set", "unrelated", "1")
            loopsy(daemon.home, "ctx", "set", "deploy", "started")
            with anyio.fail_after(20):
                event = await sub.__anext__()
            assert event == ResourceUpdated(uri=URI + "deploy")
            # An expiry is a change too.
            loopsy(daemon.home, "ctx", "set", "deploy", "short-lived", "--ttl", "1")
            with anyio.fail_after(20):
                assert await sub.__anext__() == ResourceUpdated(uri=URI + "deploy")
            with anyio.fail_after(20):
                assert await sub.__anext__() == ResourceUpdated(uri=URI + "deploy")
            r = await client.call_tool("loopsy_context_get", {"key": "deploy"})
            assert r.structured_content["found"] is False
