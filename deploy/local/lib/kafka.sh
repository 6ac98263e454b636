# shellcheck shell=bash
# shellcheck disable=SC2034 # settings read by the other files of deploy/local that source this one
# Kafka 4.3.1 of deploy/local: KRaft, one node that is broker and controller, on loopback.
# Sourced through ../lib.sh after common.sh. The jars come from Maven (../pom.xml) into the
# cache; the server configuration is rendered from ../templates/kafka/ on every start.
#
#   $LASTSEEN_LOCAL_DIR/cache/kafka-libs/   Kafka jars resolved by Maven from pom.xml
#   $LASTSEEN_LOCAL_DIR/cache/tools/        LocalKafkaAdmin compiled by javac
#   $LASTSEEN_LOCAL_DIR/kafka/{data,logs,config}  KRaft log dir, server.out + log4j2 logs,
#                                           server.properties + log4j2 files

KAFKA_LIBS="$CACHE_DIR/kafka-libs"
KAFKA_TOOLS_DIR="$CACHE_DIR/tools"
KAFKA_DIR="$LOCAL_DIR/kafka"

KAFKA_VERSION="4.3.1"
KAFKA_HOST="127.0.0.1"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9095}"
KAFKA_BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}"
KAFKA_PARTITIONS="${LASTSEEN_KAFKA__PARTITIONS:-6}"

SERVICE_CMDLINE["kafka"]='kafka.Kafka'

# Tool JVMs (storage format, topic admin): tiny heap, fast start, no JIT tiers.
TOOL_JAVA_OPTS=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto)

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
  render_template kafka/server.properties "$KAFKA_DIR/config/server.properties" \
    KAFKA_HOST KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_DIR KAFKA_PARTITIONS
  render_template kafka/log4j2.yaml "$KAFKA_DIR/config/log4j2.yaml" KAFKA_DIR
  render_template kafka/log4j2-tools.yaml "$KAFKA_DIR/config/log4j2-tools.yaml"
}

# Compiles LocalKafkaAdmin.java (one JVM for wait + all topics) into the cache.
# Prints nothing; returns 1 if no javac is available (callers fall back to TopicCommand).
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
