#!/usr/bin/env python3
"""Runs every DDL statement of the sink's migrations (and every dashboard query under
docs/queries/*.sql and sink/queries/*.sql, when present) on a current ClickHouse, embedded via
chDB, and fails on the first error.

The production test server is ClickHouse 18.16; this check keeps the same SQL valid on current
releases. Statements are split exactly like sink/src/migrate.rs does: `--` comments dropped,
split on `;`. Optional migrations (sink/migrations/optional/) are run too, with
{retention_days} = 30; their `-- requires:` gate is ignored because chDB is always newer.
"""
import glob
import os
import sys
import tempfile

import chdb
from chdb import session as chs

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def statements(sql: str):
    text = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


def added_column(st: str):
    """`ALTER TABLE t ADD COLUMN c ...` -> (t, c), as sink/src/migrate.rs::added_column: the
    runner skips such a statement when the column exists (18.16 has no IF NOT EXISTS there)."""
    w = st.split()
    if len(w) >= 6 and [x.upper() for x in w[:2]] == ["ALTER", "TABLE"] \
            and [x.upper() for x in w[3:5]] == ["ADD", "COLUMN"] and w[5].upper() != "IF":
        return w[2], w[5]
    return None


STATUS_QUERY = ("SELECT person_id, status, kind, since_ms, last_contact_at_ms, address "
                "FROM lastseen.person_status FINAL ORDER BY person_id FORMAT JSONEachRow")


def apply(sess, files):
    for f in files:
        for st in statements(open(f, encoding="utf-8").read()):
            sess.query("USE lastseen")
            col = added_column(st)
            if col and sess.query(
                    f"SELECT count() FROM system.columns WHERE database = 'lastseen' "
                    f"AND table = '{col[0]}' AND name = '{col[1]}'", "CSV").data().strip() != "0":
                continue
            sess.query(st)


