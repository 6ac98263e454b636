#!/usr/bin/env python3
"""Checks deploy files against the project's contracts.

  check_contract.py compose PROJECT.json   (output of compose-validate)
  check_contract.py k8s RENDERED.yaml       (output of kustomize build)

* every LASTSEEN_<SECTION>__<KEY> variable set names a key of common/src/defaults.toml
  (the one configuration; a typo would stop the service at start-up);
* every image is pinned to a version (a tag that is not `latest`);
* compose: bind-mounted files and directories exist, the Dockerfile exists, every lastseen
  service (ingest, processor, sink) is present with a readiness healthcheck; ClickHouse mounts
  the users file deploy/local uses too (deploy/clickhouse/users.d/lastseen.xml) and sets every
  variable it reads with from_env (an unset one would be an empty password);
* k8s: see check_k8s() below.
"""
import json
import os
import re
import sys
import tomllib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DEFAULTS = tomllib.load(open(os.path.join(ROOT, "common", "src", "defaults.toml"), "rb"))
errors = []


def env_ok(where, name):
    m = re.fullmatch(r"LASTSEEN_([A-Z0-9_]+?)__([A-Z0-9_]+)", name)
    if not name.startswith("LASTSEEN_") or name == "LASTSEEN_CONFIG":
        return
    if not m:
        errors.append(f"{where}: {name} is not LASTSEEN_<SECTION>__<KEY>")
        return
    sec, key = m.group(1).lower(), m.group(2).lower()
    if sec not in DEFAULTS or key not in DEFAULTS[sec]:
        errors.append(f"{where}: {name} names no key of common/src/defaults.toml ([{sec}] {key})")


def image_ok(where, image):
    if not image:
        errors.append(f"{where}: no image")
        return
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    if not tag or tag == "latest":
        errors.append(f"{where}: image {image} is not pinned to a version")


def check_compose(path):
    p = json.load(open(path, encoding="utf-8"))
    svcs = p["services"]
    for n, s in svcs.items():
        for k in (s.get("environment") or {}):
            env_ok(f"compose {n}", k)
        if "build" in s:
            df = os.path.join(s["build"]["context"], s["build"].get("dockerfile", "Dockerfile"))
            if not os.path.exists(df):
                errors.append(f"compose {n}: Dockerfile {df} missing")
            if not re.search(r":[\w.\-]+$", s.get("image", "")):
                errors.append(f"compose {n}: built image needs a tag")
        else:
            image_ok(f"compose {n}", s.get("image"))
        for v in s.get("volumes") or []:
            if v.get("type") == "bind" and not os.path.exists(v["source"]):
                errors.append(f"compose {n}: bind source {v['source']} missing")
    for n in ("ingest", "processor", "sink", "migrate", "kafka-init", "kafka", "clickhouse", "prometheus", "grafana"):
        if n not in svcs:
            errors.append(f"compose: service {n} missing")
    for n in ("ingest", "processor", "sink"):
        hc = " ".join((svcs.get(n, {}).get("healthcheck") or {}).get("test") or [])
        if "/readyz" not in hc:
            errors.append(f"compose {n}: healthcheck must probe /readyz")
    check_clickhouse_users(svcs.get("clickhouse", {}))
    print(f"compose: {len(svcs)} services; images pinned; LASTSEEN_* variables match defaults.toml; mounts exist; ClickHouse users shared with deploy/local")


USERS_FILE = os.path.join(ROOT, "deploy", "clickhouse", "users.d", "lastseen.xml")


def check_clickhouse_users(svc):
    """The users come from the one file shared with deploy/local, and its from_env variables are set."""
    mounts = [v for v in svc.get("volumes") or [] if v.get("type") == "bind"]
    shared = [v for v in mounts if os.path.realpath(v["source"]) == os.path.realpath(USERS_FILE)]
    if not shared:
        errors.append(f"compose clickhouse: must mount {os.path.relpath(USERS_FILE, ROOT)} (the users deploy/local uses)")
    elif not shared[0]["target"].startswith("/etc/clickhouse-server/users.d/"):
        errors.append(f"compose clickhouse: {os.path.relpath(USERS_FILE, ROOT)} must go into /etc/clickhouse-server/users.d/")
    env = svc.get("environment") or {}
    for v in mounts:
        if v["source"].endswith(".xml") and os.path.isfile(v["source"]):
            for name in sorted(set(re.findall(r'from_env="([^"]+)"', open(v["source"], encoding="utf-8").read()))):
                if not env.get(name):
                    errors.append(f"compose clickhouse: {v['source']} reads {name} (from_env), which the service does not set")


