"""Drives Warden's MCP gateway with the official MCP Python SDK, as an agent would.

Usage:
  python_client.py http URL TOKEN     Streamable HTTP, bearer token
  python_client.py stdio COMMAND...   spawn COMMAND (e.g. `warden gateway stdio ...`) and talk stdio

Each step prints one JSON line {"step": ..., ...} on stdout; the calling test checks them.
The held steps block until the test answers the approval request through Warden.
"""

import asyncio
import json
import sys

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def failed(result):
    return bool(getattr(result, "is_error", None) or getattr(result, "isError", None))


def text_of(result):
    return " ".join(getattr(c, "text", "") for c in result.content)


async def sampling(context, params):
    from mcp.types import CreateMessageResult, TextContent

    return CreateMessageResult(
        role="assistant",
        content=TextContent(type="text", text="sampled by the python client"),
        model="interop-model",
        stopReason="endTurn",
    )


async def drive(client, prefix):
    tools = await client.list_tools()
    emit("list", tools=sorted(t.name for t in tools.tools))

    echoed = await client.call_tool(prefix + "echo", {"message": "hello from python"})
    emit("echo", is_error=failed(echoed), text=text_of(echoed))

    denied = await client.call_tool(prefix + "get-env", {})
    emit("denied", is_error=failed(denied), text=text_of(denied))

    approved = await client.call_tool(prefix + "get-sum", {"a": 20, "b": 22})
    emit("approved", is_error=failed(approved), text=text_of(approved))

    if len(sys.argv) > 1 and sys.argv[1] == "http":
        refused = await client.call_tool(prefix + "get-sum", {"a": 1, "b": 1})
        emit("refused", is_error=failed(refused), text=text_of(refused))

    sampled = await client.call_tool(
        prefix + "trigger-sampling-request", {"prompt": "hi", "maxTokens": 5}
    )
    emit("sampling", is_error=failed(sampled), text=text_of(sampled))


async def main():
    mode = sys.argv[1]
    if mode == "http":
        url, token = sys.argv[2], sys.argv[3]
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, sampling_callback=sampling) as client:
                emit("connected", server=client.server_info.name if client.server_info else None)
                await drive(client, "everything__")
    elif mode == "stdio":
        command, args = sys.argv[2], sys.argv[3:]
        params = StdioServerParameters(command=command, args=args)
        async with Client(params, sampling_callback=sampling) as client:
            emit("connected", server=client.server_info.name if client.server_info else None)
            await drive(client, "")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    asyncio.run(main())
