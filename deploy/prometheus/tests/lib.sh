# shellcheck shell=bash
# Shared by the tests/checks.d scripts: makes sure promtool exists (Debian package
# `prometheus`). The package may try to start its own service; that is harmless here and is
# stopped again when systemd is present.
ensure_promtool() {
  command -v promtool >/dev/null && return 0
  echo "promtool missing: apt-get install -y prometheus" >&2
  local sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q prometheus >/dev/null 2>&1 || {
    $sudo apt-get update -q >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q prometheus >/dev/null 2>&1 || true
  }
  if command -v systemctl >/dev/null && systemctl is-active -q prometheus 2>/dev/null; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  command -v promtool >/dev/null || { echo "FAIL: could not install promtool" >&2; return 1; }
}

# PyYAML for the structural checks (Debian: python3-yaml).
ensure_pyyaml() {
  python3 -c 'import yaml' 2>/dev/null && return 0
  local sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q python3-yaml >/dev/null 2>&1 || {
    $sudo apt-get update -q >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q python3-yaml >/dev/null 2>&1 || true
  }
  python3 -c 'import yaml' || { echo "FAIL: python3-yaml missing" >&2; return 1; }
}
