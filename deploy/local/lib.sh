# shellcheck shell=bash
# Shared settings and helpers for deploy/local/{up,down,kafka,clickhouse}.
# Sourced, not executed. Everything lives under ONE state folder (git-ignored):
#
#   $LASTSEEN_LOCAL_DIR (default: <repo>/.local)
#     cache/kafka-libs/        Kafka 4.3.1 jars resolved by Maven from pom.xml
#     kafka/{data,logs,config} KRaft log dir, server.out + log4j2 logs, server.properties
#     clickhouse/{data,logs,config}  data path, server logs, config.xml + users.xml
#     run/*.pid                pid files of the processes we started

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$DEPLOY_DIR/../.." && pwd)"

LOCAL_DIR="${LASTSEEN_LOCAL_DIR:-$REPO_DIR/.local}"
CACHE_DIR="$LOCAL_DIR/cache"
KAFKA_LIBS="$CACHE_DIR/kafka-libs"
KAFKA_DIR="$LOCAL_DIR/kafka"
CH_DIR="$LOCAL_DIR/clickhouse"
RUN_DIR="$LOCAL_DIR/run"

KAFKA_VERSION="4.3.1"
KAFKA_HOST="127.0.0.1"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9095}"
KAFKA_BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}"
KAFKA_PARTITIONS="${LASTSEEN_KAFKA__PARTITIONS:-6}"

CH_HOST="127.0.0.1"
CH_HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
CH_TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"
CH_URL="http://$CH_HOST:$CH_HTTP_PORT"

START_TIMEOUT="${LASTSEEN_START_TIMEOUT:-60}"
STOP_TIMEOUT="${LASTSEEN_STOP_TIMEOUT:-30}"

# Tool JVMs (storage format, topic admin): tiny heap, fast start, no JIT tiers.
TOOL_JAVA_OPTS=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto)

log() { printf '[local] %s\n' "$*" >&2; }

