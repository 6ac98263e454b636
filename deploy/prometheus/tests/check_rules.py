#!/usr/bin/env python3
"""Structural checks of deploy/prometheus that promtool does not do.

* every alert has labels severity (critical|warning) and service, and annotations summary,
  description and runbook; every runbook is `docs/OPERATIONS.md#<anchor>` and the anchor exists
  in docs/OPERATIONS.md (as `<a id="...">` or as a heading slug);
* every alert name has at least one `promtool test rules` case where it fires and one where it
  is expected NOT to fire (exp_alerts: []) in deploy/prometheus/tests/*.test.yml;
* every lastseen_* metric used by a rule (or by a dashboard, see --also) is defined in the Rust
  sources of a service (so a renamed metric breaks this check, not the pager).
"""
import glob
import os
import re
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROM = os.path.join(ROOT, "deploy", "prometheus")


def anchors(md: str):
    out = set(re.findall(r'<a\s+(?:id|name)="([^"]+)"', md))
    for h in re.findall(r"^#+\s+(.*)$", md, re.M):
        slug = re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def defined_metrics():
    names = set()
    for f in glob.glob(os.path.join(ROOT, "*", "src", "**", "*.rs"), recursive=True):
        names |= set(re.findall(r'"(lastseen_[a-z0-9_]+)"', open(f, encoding="utf-8").read()))
    return names


def used_metrics(expr: str):
    out = set()
    for m in re.findall(r"\b(lastseen_[a-z0-9_]+)", expr):
        out.add(re.sub(r"_(bucket|sum|count)$", "", m))
    return out


def main() -> int:
    errors = []
    rules_files = sorted(glob.glob(os.path.join(PROM, "rules", "*.yml")))
    ops_md_path = os.path.join(ROOT, "docs", "OPERATIONS.md")
    ops_anchors = anchors(open(ops_md_path, encoding="utf-8").read()) if os.path.exists(ops_md_path) else set()
    if not ops_anchors:
        errors.append("docs/OPERATIONS.md missing or without anchors")
    defined = defined_metrics()
    alerts, records, exprs = {}, set(), []
    for rf in rules_files:
        doc = yaml.safe_load(open(rf, encoding="utf-8"))
        for g in doc["groups"]:
            for r in g["rules"]:
                exprs.append((f"{os.path.basename(rf)}:{r.get('alert') or r.get('record')}", r["expr"]))
                if "record" in r:
                    records.add(r["record"])
                    continue
                name = r["alert"]
                alerts.setdefault(name, 0)
                alerts[name] += 1
                lab, ann = r.get("labels", {}), r.get("annotations", {})
                if lab.get("severity") not in ("critical", "warning"):
                    errors.append(f"{name}: severity label must be critical or warning")
                if not lab.get("service"):
                    errors.append(f"{name}: no service label")
                for k in ("summary", "description", "runbook"):
                    if not ann.get(k):
                        errors.append(f"{name}: annotation {k} missing")
                rb = ann.get("runbook", "")
                m = re.fullmatch(r"docs/OPERATIONS\.md#([\w\-]+)", rb)
                if not m:
                    errors.append(f"{name}: runbook {rb!r} is not docs/OPERATIONS.md#anchor")
                elif m.group(1) not in ops_anchors:
                    errors.append(f"{name}: runbook anchor #{m.group(1)} not found in docs/OPERATIONS.md")
    extra = [a for a in sys.argv[1:] if not a.startswith("--")]  # one PromQL expression per line
    if "--metrics-only" in sys.argv:  # only the metric names of the given files
        exprs, alerts, records, errors = [], {}, set(), []
    for f in extra:
        for i, line in enumerate(open(f, encoding="utf-8")):
            if line.strip():
                exprs.append((f"{os.path.basename(f)}:{i + 1}", line))
    for origin, e in exprs:
        for m in used_metrics(e):
            if m not in defined:
                errors.append(f"{origin}: metric {m} is not defined by any service (renamed?)")
    if "--metrics-only" in sys.argv:
        for e in errors:
            print(f"FAIL {e}", file=sys.stderr)
        print(f"{len(exprs)} expressions: every lastseen_* metric is defined by a service")
        return 1 if errors else 0
    fires, silent = set(), set()
    tests = sorted(glob.glob(os.path.join(PROM, "tests", "*.test.yml")))
    for tf in tests:
        doc = yaml.safe_load(open(tf, encoding="utf-8"))
        for t in doc.get("tests", []):
            for a in t.get("alert_rule_test", []) or []:
                (fires if a.get("exp_alerts") else silent).add(a["alertname"])
    for name in sorted(alerts):
        if name not in fires:
            errors.append(f"{name}: no unit test where it fires")
        if name not in silent:
            errors.append(f"{name}: no unit test where it does not fire")
    for e in errors:
        print(f"FAIL {e}", file=sys.stderr)
    print(f"{len(alerts)} alerts ({sum(alerts.values())} rules), {len(records)} recording rules, "
          f"{len(exprs)} expressions: metrics defined, annotations and runbook anchors present, "
          f"each alert tested firing and not firing in {len(tests)} test files")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
