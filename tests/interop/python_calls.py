"""Lists the tools and calls the given ones through Warden's gateway with the official MCP
Python SDK client, over Streamable HTTP.

Usage: python_calls.py URL TOKEN TOOL=ARGS_JSON...

Prints one JSON line per step: {"step": "list", "tools": [...]}, then per call
{"step": "call", "name": ..., "is_error": ..., "text": ...}.
"""

import asyncio
import json
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


async def main(url, token, calls):
    headers = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = await client.list_tools()
            emit("list", tools=sorted(t.name for t in tools.tools))
            for call in calls:
                name, _, args = call.partition("=")
                result = await client.call_tool(name, json.loads(args or "{}"))
                is_error = bool(getattr(result, "is_error", None) or getattr(result, "isError", None))
                text = " ".join(getattr(c, "text", "") for c in result.content)
                emit("call", name=name, is_error=is_error, text=text)


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