# Serialize up/down/kafka/clickhouse invocations (fd 9 stays open until exit).
take_lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/.lock"
  flock -w 120 9 || die "another deploy/local command holds $RUN_DIR/.lock"
}
die() { printf '[local] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- pid files --

pid_file() { echo "$RUN_DIR/$1.pid"; }

# Prints the pid of service $1 if its pid file points at a live process.
pid_alive() {
  local f pid
  f="$(pid_file "$1")"
  [[ -s "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: must still be the same kind of process.
  case "$1" in
    kafka) grep -qa 'kafka.Kafka' "/proc/$pid/cmdline" 2>/dev/null || return 1 ;;
    clickhouse) grep -qa 'clickhouse' "/proc/$pid/cmdline" 2>/dev/null || return 1 ;;
  esac
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

# stop_pid NAME SIGNAL: send SIGNAL (TERM waits up to STOP_TIMEOUT s, then KILL).
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

# -------------------------------------------------------------------- kafka --

kafka_java() { command -v java >/dev/null || die "java (17+) not found"; }

kafka_libs_ensure() {
  kafka_java
  if [[ -f "$KAFKA_LIBS/.complete-$KAFKA_VERSION" ]]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  log "resolving Kafka $KAFKA_VERSION jars with Maven into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$KAFKA_LIBS"
  mvn -q -B -Dstyle.color=never -f "$DEPLOY_DIR/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" >&2 ||
    die "maven failed to resolve Kafka jars"
  touch "$KAFKA_LIBS/.complete-$KAFKA_VERSION"
}

# kafka_tool MAIN_CLASS ARGS...: run a Kafka CLI class with the cached jars.
kafka_tool() {
  local main="$1"
  shift
  java "${TOOL_JAVA_OPTS[@]}" \
    -Dlog4j2.configurationFile="$KAFKA_DIR/config/log4j2-tools.yaml" \
    -cp "$KAFKA_LIBS/*" "$main" "$@"
}

kafka_write_config() {
  mkdir -p "$KAFKA_DIR"/{data,logs,config} "$RUN_DIR"
  cat >"$KAFKA_DIR/config/server.properties" <<EOF
# Generated by deploy/local/lib.sh - edits are overwritten on start.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=$KAFKA_PARTITIONS
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# After a SIGKILL the restarted node must wait for its old broker session to
# expire (DUPLICATE_BROKER_REGISTRATION) - keep that short for fault tests.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
num.network.threads=2
num.io.threads=4
# Log loading at start-up and flushing+closing at shutdown run on this many threads (one
# per core); a clean shutdown still flushes every log, so nothing is recovered or lost.
num.recovery.threads.per.data.dir=2
background.threads=4
log.retention.hours=168
log.segment.bytes=268435456
log.cleaner.dedupe.buffer.size=16777216
log.cleaner.threads=1
delete.topic.enable=true
# Deleted topics' folders go after 5 s, not 60 s: folders still waiting are loaded again by a
# start-up that comes first (tests delete their topics, then the chaos test restarts Kafka).
file.delete.delay.ms=5000
EOF
  # Per-partition INFO lines (~5 per partition per start: log loaded, leader set, metadata
  # replayed) go to WARN: thousands of synchronous lines on the start-up path. log4j's own
  # shutdown hook is off so the broker's shutdown is logged to its end.
  cat >"$KAFKA_DIR/config/log4j2.yaml" <<EOF
Configuration:
  shutdownHook: disable
  Properties:
    Property:
      - name: "logDir"
        value: "$KAFKA_DIR/logs"
      - name: "pattern"
        value: "[%d] %p %m (%c)%n"
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "\${pattern}"
    RollingFile:
      - name: KafkaAppender
        fileName: "\${logDir}/server.log"
        filePattern: "\${logDir}/server.log.%i"
        PatternLayout:
          pattern: "\${pattern}"
        SizeBasedTriggeringPolicy:
          size: 50MB
        DefaultRolloverStrategy:
          max: 3
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: KafkaAppender
    Logger:
      - name: kafka
        level: INFO
      - name: org.apache.kafka
        level: INFO
      - name: state.change.logger
        level: WARN
      - name: kafka.request.logger
        level: WARN
      - name: kafka.log.LogCleaner
        level: WARN
      - name: kafka.cluster.Partition
        level: WARN
      - name: org.apache.kafka.storage.internals.log
        level: WARN
      - name: org.apache.kafka.controller.ReplicationControlManager
        level: WARN
      - name: org.apache.kafka.controller.PartitionChangeBuilder
        level: WARN
EOF
  cat >"$KAFKA_DIR/config/log4j2-tools.yaml" <<'EOF'
Configuration:
  Appenders:
    Console:
      name: STDERR
      target: SYSTEM_ERR
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: ERROR
      AppenderRef:
        - ref: STDERR
EOF
}

# Compiles LocalKafkaAdmin.java (one JVM for wait + all topics) into the cache.
# Prints nothing; returns 1 if no javac is available (callers fall back to TopicCommand).
KAFKA_TOOLS_DIR="$CACHE_DIR/tools"
kafka_admin_ensure() {
  local src="$DEPLOY_DIR/LocalKafkaAdmin.java" stamp
  stamp="$KAFKA_TOOLS_DIR/.src-$(cksum <"$src" | cut -d' ' -f1)"
  [[ -f "$stamp" ]] && return 0
  command -v javac >/dev/null || return 1
  rm -rf "$KAFKA_TOOLS_DIR" && mkdir -p "$KAFKA_TOOLS_DIR"
  javac -nowarn -d "$KAFKA_TOOLS_DIR" -cp "$KAFKA_LIBS/*" "$src" >&2 || return 1
  touch "$stamp"
}

# kafka_admin MODE TIMEOUT_S [PARTITIONS TOPIC...]
kafka_admin() {
  local mode="$1" timeout="$2"
  shift 2
  java "${TOOL_JAVA_OPTS[@]}" \
    -Dlog4j2.configurationFile="$KAFKA_DIR/config/log4j2-tools.yaml" \
    -cp "$KAFKA_LIBS/*:$KAFKA_TOOLS_DIR" LocalKafkaAdmin "$mode" "$KAFKA_BOOTSTRAP" "$timeout" "$@"
}

# kafka_ready TIMEOUT_S: a real metadata round trip (describeCluster+listTopics)
# retried in-process until TIMEOUT_S; one JVM. Fallback: TopicCommand --list loop.
kafka_ready() {
  local deadline=$((SECONDS + $1))
  if kafka_admin_ensure; then
    kafka_admin wait "$1" >/dev/null 2>&1
    return
  fi
  while ((SECONDS < deadline)); do
    kafka_tool org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "$KAFKA_BOOTSTRAP" --list >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}

# Cheap liveness: the broker port accepts TCP and the pid is alive.
kafka_port_up() { port_busy "$KAFKA_PORT"; }

# Same shape as `kafka-storage random-uuid` (16 random bytes, base64url, no
# padding, not starting with "-"), without paying for a JVM start.
kafka_random_uuid() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    [[ "$id" != -* && "$id" != AAAAAAAAAAAAAAAAAAAAA* ]] && break
  done
  echo "$id"
}

kafka_start() {
  local pid
  if pid="$(pid_alive kafka)"; then
    if kafka_port_up; then
      # "answers" check + topics: no JVM when they all exist (~0.1 s), else one JVM (~2 s)
      if ! kafka_topics_ok 15; then
        kafka_libs_ensure
        kafka_create_topics 15 || kafka_fail "kafka: pid $pid alive but not answering metadata requests"
      fi
      log "kafka: already running (pid $pid) on $KAFKA_BOOTSTRAP"
      return 0
    fi
    log "kafka: pid $pid alive but port $KAFKA_PORT closed; waiting for it"
    kafka_wait "$pid"
    return
  fi
  rm -f "$(pid_file kafka)"
  if port_busy "$KAFKA_PORT" || port_busy "$KAFKA_CONTROLLER_PORT"; then
    die "kafka: port $KAFKA_PORT or $KAFKA_CONTROLLER_PORT already in use by a process we did not start"
  fi
  kafka_libs_ensure
  kafka_write_config
  if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
    log "kafka: formatting $KAFKA_DIR/data (standalone KRaft controller)"
    kafka_tool kafka.tools.StorageTool format --standalone \
      --cluster-id "$(kafka_random_uuid)" \
      --config "$KAFKA_DIR/config/server.properties" --ignore-formatted \
      >>"$KAFKA_DIR/logs/format.out" 2>&1 ||
      kafka_fail "kafka: storage format failed (see $KAFKA_DIR/logs/format.out)"
  fi
  log "kafka: starting broker+controller on $KAFKA_BOOTSTRAP (controller :$KAFKA_CONTROLLER_PORT)"
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of JVM flags
  spawn_server "$KAFKA_DIR/logs/server.out" java $KAFKA_HEAP_OPTS \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:CICompilerCount=2 -XX:ParallelGCThreads=2 \
    -XX:ConcGCThreads=1 -XX:MaxDirectMemorySize=256m -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DIR/config/log4j2.yaml" \
    -Dkafka.logs.dir="$KAFKA_DIR/logs" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/config/server.properties"
  pid=$SPAWNED_PID
  echo "$pid" >"$(pid_file kafka)"
  kafka_wait "$pid"
}

# kafka_wait PID: wait (START_TIMEOUT) for the port, then for a metadata answer that
# shows every lastseen topic (kafka_topics_ok, no JVM: the usual case of a restart); only
# if that fails, wait + create the missing topics with one JVM (kafka_create_topics).
# The broker opens its port last, once it has loaded its logs and caught up with the
# metadata, so the port is polled often and the first metadata request usually answers.
kafka_wait() {
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT)) left
  while ! kafka_port_up; do
    running "$pid" || kafka_fail "kafka: process $pid exited during startup"
    ((SECONDS < deadline)) || kafka_fail "kafka: port $KAFKA_PORT not open after ${START_TIMEOUT}s"
    sleep 0.1
  done
  left=$((deadline - SECONDS))
  ((left >= 10)) || left=10
  if kafka_topics_ok "$left"; then
    log "kafka: ready on $KAFKA_BOOTSTRAP (pid $pid)"
    return 0
  fi
  left=$((deadline - SECONDS))
  ((left >= 10)) || left=10
  kafka_create_topics "$left" || {
    running "$pid" || kafka_fail "kafka: process $pid exited during startup"
    kafka_fail "kafka: not answering metadata requests after ${START_TIMEOUT}s"
  }
  log "kafka: ready on $KAFKA_BOOTSTRAP (pid $pid)"
}

