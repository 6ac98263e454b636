#!/usr/bin/env bash
# Runs schemathesis against a RUNNING ingest: every response must be documented in
# /openapi.json (status code, content type, headers, schema) and none may be a 5xx.
#
#   ingest/tests/schemathesis.sh URL TOKEN [extra schemathesis args...]
#   (or INGEST_URL / INGEST_TOKEN in the environment; SCHEMATHESIS_MAX_EXAMPLES, default 50)
#
# Installs schemathesis into <repo>/.local/venv if missing. Point ingest at a scratch topic
# (LASTSEEN_KAFKA__CONTACTS_TOPIC), since schemathesis posts real pings. A full local run:
#   T=$(cargo run -q -p ingest --example dev_token -- --create-topic test.ingest.schemathesis)
#   LASTSEEN_KAFKA__CONTACTS_TOPIC=test.ingest.schemathesis LASTSEEN_INGEST__LISTEN=127.0.0.1:18080 \
#     cargo run -q -p ingest & ; ingest/tests/schemathesis.sh http://127.0.0.1:18080 "$T"
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
url="${1:-${INGEST_URL:-}}"
token="${2:-${INGEST_TOKEN:-}}"
shift $(( $# >= 2 ? 2 : $# ))
if [[ -z "$url" || -z "$token" ]]; then
  echo "usage: $0 URL TOKEN [schemathesis args...]" >&2
  exit 2
fi
venv="$root/.local/venv"
if [[ ! -x "$venv/bin/schemathesis" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q schemathesis
fi
# Wait for the API to be ready (Kafka reachable, topic present).
for _ in $(seq 1 60); do
  curl -fsS "$url/readyz" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "$url/readyz" >/dev/null
exec "$venv/bin/schemathesis" run "$url/openapi.json" \
  --url "$url" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
  --generation-database none \
  --request-timeout 10 \
  "$@"
