#!/usr/bin/env python3
"""Runs every ClickHouse query of deploy/grafana/dashboards/*.json, with the Grafana macros
expanded to concrete SQL exactly like grafana-clickhouse-datasource (v4, pkg/macros) does, on

  (a) the local ClickHouse server (18.16 here), as the read-only `analyst` user when it exists,
      in a scratch database built from sink/migrations/*.sql, and
  (b) chDB (a current ClickHouse, embedded), with the same schema,

both with a little sample data, so that the queries also return rows and the "persons over
time" query can be checked against person_status. Also writes every PromQL expression of the
dashboards (with Grafana's $__rate_interval etc. substituted) into a Prometheus rules file for
`promtool check rules` (path given with --promql-out).

Usage: check_queries.py [--clickhouse URL] [--no-server] [--no-chdb] [--promql-out FILE]
"""
import argparse
import base64
import glob
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CH_TYPE = "grafana-clickhouse-datasource"
PROM_TYPE = "prometheus"
DB = "lastseen_grafana_check"


# ------------------------------------------------------------------ dashboard walking
def panels(d):
    for p in d.get("panels", []):
        yield p
        yield from panels(p)


def ds_type(x, default=None):
    ds = x.get("datasource") if isinstance(x, dict) else None
    if isinstance(ds, dict):
        return ds.get("type") or default
    return default


def extract(paths):
    ch, prom = [], []
    for path in paths:
        d = json.load(open(path, encoding="utf-8"))
        name = os.path.basename(path)
        for p in panels(d):
            pt = ds_type(p)
            for t in p.get("targets", []) or []:
                tt = ds_type(t, pt)
                origin = f"{name}: {p.get('title')!r} {t.get('refId')}"
                if tt == CH_TYPE:
                    if not t.get("rawSql", "").strip():
                        raise SystemExit(f"{origin}: ClickHouse target without rawSql")
                    ch.append((origin, t["rawSql"]))
                elif tt == PROM_TYPE:
                    prom.append((origin, t["expr"]))
                else:
                    raise SystemExit(f"{origin}: unknown datasource type {tt!r}")
        for v in d.get("templating", {}).get("list", []):
            if ds_type(v) == CH_TYPE and v.get("query"):
                q = v["query"] if isinstance(v["query"], str) else v["query"].get("rawSql", "")
                ch.append((f"{name}: variable {v.get('name')}", q))
    return ch, prom


# ------------------------------------------------------------------ macro expansion
def _dt(ts):
    return f"toDateTime({int(ts)})"


def _date(ts):
    return "toDate('%s')" % time.strftime("%Y-%m-%d", time.gmtime(ts))


def expand(sql, frm, to, interval_s):
    """frm/to: epoch seconds (float); interval_s: Grafana's interval in seconds."""
    iv = max(int(interval_s), 1)
    fms, tms = int(frm * 1000), int(to * 1000)

    def args(s):
        return [a.strip() for a in s.split(",")]

    funcs = {
        "timeFilter": lambda a: f"{a[0]} >= {_dt(frm)} AND {a[0]} <= {_dt(to)}",
        "timeFilter_ms": lambda a: f"{a[0]} >= fromUnixTimestamp64Milli({fms}) AND {a[0]} <= fromUnixTimestamp64Milli({tms})",
        "dateFilter": lambda a: f"{a[0]} >= {_date(frm)} AND {a[0]} <= {_date(to)}",
        "dateTimeFilter": lambda a: f"({a[0]} >= {_date(frm)} AND {a[0]} <= {_date(to)}) AND ({a[1]} >= {_dt(frm)} AND {a[1]} <= {_dt(to)})",
        "timeInterval": lambda a: f"toStartOfInterval(toDateTime({a[0]}), INTERVAL {iv} second)",
        "timeInterval_ms": lambda a: f"toStartOfInterval(toDateTime64({a[0]}, 3), INTERVAL {iv * 1000} millisecond)",
    }
    funcs["dt"] = funcs["dateTimeFilter"]
    # Function-like macros first (arguments without nested parentheses, as in the plugin).
    out = re.sub(r"\$__(\w+)\(([^()]*)\)",
                 lambda m: funcs[m.group(1)](args(m.group(2))) if m.group(1) in funcs else m.group(0), sql)
    plain = {
        "fromTime_ms": f"fromUnixTimestamp64Milli({fms})", "toTime_ms": f"fromUnixTimestamp64Milli({tms})",
        "fromTime": _dt(frm), "toTime": _dt(to), "interval_s": str(iv),
        # Grafana global variables (interpolated by Grafana before the plugin sees the query).
        "interval_ms": str(iv * 1000), "from": str(fms), "to": str(tms),
    }
    out = re.sub(r"\$\{?__(\w+)\}?(?!\()", lambda m: plain.get(m.group(1), m.group(0)), out)
    left = re.findall(r"\$\{?\w+", out)
    if left:
        raise ValueError(f"unexpanded macro or variable {left}")
    return out