kafka_fail() {
  log "$1; last lines of $KAFKA_DIR/logs:"
  tail -n 10 "$KAFKA_DIR/logs/format.out" >&2 2>/dev/null || true
  tail -n 30 "$KAFKA_DIR/logs/server.out" >&2 2>/dev/null || true
  tail -n 30 "$KAFKA_DIR/logs/server.log" >&2 2>/dev/null || true
  exit 1
}

kafka_status() {
  local pid
  if pid="$(pid_alive kafka)"; then
    if kafka_port_up; then
      echo "kafka: running (pid $pid) bootstrap=$KAFKA_BOOTSTRAP"
      return 0
    fi
    echo "kafka: process alive (pid $pid) but port $KAFKA_PORT not open"
    return 1
  fi
  echo "kafka: stopped"
  return 3
}

LASTSEEN_TOPICS=(lastseen.contacts lastseen.events lastseen.processor-state lastseen.dead-letter)
declare -A LASTSEEN_TOPIC_CONFIG=([lastseen.processor-state]="cleanup.policy=compact")

# kafka_topics_ok TIMEOUT_S: true once the broker answers a metadata request in which every
# lastseen topic exists with a leader on every partition: kafka_probe.py, ~0.1 s, no JVM.
# False if a topic is missing, the broker did not answer within TIMEOUT_S, the answer was not
# understood or there is no python3: callers then run kafka_create_topics (the JVM tool),
# which waits for the broker itself and creates what is missing. Only existence is checked,
# as kafka_create_topics does (it never alters a topic that exists).
kafka_topics_ok() {
  local py
  # The system python first: a pyenv shim alone costs ~0.15 s.
  py="$(command -v /usr/bin/python3 || command -v python3)" || return 1
  "$py" -I "$DEPLOY_DIR/kafka_probe.py" "$KAFKA_BOOTSTRAP" "$1" "${LASTSEEN_TOPICS[@]}" 2>/dev/null
}