def person_status_cases(path: str, upgrade: bool) -> int:
    """Each line of `path`: {"events": [person_events rows], "expected": [person_status rows]}
    from tests/tests/person_status.rs. Inserts the events (for --upgrade: into a database at
    migration 0003, without their seq, then migrates) and compares person_status FINAL."""
    import json
    migrations = sorted(glob.glob(os.path.join(ROOT, "sink", "migrations", "*.sql")))
    failures = 0
    cases = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        sess = chs.Session(tmp)
        sess.query("CREATE DATABASE IF NOT EXISTS lastseen")
        apply(sess, migrations[:3] if upgrade else migrations)
        for i, case in enumerate(cases):
            rows = case["events"]
            if upgrade:
                rows = [{k: v for k, v in r.items() if k != "seq"} for r in rows]
            body = "\n".join(json.dumps(r) for r in rows)
            sess.query(f"INSERT INTO lastseen.person_events FORMAT JSONEachRow {body}")
            if upgrade:
                before = sess.query("SELECT count() FROM lastseen.person_events", "CSV").data().strip()
                apply(sess, migrations)
                apply(sess, migrations)
                after = sess.query("SELECT count() FROM lastseen.person_events", "CSV").data().strip()
                if before != after or int(after) != len(rows):
                    failures += 1
                    print(f"FAIL upgrade lost rows: {len(rows)} inserted, {before} before, {after} after",
                          file=sys.stderr)
            got = [json.loads(line) for line in sess.query(STATUS_QUERY).data().splitlines() if line.strip()]
            for g in got:
                for k in ("since_ms", "last_contact_at_ms"):
                    g[k] = int(g[k])
            want = sorted(case["expected"], key=lambda r: r["person_id"])
            ids = {r["person_id"] for r in want}
            got = [g for g in got if g["person_id"] in ids]
            if got != want:
                failures += 1
                print(f"FAIL case {i}:\n  want {want}\n  got  {got}", file=sys.stderr)
            # Next case: an empty table (person ids differ anyway).
            if not upgrade:
                sess.query("TRUNCATE TABLE lastseen.person_events")
                sess.query("TRUNCATE TABLE lastseen.person_status")
        sess.cleanup()
    print(f"chDB person_status: {len(cases)} cases, {failures} failed")
    return 1 if failures else 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] in ("--person-status", "--upgrade"):
        return person_status_cases(sys.argv[2], sys.argv[1] == "--upgrade")
    migrations = sorted(glob.glob(os.path.join(ROOT, "sink", "migrations", "*.sql")))
    optional = sorted(glob.glob(os.path.join(ROOT, "sink", "migrations", "optional", "*.sql")))
    queries = sorted(
        glob.glob(os.path.join(ROOT, "docs", "queries", "*.sql"))
        + glob.glob(os.path.join(ROOT, "sink", "queries", "*.sql"))
    )
    if not migrations:
        print("no migrations found", file=sys.stderr)
        return 1
    failures = 0
    ran = 0
    with tempfile.TemporaryDirectory() as tmp:
        sess = chs.Session(tmp)
        print(f"chDB {chdb.__version__}, ClickHouse {sess.query('SELECT version()', 'CSV').data().strip()}")
        sess.query("CREATE DATABASE IF NOT EXISTS lastseen")
        # The sink creates this table itself before the migrations (see migrate.rs).
        plan = [("schema_migrations", "CREATE TABLE IF NOT EXISTS lastseen.schema_migrations "
                 "(version UInt32, name String, checksum String, applied_at DateTime) "
                 "ENGINE = ReplacingMergeTree() ORDER BY version")]
        # Twice: migrations must be idempotent.
        for rnd in (1, 2):
            for f in migrations:
                for st in statements(open(f, encoding="utf-8").read()):
                    plan.append((f"{os.path.relpath(f, ROOT)} (run {rnd})", st))
        for f in optional:
            for st in statements(open(f, encoding="utf-8").read()):
                plan.append((os.path.relpath(f, ROOT), st.replace("{retention_days}", "30")))
        for f in queries:
            for st in statements(open(f, encoding="utf-8").read()):
                plan.append((os.path.relpath(f, ROOT), st))
        for origin, st in plan:
            try:
                # USE is per query in chDB sessions: qualify by running in the database.
                sess.query("USE lastseen")
                col = added_column(st)
                if col and sess.query(
                        f"SELECT count() FROM system.columns WHERE database = 'lastseen' "
                        f"AND table = '{col[0]}' AND name = '{col[1]}'", "CSV").data().strip() != "0":
                    ran += 1
                    continue
                sess.query(st)
                ran += 1
            except Exception as e:  # noqa: BLE001 - report every failure
                failures += 1
                first = st.splitlines()[0][:100]
                print(f"FAIL {origin}: {first}\n  {e}", file=sys.stderr)
        # A smoke insert through the MVs, as the sink writes them.
        try:
            sess.query("USE lastseen")
            # Two events in one millisecond: the later seq wins (resumed after the notice).
            sess.query("INSERT INTO person_events VALUES ('e1','p1','silence_notice',now(),1,now(),1,1,1,0,NULL,0,0,0)")
            sess.query("INSERT INTO person_events VALUES ('e0','p1','resumed',now(),1,now(),1,1,1,0,NULL,0,1,1)")
            sess.query("INSERT INTO person_events VALUES ('e2','p2','silence_notice',now(),1,now(),1,1,1,0,NULL,0,2,0)")
            sess.query("INSERT INTO pings VALUES ('p1','d1',now(),1,now(),1,55.7,37.6,NULL,0,0)")
            st = sess.query("SELECT groupArray(status) FROM (SELECT status FROM lastseen.person_status FINAL ORDER BY person_id)", "CSV").data().strip()
            n = sess.query("SELECT uniqExactMerge(pings) FROM lastseen.pings_per_minute", "CSV").data().strip()
            assert st == '"[\'registered\',\'silent\']"', st
            assert n == "1", n
            ran += 1
        except Exception as e:  # noqa: BLE001
            failures += 1
            print(f"FAIL smoke insert: {e}", file=sys.stderr)
        sess.cleanup()
    print(f"{ran} statements ok, {failures} failed "
          f"({len(migrations)} migrations, {len(optional)} optional, {len(queries)} query files)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
