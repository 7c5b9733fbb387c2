#!/usr/bin/env bash
# Starts Warden on the embedded store with the example policies and its MCP gateway in front
# of the reference MCP server "everything", creates a few tokens and prints lines to try.
# Data lives in ./warden-data (delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR="${WARDEN_DATA_DIR:-./warden-data}"
LISTEN="${WARDEN_LISTEN:-127.0.0.1:8080}"
# The MCP servers and clients written by others (pinned; quick when already installed).
./scripts/install-peers.sh >/dev/null
cargo build --quiet --bin warden
WARDEN=./target/debug/warden

TOKENS="$DATA_DIR/quickstart-tokens.env"
if [[ ! -f "$TOKENS" ]]; then
  mkdir -p "$DATA_DIR"
  AGENT=$($WARDEN token create --data-dir "$DATA_DIR" --tenant acme --role agent \
    --agent claude-code --on-behalf-of alice --namespace acme/platform/api --ttl 30d)
  AUDITOR=$($WARDEN token create --data-dir "$DATA_DIR" --tenant acme --role auditor)
  ADMIN=$($WARDEN token create --data-dir "$DATA_DIR" --tenant acme --role admin)
  printf 'AGENT_TOKEN=%s\nAUDITOR_TOKEN=%s\nADMIN_TOKEN=%s\n' "$AGENT" "$AUDITOR" "$ADMIN" > "$TOKENS"
  chmod 600 "$TOKENS"
fi
# shellcheck disable=SC1090
source "$TOKENS"

cat <<MSG

Warden is starting on http://$LISTEN with the policies in examples/policies.
Tokens are in $TOKENS. In another terminal:

  source $TOKENS

  # allow: reading a file is a read-only tool
  curl -s http://$LISTEN/api/v1/authorize -H "Authorization: Bearer \$AGENT_TOKEN" \\
    -H 'Content-Type: application/json' \\
    -d '{"action":"call_tool","resource":{"type":"Tool","id":"github__get_file_contents","attributes":{"name":"get_file_contents","server":"github","risk":"low","categories":["read"]}}}'

  # deny: deleting a repository is forbidden everywhere
  curl -s http://$LISTEN/api/v1/authorize -H "Authorization: Bearer \$AGENT_TOKEN" \\
    -H 'Content-Type: application/json' \\
    -d '{"action":"call_tool","resource":{"type":"Tool","id":"github__delete_repository","attributes":{"name":"delete_repository","server":"github","risk":"critical","categories":["delete"]}}}'

  # approval_required: a production deploy needs a person
  curl -s http://$LISTEN/api/v1/authorize -H "Authorization: Bearer \$AGENT_TOKEN" \\
    -H 'Content-Type: application/json' \\
    -d '{"action":"call_tool","resource":{"type":"Tool","id":"deploy__trigger_deploy","attributes":{"name":"trigger_deploy","server":"deploy","risk":"high","categories":["execute"]}},"context":{"args":{"environment":"production"}}}'

  # --- the MCP gateway: the tools of server "everything", governed ---------------------
  mcp() { curl -s http://$LISTEN/mcp -H "Authorization: Bearer \$AGENT_TOKEN" \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
    \${SESSION:+-H "Mcp-Session-Id: \$SESSION"} -D /tmp/warden-mcp-headers -d "\$1"; echo; }
  mcp '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}'
  SESSION=\$(grep -i '^mcp-session-id' /tmp/warden-mcp-headers | cut -d' ' -f2 | tr -d '\r')
  mcp '{"jsonrpc":"2.0","id":2,"method":"tools/list"}'
  # allow: echo is read-only
  mcp '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"everything__echo","arguments":{"message":"hi"}}}'
  # deny, with the policy's reason
  mcp '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"everything__get-env"}}'
  # held until a person approves it: run this, then in a third terminal
  #   $WARDEN approvals list --data-dir $DATA_DIR --tenant acme
  #   $WARDEN approvals approve <ID> --data-dir $DATA_DIR --tenant acme --by alice
  mcp '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"everything__get-sum","arguments":{"a":2,"b":3}}}'

  # or a real MCP client (the official Python SDK) doing all of that:
  .peers/venv/bin/python tests/interop/python_client.py http http://$LISTEN/mcp \$AGENT_TOKEN

  # the audit trail, and its verification
  curl -s "http://$LISTEN/api/v1/audit/events?limit=3" -H "Authorization: Bearer \$AUDITOR_TOKEN"
  $WARDEN audit verify --data-dir $DATA_DIR

MSG
exec $WARDEN serve --config examples/warden.toml --data-dir "$DATA_DIR" --listen "$LISTEN" \
  --policies examples/policies