# ------------------------------------------------------------------ schema and sample data
def statements(sql):
    # exactly like sink/src/migrate.rs: drop `--` comments, split on `;`
    text = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


def schema():
    out = []
    for f in sorted(glob.glob(os.path.join(ROOT, "sink", "migrations", "*.sql"))):
        out += statements(open(f, encoding="utf-8").read())
    return out


def sample_rows(now):
    """Three persons over the last 4 days, plus 6 persons pinging from one cell so that the map
    query returns a row. All synthetic."""
    h = 3600
    t0 = now - 4 * 24 * h
    ev = []  # (event_id, person, kind, at)
    ev += [("e1", "p1", "registered", t0), ("e2", "p1", "silence_notice", t0 + 48 * h),
           ("e3", "p1", "deregistered", t0 + 72 * h + 60)]
    ev += [("e4", "p2", "registered", t0 + h), ("e5", "p2", "silence_notice", t0 + 49 * h),
           ("e6", "p2", "resumed", t0 + 50 * h), ("e6", "p2", "resumed", t0 + 50 * h)]  # duplicate
    ev += [("e7", "p3", "registered", t0 + 2 * h), ("e8", "p3", "silence_notice", now - 3 * h)]
    # p4: a notice and the resume in the same millisecond (told apart by seq, the last column).
    ev += [("e9", "p4", "registered", t0 + 3 * h), ("e10", "p4", "silence_notice", t0 + 51 * h),
           ("e11", "p4", "resumed", t0 + 51 * h)]
    seq = {}
    rows = []
    for i, (e, p, k, at) in enumerate(ev):
        n = seq.setdefault((p, e), len({x for (q, x) in seq if q == p}))
        rows.append(f"('{e}','{p}','{k}',toDateTime({at}),{at * 1000},toDateTime({at}),{at * 1000},"
                    f"172800000,259200000,0,NULL,0,{i},{n})")
    events = ",".join(rows)
    pings = []
    for i in range(6):
        for j in range(3):
            ts = now - 3600 * (j + 1) - i
            pings.append(f"('q{i}','d{i}',toDateTime({ts}),{ts * 1000},toDateTime({ts}),{ts * 1000},"
                         f"{55.7512 + i * 0.0001},{37.6184 + j * 0.0001},NULL,0,{i * 10 + j})")
    return [f"INSERT INTO person_events VALUES {events}", f"INSERT INTO pings VALUES {','.join(pings)}"]


# ------------------------------------------------------------------ backends
class Server:
    def __init__(self, url):
        self.url = url.rstrip("/")
        self.reader = ("default", "")

    def _q(self, sql, user, db=None):
        params = {"query": sql} if False else {}
        if db:
            params["database"] = db
        req = urllib.request.Request(f"{self.url}/?{urllib.parse.urlencode(params)}", data=sql.encode())
        req.add_header("X-ClickHouse-User", user[0])
        req.add_header("X-ClickHouse-Key", user[1])
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(e.read().decode().strip()[:600]) from None

    def setup(self, now):
        admin = ("default", "")
        self.version = self._q("SELECT version()", admin).strip()
        self._q(f"DROP DATABASE IF EXISTS {DB}", admin)
        self._q(f"CREATE DATABASE {DB}", admin)
        for st in schema() + sample_rows(now):
            self._q(st, admin, DB)
        try:  # the read-only analyst of deploy/local, like the Grafana data source
            self._q("SELECT 1", ("analyst", "analyst"), DB)
            self.reader = ("analyst", "analyst")
        except RuntimeError:
            pass
        return f"ClickHouse {self.version} at {self.url} as {self.reader[0]}"

    def run(self, sql):
        out = self._q(sql + "\nFORMAT JSONCompact", self.reader, DB)
        return json.loads(out)["data"]

    def close(self):
        self._q(f"DROP DATABASE IF EXISTS {DB}", ("default", ""))


