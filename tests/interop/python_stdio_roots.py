"""Drives `warden gateway stdio` with the official MCP Python SDK client, as an agent that
spawns its server would, with a client that offers roots.

Usage: python_stdio_roots.py CANARY SECRET COMMAND...

Spawns COMMAND (e.g. `warden gateway stdio --remote URL --token T -- server-everything`)
and prints one JSON line {"step": ..., ...} per step on stdout for the calling test:

  connected     the server the client sees
  roots_at_start  how often the client was asked for its roots before any request of its
                own (the server asks right after initialize)
  list          the tools listed
  echo          an allowed call, whose message is CANARY
  denied        a call the policies forbid
  approved      a held call (blocks until a person approves it at the server)
  roots         what the server knows of the client's roots
  unknown       a call of a tool named SECRET that does not exist (an MCP error)
"""

import asyncio
import json
import sys

from mcp import Client, StdioServerParameters
from mcp.types import ListRootsResult, Root

ROOT = "file:///srv/warden-stdio-roots"
asked = []


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def failed(result):
    return bool(getattr(result, "is_error", None) or getattr(result, "isError", None))


def text_of(result):
    return " ".join(getattr(c, "text", "") for c in result.content)


async def roots(context):
    asked.append(1)
    return ListRootsResult(roots=[Root(uri=ROOT, name="stdio-roots")])


async def main(canary, secret, command, args):
    params = StdioServerParameters(command=command, args=args)
    async with Client(params, list_roots_callback=roots) as client:
        emit("connected", server=client.server_info.name if client.server_info else None)
        # The server asks for the roots as soon as it is initialised; give the question
        # time to travel through the gateway before anything else is sent.
        for _ in range(100):
            if asked:
                break
            await asyncio.sleep(0.1)
        emit("roots_at_start", asked=len(asked))

        tools = await client.list_tools()
        emit("list", tools=sorted(t.name for t in tools.tools))

        echoed = await client.call_tool("echo", {"message": canary})
        emit("echo", is_error=failed(echoed), text=text_of(echoed))

        denied = await client.call_tool("get-env", {})
        emit("denied", is_error=failed(denied), text=text_of(denied))

        approved = await client.call_tool("get-sum", {"a": 20, "b": 22})
        emit("approved", is_error=failed(approved), text=text_of(approved))

        listed = await client.call_tool("get-roots-list", {})
        emit("roots", is_error=failed(listed), text=text_of(listed), asked=len(asked))

        try:
            result = await client.call_tool(secret, {})
            emit("unknown", error=None, text=text_of(result))
        except Exception as e:  # the SDK raises the JSON-RPC error
            emit("unknown", error=str(e))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
