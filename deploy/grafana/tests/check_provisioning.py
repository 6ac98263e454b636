#!/usr/bin/env python3
"""Structural checks of deploy/grafana: provisioning files parse and have the keys Grafana
needs; every dashboard is valid JSON with a unique uid, unique panel ids, panels inside the
24-column grid, and only uses data sources (by uid) that the provisioning defines."""
import glob
import json
import os
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
G = os.path.join(ROOT, "deploy", "grafana")


def main():
    errors = []
    uids = {}
    for f in glob.glob(os.path.join(G, "provisioning", "datasources", "*.yml")):
        d = yaml.safe_load(open(f, encoding="utf-8"))
        if d.get("apiVersion") != 1:
            errors.append(f"{f}: apiVersion must be 1")
        for ds in d.get("datasources", []):
            for k in ("name", "uid", "type"):
                if not ds.get(k):
                    errors.append(f"{f}: data source without {k}")
            uids[ds.get("uid")] = ds.get("type")
            if ds.get("type") == "grafana-clickhouse-datasource":
                jd = ds.get("jsonData", {})
                for k in ("host", "port", "protocol", "defaultDatabase", "username"):
                    if k not in jd:
                        errors.append(f"{f}: ClickHouse data source jsonData.{k} missing")
                pw = ds.get("secureJsonData", {}).get("password", "")
                if pw and not pw.startswith("$"):
                    errors.append(f"{f}: ClickHouse password must come from the environment, not the file")
    provs = glob.glob(os.path.join(G, "provisioning", "dashboards", "*.yml"))
    for f in provs:
        d = yaml.safe_load(open(f, encoding="utf-8"))
        for p in d.get("providers", []):
            if p.get("type") != "file" or not p.get("options", {}).get("path"):
                errors.append(f"{f}: provider {p.get('name')} needs type file and options.path")
    if not provs:
        errors.append("no dashboard provider")
    seen = set()
    dashboards = sorted(glob.glob(os.path.join(G, "dashboards", "*.json")))
    for f in dashboards:
        d = json.load(open(f, encoding="utf-8"))
        name = os.path.basename(f)
        if d.get("uid") in seen or not d.get("uid"):
            errors.append(f"{name}: missing or duplicate uid")
        seen.add(d.get("uid"))
        ids = set()

        def walk(ps):
            for p in ps:
                yield p
                yield from walk(p.get("panels", []))
        for p in walk(d.get("panels", [])):
            if p.get("id") in ids:
                errors.append(f"{name}: duplicate panel id {p.get('id')}")
            ids.add(p.get("id"))
            gp = p.get("gridPos", {})
            if gp.get("x", 0) + gp.get("w", 0) > 24:
                errors.append(f"{name}: panel {p.get('title')!r} exceeds the grid")
            for x in [p] + p.get("targets", []):
                ds = x.get("datasource")
                if isinstance(ds, dict) and ds.get("uid") not in uids:
                    errors.append(f"{name}: panel {p.get('title')!r} uses unknown data source uid {ds.get('uid')}")
                elif isinstance(ds, dict) and ds.get("type") != uids.get(ds.get("uid")):
                    errors.append(f"{name}: panel {p.get('title')!r}: data source type mismatch")
            if p.get("type") != "row" and not p.get("targets"):
                errors.append(f"{name}: panel {p.get('title')!r} has no query")
    for e in errors:
        print(f"FAIL {e}", file=sys.stderr)
    print(f"provisioning: {len(uids)} data sources, {len(provs)} dashboard provider(s); "
          f"{len(dashboards)} dashboards structurally valid")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