def check_k8s(path):
    import yaml
    docs = [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    workloads = kinds.get("Deployment", []) + kinds.get("StatefulSet", [])
    names = {w["metadata"]["name"] for w in workloads}
    for want in ("lastseen-ingest", "lastseen-processor", "lastseen-sink"):
        if want not in names:
            errors.append(f"k8s: workload {want} missing")
    cms = {c["metadata"]["name"]: c for c in kinds.get("ConfigMap", [])}
    secrets = {s["metadata"]["name"]: s for s in kinds.get("Secret", [])}
    secrets.update({n: None for n in EXTERNAL_SECRETS})
    pdb_selectors = [p["spec"]["selector"].get("matchLabels", {}) for p in kinds.get("PodDisruptionBudget", [])]
    for w in workloads:
        n = w["metadata"]["name"]
        spec = w["spec"]["template"]["spec"]
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        if not any(sel and all(labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
            errors.append(f"k8s {n}: no PodDisruptionBudget selects its pods")
        if not spec.get("terminationGracePeriodSeconds"):
            errors.append(f"k8s {n}: terminationGracePeriodSeconds missing")
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            where = f"k8s {n}/{c['name']}"
            image_ok(where, c.get("image"))
            for e in c.get("env", []):
                env_ok(where, e["name"])
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets:
                    errors.append(f"{where}: secret {ref['name']} not in the rendered manifests")
                if re.search(r"SECRET|PASSWORD", e["name"]) and "value" in e:
                    errors.append(f"{where}: {e['name']} must come from a Secret, not a literal")
            for probe in ("livenessProbe", "readinessProbe"):
                path_ = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                want = "/healthz" if probe == "livenessProbe" else "/readyz"
                if path_ != want:
                    errors.append(f"{where}: {probe} must be httpGet {want}")
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits", {}).get("memory"):
                errors.append(f"{where}: resources.requests and limits.memory required")
            args = c.get("args", []) + c.get("command", [])
            if "--config" not in args:
                errors.append(f"{where}: must run with --config (the mounted lastseen.toml)")
            for m in c.get("volumeMounts", []):
                v = vols.get(m["name"])
                if v and "configMap" in v and v["configMap"]["name"] not in cms:
                    errors.append(f"{where}: ConfigMap {v['configMap']['name']} not rendered")
        if n == "lastseen-processor":
            if w["kind"] != "StatefulSet":
                errors.append("k8s lastseen-processor: must be a StatefulSet (stable transactional.id)")
            env = {e["name"]: e for c in spec["containers"] for e in c.get("env", [])}
            fr = ((env.get("LASTSEEN_PROCESSOR__INSTANCE_ID") or {}).get("valueFrom") or {}).get("fieldRef", {})
            if fr.get("fieldPath") != "metadata.name":
                errors.append("k8s lastseen-processor: LASTSEEN_PROCESSOR__INSTANCE_ID must come from the pod name")
    # The mounted lastseen.toml must only use known keys too.
    for name, cm in cms.items():
        for fname, text in (cm.get("data") or {}).items():
            if fname.endswith(".toml"):
                cfg = tomllib.loads(text)
                for sec, kv in cfg.items():
                    for key in kv:
                        if sec not in DEFAULTS or key not in DEFAULTS[sec]:
                            errors.append(f"k8s ConfigMap {name}/{fname}: [{sec}] {key} is not a configuration key")
                        elif key in ("hs256_secret", "password") and kv[key]:
                            errors.append(f"k8s ConfigMap {name}/{fname}: secret {sec}.{key} belongs in a Secret")
    print(f"k8s: {len(docs)} objects; probes, resources, PDBs, grace periods, ConfigMap/Secret wiring, "
          f"stable processor ids and LASTSEEN_* names checked")


EXTERNAL_SECRETS = []

if __name__ == "__main__":
    # --external-secret NAME: a Secret managed outside git (not in the rendered output).
    for i, a in enumerate(sys.argv):
        if a == "--external-secret":
            EXTERNAL_SECRETS.append(sys.argv[i + 1])
    {"compose": check_compose, "k8s": check_k8s}[sys.argv[1]](sys.argv[2])
    for e in errors:
        print(f"FAIL {e}", file=sys.stderr)
    sys.exit(1 if errors else 0)
