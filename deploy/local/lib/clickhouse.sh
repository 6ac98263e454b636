# shellcheck shell=bash
# shellcheck disable=SC2034 # settings read by the other files of deploy/local that source this one
# ClickHouse of deploy/local: Debian's clickhouse-server 18.16, run by us (not the system
# service) on loopback. Sourced through ../lib.sh after common.sh. The server configuration is
# rendered from ../templates/clickhouse/ on every start; the lastseen users come from
# deploy/clickhouse/users.d/lastseen.xml, the file docker compose mounts as well.
#
#   $LASTSEEN_LOCAL_DIR/clickhouse/data/    data path (+tmp, user_files, format_schemas)
#   $LASTSEEN_LOCAL_DIR/clickhouse/logs/    server.out, clickhouse-server{,.err}.log
#   $LASTSEEN_LOCAL_DIR/clickhouse/config/  config.xml, users.xml, users.d/lastseen.xml

CH_DIR="$LOCAL_DIR/clickhouse"
CH_HOST="127.0.0.1"
CH_HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
CH_TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"
CH_URL="http://$CH_HOST:$CH_HTTP_PORT"

# The shared users file reads these from the server's environment (from_env). The local
# values are fixed, whatever the caller's environment holds: tests and tools log in with them.
# ClickHouse reads an unset variable as an empty password, so ch_write_config checks that
# every from_env name of the file is one of these.
CH_USERS_FILE="$REPO_DIR/deploy/clickhouse/users.d/lastseen.xml"
CH_USERS_ENV=(
  CLICKHOUSE_SINK_PASSWORD=sink
  CLICKHOUSE_ANALYST_PASSWORD=analyst
  CLICKHOUSE_USERS_NETWORK=127.0.0.1 # with ::1 from the file: loopback only, as listen_host
)

SERVICE_CMDLINE["clickhouse"]='clickhouse'

# Note: Debian's ClickHouse 18.16 runs fine as root (no "run as clickhouse user"
# check), so when `up` runs as root the server runs as root and owns .local/clickhouse.

ch_ensure_installed() {
  if ! command -v clickhouse-server >/dev/null || ! command -v clickhouse-client >/dev/null; then
    apt_install clickhouse-server clickhouse-client
    # On a systemd host the package auto-starts its own service on 8123/9000,
    # which would collide with ours: stop and disable the one we just caused.
    if command -v systemctl >/dev/null && systemctl is-active --quiet clickhouse-server 2>/dev/null; then
      log "clickhouse: stopping+disabling the system service started by the package install"
      systemctl disable --now clickhouse-server >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/clickhouse-server ]]; then
      /etc/init.d/clickhouse-server stop >/dev/null 2>&1 || true
    fi
  fi
  if ! command -v curl >/dev/null; then
    apt_install curl
  fi
}

ch_write_config() {
  local name want=() v
  mkdir -p "$CH_DIR"/{data,logs,config} "$CH_DIR"/data/{tmp,user_files,format_schemas} "$RUN_DIR"
  render_template clickhouse/config.xml "$CH_DIR/config/config.xml" \
    CH_DIR CH_HOST CH_HTTP_PORT CH_TCP_PORT
  render_template clickhouse/users.xml "$CH_DIR/config/users.xml"
  for v in "${CH_USERS_ENV[@]}"; do want+=("${v%%=*}"); done
  while read -r name; do
    [[ " ${want[*]} " == *" $name "* ]] ||
      die "clickhouse: $CH_USERS_FILE reads \$$name, which deploy/local does not set (CH_USERS_ENV)"
  done < <(grep -o 'from_env="[^"]*"' "$CH_USERS_FILE" | sed 's/from_env="\(.*\)"/\1/' | sort -u)
  # users.d/ holds exactly the shared file: ClickHouse merges every file of it into users.xml.
  rm -rf "$CH_DIR/config/users.d"
  mkdir -p "$CH_DIR/config/users.d"
  cp "$CH_USERS_FILE" "$CH_DIR/config/users.d/lastseen.xml"
}

ch_ready() {
  [[ "$(curl -sf --max-time 2 "$CH_URL/?query=SELECT%201" 2>/dev/null)" == 1 ]]
}

ch_start() {
  local pid
  if pid="$(pid_alive clickhouse)"; then
    if ch_ready; then
      log "clickhouse: already running (pid $pid) at $CH_URL"
      return 0
    fi
    log "clickhouse: pid $pid alive but not answering yet; waiting"
    ch_wait "$pid"
    return
  fi
  rm -f "$(pid_file clickhouse)"
  if port_busy "$CH_HTTP_PORT" || port_busy "$CH_TCP_PORT"; then
    die "clickhouse: port $CH_HTTP_PORT or $CH_TCP_PORT already in use by a process we did not start" \
      "(system service? try: systemctl disable --now clickhouse-server)"
  fi
  ch_ensure_installed
  ch_write_config
  log "clickhouse: starting at $CH_URL (native :$CH_TCP_PORT)"
  spawn_server "$CH_DIR/logs/server.out" env "${CH_USERS_ENV[@]}" \
    clickhouse-server --config-file="$CH_DIR/config/config.xml"
  pid=$SPAWNED_PID
  echo "$pid" >"$(pid_file clickhouse)"
  ch_wait "$pid"
}

ch_wait() {
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! running "$pid"; then
      ch_fail "clickhouse: process $pid exited during startup"
    fi
    if ch_ready; then
      log "clickhouse: ready at $CH_URL (pid $pid)"
      return 0
    fi
    sleep 0.3
  done
  ch_fail "clickhouse: not answering after ${START_TIMEOUT}s"
}

ch_fail() {
  log "$1; last lines of $CH_DIR/logs:"
  tail -n 20 "$CH_DIR/logs/server.out" >&2 2>/dev/null || true
  tail -n 30 "$CH_DIR/logs/clickhouse-server.err.log" >&2 2>/dev/null || true
  exit 1
}

ch_status() {
  local pid
  if pid="$(pid_alive clickhouse)"; then
    if ch_ready; then
      echo "clickhouse: running (pid $pid) http=$CH_URL tcp=$CH_HOST:$CH_TCP_PORT"
      return 0
    fi
    echo "clickhouse: process alive (pid $pid) but not answering"
    return 1
  fi
  echo "clickhouse: stopped"
  return 3
}
