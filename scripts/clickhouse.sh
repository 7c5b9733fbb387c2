#!/usr/bin/env bash
# Makes sure a ClickHouse server of the project's own answers on loopback, for the analytics
# tests and for local use. Idempotent: installs Debian's clickhouse-server and clickhouse-client
# if they are missing, writes a config under .clickhouse/ (data, tmp and log folders of its own,
# listening on 127.0.0.1 only), starts the server in the background unless /ping already
# answers, and waits for /ping.
#
#   scripts/clickhouse.sh                 # http 18123, tcp 19000, folder .clickhouse/
#   scripts/clickhouse.sh HTTP TCP DIR    # a second, private instance (tests stop and start it)
#
# The same three settings can come from WARDEN_CLICKHOUSE_HTTP_PORT, WARDEN_CLICKHOUSE_TCP_PORT
# and WARDEN_CLICKHOUSE_DIR. The server's pid is written to DIR/server.pid.
set -euo pipefail
cd "$(dirname "$0")/.."

http_port="${1:-${WARDEN_CLICKHOUSE_HTTP_PORT:-18123}}"
tcp_port="${2:-${WARDEN_CLICKHOUSE_TCP_PORT:-19000}}"
dir="${3:-${WARDEN_CLICKHOUSE_DIR:-$PWD/.clickhouse}}"
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac

ping_ok() {
    if command -v curl >/dev/null; then
        curl -fsS --max-time 2 "http://127.0.0.1:${http_port}/ping" >/dev/null 2>&1
    else
        # No curl on a minimal machine: ask over bash's /dev/tcp.
        timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/${http_port} && printf 'GET /ping HTTP/1.0\r\n\r\n' >&3 && grep -q 'Ok.' <&3" 2>/dev/null
    fi
}

if ping_ok; then
    echo "ClickHouse answers on 127.0.0.1:${http_port}"
    exit 0
fi

if ! command -v clickhouse-server >/dev/null; then
    echo "installing clickhouse-server and clickhouse-client (Debian packages)"
    as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            echo "error: clickhouse-server is not installed and this is not root (no sudo either)" >&2
            exit 1
        }
        as_root=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! "${as_root[@]}" apt-get install -y clickhouse-server clickhouse-client; then
        # A fresh machine may not have package lists yet.
        "${as_root[@]}" apt-get update
        "${as_root[@]}" apt-get install -y clickhouse-server clickhouse-client
    fi
fi

mkdir -p "$dir/data" "$dir/tmp" "$dir/log" "$dir/user_files" "$dir/format_schemas"
users_config=/etc/clickhouse-server/users.xml
if [ ! -r "$users_config" ]; then
    echo "error: $users_config is missing (it comes with clickhouse-server)" >&2
    exit 1
fi
cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/clickhouse.sh; rewritten on every start. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>${dir}/log/clickhouse-server.log</log>
        <errorlog>${dir}/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>${http_port}</http_port>
    <tcp_port>${tcp_port}</tcp_port>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>1073741824</uncompressed_cache_size>
    <mark_cache_size>1073741824</mark_cache_size>
    <path>${dir}/data/</path>
    <tmp_path>${dir}/tmp/</tmp_path>
    <user_files_path>${dir}/user_files/</user_files_path>
    <format_schema_path>${dir}/format_schemas/</format_schema_path>
    <users_config>${users_config}</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
EOF

echo "starting ClickHouse on 127.0.0.1:${http_port} (tcp ${tcp_port}), data in ${dir}"
# setsid: the server outlives this script and the shell that ran it.
setsid clickhouse-server --config-file="$dir/config.xml" \
    >"$dir/log/stdout.log" 2>&1 </dev/null &
echo $! >"$dir/server.pid"

for _ in $(seq 1 120); do
    if ping_ok; then
        echo "ClickHouse answers on 127.0.0.1:${http_port}"
        exit 0
    fi
    if ! kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
        echo "error: clickhouse-server exited; last lines of its logs:" >&2
        tail -n 20 "$dir/log/stdout.log" "$dir/log/clickhouse-server.err.log" >&2 2>/dev/null || true
        exit 1
    fi
    sleep 0.5
done
echo "error: ClickHouse did not answer /ping on 127.0.0.1:${http_port} within 60 s; see ${dir}/log/" >&2
exit 1
