# shellcheck shell=bash
# Settings and helpers of deploy/local/{up,down,kafka,clickhouse}: sourced, not executed.
# One file per concern, in lib/; the server configurations are templates in templates/.
#
#   lib/common.sh      state folder, logging, lock, pid files, spawn/stop, ports, apt, render_template
#   lib/kafka.sh       Kafka 4.3.1 (KRaft): jars, config, start/wait/status, topics
#   lib/clickhouse.sh  ClickHouse 18.16: install, config, start/wait/status
#
# Everything lives under ONE state folder (git-ignored), $LASTSEEN_LOCAL_DIR (default
# <repo>/.local): cache/ (jars, compiled helper), kafka/ and clickhouse/ ({data,logs,config}),
# run/ (pid files, lock).

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=lib/kafka.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/kafka.sh"
# shellcheck source-path=SCRIPTDIR source=lib/clickhouse.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/clickhouse.sh"

print_endpoints() {
  cat <<EOT

lastseen local services:
  Kafka bootstrap   $KAFKA_BOOTSTRAP   (controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT)
  ClickHouse HTTP   $CH_URL            (users: default/no pw, lastseen_sink/sink, analyst/analyst RO)
  ClickHouse native $CH_HOST:$CH_TCP_PORT
  state folder      $LOCAL_DIR
EOT
}
