"""A small MCP server (stdio) that writes down every tool call it receives.

Usage: recording_server.py LOG

Its one tool, `touch`, appends the call's `text` argument as a line to the file LOG and
echoes it. A test reads LOG to know whether a call reached the server at all: a gateway
that cannot record its decision must not forward the call.
"""

import json
import sys

LOG = sys.argv[1]

TOOL = {
    "name": "touch",
    "description": "Writes its text down and echoes it.",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
    },
}


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    message = json.loads(line)
    method = message.get("method")
    if "id" not in message or method is None:
        continue
    if method == "initialize":
        result = {
            "protocolVersion": message["params"].get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "recording", "version": "1.0.0"},
        }
    elif method == "tools/list":
        result = {"tools": [TOOL]}
    elif method == "tools/call":
        text = message.get("params", {}).get("arguments", {}).get("text", "")
        with open(LOG, "a") as f:
            f.write(text + "\n")
        result = {"content": [{"type": "text", "text": text}]}
    elif method == "ping":
        result = {}
    else:
        send({
            "jsonrpc": "2.0",
            "id": message["id"],
            "error": {"code": -32601, "message": f"unknown method {method}"},
        })
        continue
    send({"jsonrpc": "2.0", "id": message["id"], "result": result})
