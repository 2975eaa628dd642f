"""Two agents on two machines (the official Python MCP SDK on each): agent A hands a task to
B and waits; agent B waits for mail, claims the task, completes it with a result; A's wait
returns the result. Neither script polls. Also: B's inbox resource notifies on new mail, a
second claim is refused as a conflict, and messages get delivery and read acks."""

import json
import pathlib

import anyio
import jsonschema
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.subscriptions import ResourceUpdated

from conftest import BIN

TASK_SCHEMA = json.loads(
    (pathlib.Path(__file__).resolve().parents[2] / "agents-spec/schemas/task.schema.json").read_text())


def params(home):
    return StdioServerParameters(command=BIN, args=["--home", home, "mcp"])


def ok(r):
    assert not r.is_error, r
    return r.structured_content


@pytest.mark.anyio
async def test_a_task_handed_over_claimed_and_completed_without_polling(pair_of_daemons):
    a, b = pair_of_daemons
    results = {}

    async def agent_a(ready: anyio.Event):
        async with Client(params(a)) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            await ready.wait()
            task = ok(await client.call_tool("loopsy_task_create", {
                "assignee": "beta", "description": "count the words", "input": {"text": "a b c"}}))
            jsonschema.validate(task, tools["loopsy_task_create"].output_schema)
            jsonschema.validate(task, TASK_SCHEMA)
            assert task["status"] == "submitted" and task["assignee_name"] == "beta"
            done = ok(await client.call_tool("loopsy_task_wait", {"id": task["id"], "timeout_s": 60}))
            jsonschema.validate(done, tools["loopsy_task_wait"].output_schema)
            jsonschema.validate(done["task"], TASK_SCHEMA)
            results["a"] = done
            # Finished: a late claim is told it lost, and by whom.
            late = await client.call_tool("loopsy_task_claim", {"id": task["id"]})
            assert late.is_error and late.structured_content["code"] == "conflict", late
            assert "claimed by" in late.structured_content["message"]

    async def agent_b(ready: anyio.Event):
        async with Client(params(b)) as client:
            async with client.listen(resource_subscriptions=["loopsy://inbox"]) as sub:
                ready.set()
                # Mail arrives: the inbox resource says so, and the wait returns it.
                with anyio.fail_after(30):
                    assert await sub.__anext__() == ResourceUpdated(uri="loopsy://inbox")
            got = ok(await client.call_tool("loopsy_wait_for_message", {"timeout_s": 30}))
            m = got["message"]
            assert m["type"] == "task" and m["from_name"] == "alpha"
            body = json.loads(m["body"])
            assert m["thread"] == body["task"]
            claimed = ok(await client.call_tool("loopsy_task_claim", {"id": body["task"], "worker": "b-agent"}))
            assert claimed["status"] == "working" and claimed["claimed_by_name"] == "beta"
            words = len(body["input"]["text"].split())
            ok(await client.call_tool("loopsy_task_update", {
                "id": body["task"], "status": "completed", "result": {"words": words}}))
            ok(await client.call_tool("loopsy_ack_message", {"id": m["id"]}))
            results["b"] = m["id"]

    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(agent_a, ready)
        tg.start_soon(agent_b, ready)

    t = results["a"]["task"]
    assert results["a"]["reached"] is True
    assert t["status"] == "completed" and t["result"] == {"words": 3}
    assert [h["status"] for h in t["history"]] == ["submitted", "working", "completed"]

    # The task message's read receipt reaches alpha.
    async with Client(params(a)) as client:
        with anyio.fail_after(30):
            while True:
                s = ok(await client.call_tool("loopsy_check_ack", {"id": results["b"]}))
                if s["messages"][0]["status"] == "read":
                    break
                # The receipt is pushed by beta's daemon; this only re-reads alpha's own store.
                await anyio.sleep(0.05)