class ChDB:
    def setup(self, now):
        import tempfile
        from chdb import session as chs
        self.tmp = tempfile.TemporaryDirectory()
        self.s = chs.Session(self.tmp.name)
        self.s.query(f"CREATE DATABASE IF NOT EXISTS {DB}")
        for st in schema() + sample_rows(now):
            self.s.query(f"USE {DB}")
            self.s.query(st)
        v = self.s.query("SELECT version()", "CSV").data().strip().strip('"')
        return f"chDB (ClickHouse {v})"

    def run(self, sql):
        self.s.query(f"USE {DB}")
        r = self.s.query(sql, "JSONCompact")
        return json.loads(r.data())["data"] if r.data().strip() else []

    def close(self):
        self.s.cleanup() if hasattr(self.s, "cleanup") else None
        self.tmp.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clickhouse", default=os.environ.get("LASTSEEN_CLICKHOUSE__URL", "http://127.0.0.1:8123"))
    ap.add_argument("--no-server", action="store_true")
    ap.add_argument("--no-chdb", action="store_true")
    ap.add_argument("--promql-out")
    a = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(ROOT, "deploy", "grafana", "dashboards", "*.json")))
    ch, prom = extract(paths)
    print(f"{len(paths)} dashboards: {len(ch)} ClickHouse queries, {len(prom)} PromQL expressions")
    if a.promql_out:
        subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
        rules = []
        for i, (origin, e) in enumerate(prom):
            for k, v in subst.items():
                e = e.replace(k, v)
            if "$" in e:
                raise SystemExit(f"{origin}: unknown variable in {e!r}")
            rules.append({"record": f"dashboard:expr_{i}", "expr": e})
        with open(a.promql_out, "w", encoding="utf-8") as f:
            json.dump({"groups": [{"name": "dashboard-promql", "rules": rules}]}, f, indent=1)
        with open(a.promql_out + ".txt", "w", encoding="utf-8") as f:
            f.write("\n".join(r["expr"].replace("\n", " ") for r in rules) + "\n")
    now = int(time.time())
    # Two dashboard settings: last 7 days at 5 min intervals, last hour at 2 s.
    ranges = [(now - 7 * 86400, now, 300), (now - 3600, now, 2)]
    backends = []
    if not a.no_server:
        backends.append(Server(a.clickhouse))
    if not a.no_chdb:
        backends.append(ChDB())
    failures = 0
    for b in backends:
        desc = b.setup(now)
        try:
            for origin, sql in ch:
                rows = None
                for frm, to, iv in ranges:
                    try:
                        r = b.run(expand(sql, frm, to, iv))
                        rows = len(r) if rows is None else rows
                    except Exception as e:  # noqa: BLE001 - report all
                        failures += 1
                        print(f"FAIL [{desc}] {origin} (range {to - frm}s, interval {iv}s):\n  {e}", file=sys.stderr)
                        break
                else:
                    print(f"ok   [{desc}] {origin}: {rows} rows (7d range)")
            failures += semantic_checks(b, desc, ch, now)
        finally:
            b.close()
    return 1 if failures else 0


def semantic_checks(b, desc, ch, now):
    """The persons-over-time curve must end at the counts of person_status; the map must never
    show a cell with fewer than 5 persons."""
    fails = 0
    for origin, sql in ch:
        if "over time" in origin:
            rows = b.run(expand(sql, now - 7 * 86400, now, 300))
            last = {}
            for t, status, n in rows:
                last[status] = int(n)
            want = {s: int(n) for s, n in b.run("SELECT status, count() FROM person_status FINAL "
                                                 "WHERE status IN ('registered','silent','deregistered') GROUP BY status")}
            if last != want:
                fails += 1
                print(f"FAIL [{desc}] {origin}: curve ends at {last}, person_status says {want}", file=sys.stderr)
            else:
                print(f"ok   [{desc}] {origin}: ends at person_status counts {want}")
        if "positions" in origin:
            rows = b.run(expand(sql, now - 7 * 86400, now, 300))
            if not rows or any(int(r[2]) < 5 for r in rows):
                fails += 1
                print(f"FAIL [{desc}] {origin}: expected only cells of >= 5 persons, got {rows}", file=sys.stderr)
    return fails


if __name__ == "__main__":
    sys.exit(main())