# One JVM (LocalKafkaAdmin) if javac exists, else TopicCommand --if-not-exists
# per missing topic (~2 s per JVM).
# kafka_create_topics [TIMEOUT_S]: waits up to TIMEOUT_S for the broker to
# answer, then creates the missing lastseen.* topics. Idempotent.
kafka_create_topics() {
  local timeout="${1:-$START_TIMEOUT}" t cfg specs=() existing
  if kafka_admin_ensure; then
    for t in "${LASTSEEN_TOPICS[@]}"; do
      # LocalKafkaAdmin takes NAME=k:v,k:v ("=" already separates the name)
      cfg="${LASTSEEN_TOPIC_CONFIG[$t]:-}"
      specs+=("$t=${cfg//=/:}")
    done
    kafka_admin ensure "$timeout" "$KAFKA_PARTITIONS" "${specs[@]}" |
      sed 's/^/[local] kafka: /' >&2
    return "${PIPESTATUS[0]}"
  fi
  kafka_ready "$timeout" || return 1
  existing="$(kafka_tool org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$KAFKA_BOOTSTRAP" --list 2>/dev/null)" || return 1
  for t in "${LASTSEEN_TOPICS[@]}"; do
    grep -qxF "$t" <<<"$existing" && continue
    local extra=()
    [[ -n "${LASTSEEN_TOPIC_CONFIG[$t]:-}" ]] && extra=(--config "${LASTSEEN_TOPIC_CONFIG[$t]}")
    log "kafka: creating topic $t (partitions=$KAFKA_PARTITIONS, rf=1 ${extra[*]})"
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
      --create --if-not-exists --topic "$t" --partitions "$KAFKA_PARTITIONS" \
      --replication-factor 1 "${extra[@]}" >/dev/null || return 1
  done
}

