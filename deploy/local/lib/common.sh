# shellcheck shell=bash
# shellcheck disable=SC2034 # settings read by the other files of deploy/local that source this one
# Service-independent helpers of deploy/local (sourced through ../lib.sh, not executed):
# the state folder, logging, the command lock, pid files, starting and stopping a server,
# port probes, apt-get and the template renderer. Everything lives under ONE state folder
# (git-ignored):
#
#   $LASTSEEN_LOCAL_DIR (default: <repo>/.local)
#     cache/                   downloads and compiled helpers kept by `down --wipe`
#     <service>/{data,logs,config}
#     run/*.pid                pid files of the processes we started, run/.lock

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$DEPLOY_DIR/../.." && pwd)"
TEMPLATE_DIR="$DEPLOY_DIR/templates"

LOCAL_DIR="${LASTSEEN_LOCAL_DIR:-$REPO_DIR/.local}"
CACHE_DIR="$LOCAL_DIR/cache"
RUN_DIR="$LOCAL_DIR/run"

START_TIMEOUT="${LASTSEEN_START_TIMEOUT:-60}"
STOP_TIMEOUT="${LASTSEEN_STOP_TIMEOUT:-30}"

log() { printf '[local] %s\n' "$*" >&2; }
die() { printf '[local] ERROR: %s\n' "$*" >&2; exit 1; }

# Serialize up/down/kafka/clickhouse invocations (fd 9 stays open until exit).
take_lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/.lock"
  flock -w 120 9 || die "another deploy/local command holds $RUN_DIR/.lock"
}

# ---------------------------------------------------------------- pid files --

# SERVICE_CMDLINE[name]: a string the command line of that service's process contains; each
# service file registers its own. It guards against pid reuse.
declare -A SERVICE_CMDLINE=()

pid_file() { echo "$RUN_DIR/$1.pid"; }

# Prints the pid of service $1 if its pid file points at a live process.
pid_alive() {
  local f pid pattern="${SERVICE_CMDLINE[$1]:-}"
  f="$(pid_file "$1")"
  [[ -s "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: must still be the same kind of process.
  if [[ -n "$pattern" ]]; then
    grep -qa -- "$pattern" "/proc/$pid/cmdline" 2>/dev/null || return 1
  fi
  echo "$pid"
}

# running PID: true while PID is a live process. A zombie is not: it has exited (closed its
# files, ports and locks) and only waits to be reaped by its parent - for a server started
# with setsid that is PID 1, which may take a second or two (measured 1.7 s here).
running() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ "${state:0:1}" != Z ]]
}

# stop_service NAME SIGNAL: send SIGNAL (TERM waits up to STOP_TIMEOUT s, then KILL).
stop_service() {
  local name="$1" sig="${2:-TERM}" pid i
  if ! pid="$(pid_alive "$name")"; then
    log "$name: not running"
    rm -f "$(pid_file "$name")"
    return 0
  fi
  if [[ "$sig" == KILL ]]; then
    log "$name: SIGKILL pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
  else
    log "$name: SIGTERM pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
      running "$pid" || break
      sleep 0.1
    done
    if running "$pid"; then
      log "$name: still alive after ${STOP_TIMEOUT}s, SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  for ((i = 0; i < 50; i++)); do
    running "$pid" || break
    sleep 0.1
  done
  rm -f "$(pid_file "$name")"
  log "$name: stopped"
}

# spawn_server LOG CMD...: starts a long-lived server in the background; its pid goes to
# SPAWNED_PID. setsid: its own session, so the server outlives the shell (or agent) that
# started it and a signal to the caller's process group does not reach it (setsid execs in
# place: a background job is not a group leader, so $! is the server's pid). Only stdin
# (/dev/null), stdout and stderr (LOG) are passed on: every other inherited descriptor is
# closed first, so the server cannot keep a lock of whoever called us - take_lock's fd 9,
# or `flock FILE tests/serial.d/50-chaos`, whose lock fd reaches `kafka restart` through
# cargo and the test and would otherwise be held for the broker's whole life.
SPAWNED_PID=
spawn_server() {
  local log="$1"
  shift
  (
    for fd in /proc/self/fd/*; do
      fd="${fd##*/}"
      if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid nohup "$@" >>"$log" 2>&1 </dev/null
  ) &
  SPAWNED_PID=$!
}

# port_busy PORT: true if something listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------- apt --

APT_UPDATED=0
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [[ $EUID -eq 0 ]] || die "need root to apt-get install ${missing[*]}"
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ((APT_UPDATED == 0)); then
    apt-get update -qq
    APT_UPDATED=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- templates --

# render_template TEMPLATE OUT VAR...: writes templates/TEMPLATE to OUT with ${VAR} replaced
# by the value of each named shell variable, and nothing else replaced: envsubst is given
# the list, so the ${...} lookups of log4j2 and the like stay as they are. Every VAR must be
# set, and no ${UPPER_CASE} name may be left in the output - a variable the template uses
# but the caller forgot would otherwise reach the server as literal text. The file is
# replaced in one rename, so a server never reads half of it.
render_template() {
  local tmpl="$TEMPLATE_DIR/$1" out="$2" format="" v envs=() left
  shift 2
  [[ -f "$tmpl" ]] || die "template $tmpl missing"
  command -v envsubst >/dev/null || apt_install gettext-base
  for v in "$@"; do
    [[ -v "$v" ]] || die "render_template: \$$v is not set (template $tmpl)"
    format+="\${$v} "
    envs+=("$v=${!v}")
  done
  env "${envs[@]}" envsubst "$format" <"$tmpl" >"$out.tmp" || die "envsubst failed on $tmpl"
  # shellcheck disable=SC2016 # a literal ${NAME}, not an expansion
  if left="$(grep -o '\${[A-Z][A-Z0-9_]*}' "$out.tmp" | sort -u | tr '\n' ' ')" && [[ -n "$left" ]]; then
    rm -f "$out.tmp"
    die "template $tmpl uses $left but the caller renders only: $*"
  fi
  mv -f "$out.tmp" "$out"
}
