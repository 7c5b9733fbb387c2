#!/usr/bin/env bash
# Installs the MCP peers that the interoperability tests run against — servers and clients
# written by others, at pinned versions — into .peers/ at the repository root:
#
#   .peers/node_modules   npm packages from tests/peers/package.json + package-lock.json
#                         (server-everything, server-filesystem, inspector), via `npm ci`
#   .peers/venv           a Python venv with the packages of tests/peers/requirements.lock
#                         (the `mcp` SDK and its dependencies, every version pinned)
#
# Idempotent: when the installed set matches the manifests (a stamp holds their digest) it
# returns at once. Set WARDEN_PEERS_DIR to install elsewhere; the tests read the same variable.
# Needs node/npm (Node 20+) and python3 (3.10+).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
manifests="$root/tests/peers"
peers="${WARDEN_PEERS_DIR:-$root/.peers}"
mkdir -p "$peers"
peers="$(cd "$peers" && pwd)"

digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- npm packages ---------------------------------------------------------------------------
npm_digest="$(digest "$manifests/package.json" "$manifests/package-lock.json")"
if [[ -f "$peers/.npm-stamp" && "$(cat "$peers/.npm-stamp")" == "$npm_digest" \
      && -x "$peers/node_modules/.bin/mcp-server-everything" ]]; then
    echo "install-peers: npm packages up to date"
else
    echo "install-peers: installing npm packages into $peers"
    command -v npm >/dev/null || { echo "install-peers: npm is required (Node 20+)" >&2; exit 1; }
    cp "$manifests/package.json" "$manifests/package-lock.json" "$peers/"
    rm -f "$peers/.npm-stamp"
    npm ci --prefix "$peers" --no-audit --no-fund --loglevel=error
    echo "$npm_digest" > "$peers/.npm-stamp"
fi

# --- Python venv ----------------------------------------------------------------------------
py_digest="$(digest "$manifests/requirements.lock")"
venv="$peers/venv"
if [[ -f "$peers/.venv-stamp" && "$(cat "$peers/.venv-stamp")" == "$py_digest" \
      && -x "$venv/bin/python" ]]; then
    echo "install-peers: Python venv up to date"
else
    echo "install-peers: creating the Python venv $venv"
    command -v python3 >/dev/null || { echo "install-peers: python3 is required" >&2; exit 1; }
    rm -f "$peers/.venv-stamp"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # The lock names every package with its exact version (made from requirements.txt with
    # `pip freeze`), so --no-deps installs exactly that set.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-deps -r "$manifests/requirements.lock"
    "$venv/bin/python" -c 'import mcp' # fails loudly if the set is incomplete
    echo "$py_digest" > "$peers/.venv-stamp"
fi