# --------------------------------------------------------------- clickhouse --

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
  mkdir -p "$CH_DIR"/{data,logs,config} "$CH_DIR"/data/{tmp,user_files,format_schemas} "$RUN_DIR"
  cat >"$CH_DIR/config/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Generated by deploy/local/lib.sh - edits are overwritten on start. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$CH_DIR/logs/clickhouse-server.log</log>
        <errorlog>$CH_DIR/logs/clickhouse-server.err.log</errorlog>
        <size>50M</size>
        <count>3</count>
    </logger>
    <listen_host>$CH_HOST</listen_host>
    <http_port>$CH_HTTP_PORT</http_port>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    <!-- no interserver_http_port: single node, no replication -->
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>50</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>134217728</mark_cache_size>
    <path>$CH_DIR/data/</path>
    <tmp_path>$CH_DIR/data/tmp/</tmp_path>
    <user_files_path>$CH_DIR/data/user_files/</user_files_path>
    <format_schema_path>$CH_DIR/data/format_schemas/</format_schema_path>
    <users_config>$CH_DIR/config/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <query_log>
        <database>system</database>
        <table>query_log</table>
        <partition_by>toYYYYMM(event_date)</partition_by>
        <flush_interval_milliseconds>7500</flush_interval_milliseconds>
    </query_log>
    <dictionaries_config>$CH_DIR/config/*_dictionary.xml</dictionaries_config>
    <max_table_size_to_drop>0</max_table_size_to_drop>
    <max_partition_size_to_drop>0</max_partition_size_to_drop>
    <!-- librdkafka settings of the Kafka table engine (used only by sink_bench's comparison):
         a new consumer group reads a topic from its start, as the sink does. -->
    <kafka>
        <auto_offset_reset>smallest</auto_offset_reset>
    </kafka>
</yandex>
EOF
  # Users (all loopback only):
  #   default        no password, full access (used by local tooling / tests)
  #   lastseen_sink  password "sink"    - the processor's ClickHouse writer
  #   analyst        password "analyst" - readonly=1 (SELECT only)
  cat >"$CH_DIR/config/users.xml" <<'EOF'
<?xml version="1.0"?>
<!-- Generated by deploy/local/lib.sh - edits are overwritten on start. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
            <max_threads>2</max_threads>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
        <readonly>
            <max_memory_usage>1000000000</max_memory_usage>
            <max_threads>2</max_threads>
            <readonly>1</readonly>
        </readonly>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <lastseen_sink>
            <password>sink</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </lastseen_sink>
        <analyst>
            <password>analyst</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>readonly</profile>
            <quota>default</quota>
        </analyst>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
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
  spawn_server "$CH_DIR/logs/server.out" clickhouse-server --config-file="$CH_DIR/config/config.xml"
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

print_endpoints() {
  cat <<EOF

lastseen local services:
  Kafka bootstrap   $KAFKA_BOOTSTRAP   (controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT)
  ClickHouse HTTP   $CH_URL            (users: default/no pw, lastseen_sink/sink, analyst/analyst RO)
  ClickHouse native $CH_HOST:$CH_TCP_PORT
  state folder      $LOCAL_DIR
EOF
}
