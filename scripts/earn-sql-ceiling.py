#!/usr/bin/env python3
"""What Postgres alone can do of loyalty's earn SQL, one earn per statement or several.

An experiment, not a benchmark row: it answers "would applying several earns in one
statement pay?" before anyone builds it. On a database migrated by `custops migrate` with
10,000 members it runs, with pgbench at 16 clients (prepared statements, plaintext TCP), the
earn's two statements in one transaction -- the locking read of
`store::members` (`FOR UPDATE OF b`, the due probes, the qualifying-window sums) and one
write like the recording statement (balances, entry, lot, idempotency key, outbox row) --
for G members picked at random:

- `earn1`: G = 1, an earn as the service sends it (BEGIN, lock, write, COMMIT);
- `earn1x4`: four such earns one after another in one transaction (a group commit);
- `earnG`: G members in each statement, set-based (the lock `ORDER BY member_id`).

alternated with `pgbench -b tpcb-like` at scale 16 on the same server, and prints earns/s
and the ratio to tpcb-like of each. The statements are copies made on 2026-12-06 from
Postgres' statement log (ARCHITECTURE.md, "An earn in four round trips"); the write's
values are made in SQL (ids, points), the stored response and event are constant bytes of
the real ones' size. The service, its load generator and the sequencer are not running, so
this is Postgres' side only.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        python3 scripts/earn-sql-ceiling.py [--seconds 8] [--rounds 2] [--groups 4,8]

It needs `target/release/custops` (or CUSTOPS_BIN), `psql` and `pgbench`, and drops the two
databases it makes.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import uuid
from urllib.parse import urlsplit, urlunsplit

MEMBERS = 10_000

RULES = (
    '{"tiers": [{"code": "member", "benefits": [], "threshold": null, "description": "", '
    '"display_name": "Member"}], "earning": {"rounding": "Down", "stacking": "Multiply", '
    '"campaigns": [], "rate_points": 1, "tier_multipliers": [], "bonus_points_qualify": false, '
    '"category_multipliers": [], "rate_per_amount_minor": 100, '
    '"birthday_multiplier_percent": 0}, "clawback": "WithinBalance", "tier_policy": '
    '{"downgrade_mode": "ToQualifiedTier", "review_schedule": "Anniversary", '
    '"grace_period_days": 30, "review_period_months": 12, "qualifying_window_days": 365}, '
    '"expire_after_days": 0, "return_window_days": 0}'
)

# The locking read of `store::members` (the member, its balances locked, the program, the
# due probes and the qualifying-window sums); `{members}` picks the members, `now()` is the
# service clock's now.
LOCK = """SELECT m.member_id, m.program_id, m.customer_id, m.status, m.status_reason,
 m.merged_into_member_id, m.anonymized, m.enrol_channel, m.enrol_time, m.tier_code,
 m.tier_achieve_time, m.next_review_time, m.pending_tier_code, m.pending_decide_time,
 m.pending_downgrade_time, b.available_points, b.pending_points, b.qualifying_points,
 b.qualifying_spend_minor, b.lifetime_earned_points, b.lifetime_redeemed_points,
 b.lifetime_expired_points, b.update_time, p.program_id AS p_program_id, p.display_name,
 p.description, p.state, p.currency, p.time_zone, p.rules::text, p.etag, p.create_time,
 p.update_time AS p_update_time, b.xmin::text AS locked_version, seen.xmin::text AS seen_version,
 EXISTS (SELECT 1 FROM point_lots l WHERE l.member_id = m.member_id AND l.pending
         AND l.release_time <= now()) AS release_due,
 EXISTS (SELECT 1 FROM point_lots l WHERE l.member_id = m.member_id
         AND l.remaining_points > 0 AND l.expire_time <= now()) AS expire_due,
 w.window_points, w.window_spend
FROM members m JOIN balances b USING (member_id) JOIN programs p ON p.program_id = m.program_id
JOIN balances seen ON seen.member_id = m.member_id
CROSS JOIN LATERAL (
  SELECT coalesce(sum(qualifying_delta), 0)::bigint AS window_points,
         coalesce(sum(spend_delta_minor), 0)::bigint AS window_spend
  FROM ledger_entries
  WHERE member_id = m.member_id
    AND create_time > now() - make_interval(hours => 24 * coalesce(nullif(
        (p.rules #>> '{{tier_policy,qualifying_window_days}}')::int, 0), 365))
    AND create_time <= now() AND (qualifying_delta <> 0 OR spend_delta_minor <> 0)) w
WHERE m.member_id IN (SELECT member_id FROM public.picks WHERE {members})
ORDER BY m.member_id FOR UPDATE OF b"""

# One write for the picked members: the balances row, the entry, its lot, the idempotency
# key with a stored response of the real one's size, the outbox row.
WRITE = """WITH g AS (
  SELECT member_id, gen_random_uuid() AS eid, (1 + floor(random() * 100))::bigint AS pts
  FROM public.picks WHERE {members}),
balance AS (
  UPDATE balances b SET available_points = b.available_points + g.pts,
    lifetime_earned_points = b.lifetime_earned_points + g.pts, update_time = now()
  FROM g WHERE b.member_id = g.member_id),
entry AS (
  INSERT INTO ledger_entries (ledger_entry_id, member_id, program_id, kind, points,
    available_delta, pending_delta, qualifying_delta, spend_delta_minor, reason, reason_code,
    caller, request_id, operator_id, external_reference, order_id, create_time,
    after_available, after_pending, after_qualifying, after_spend_minor,
    after_lifetime_earned, after_lifetime_redeemed, after_lifetime_expired)
  SELECT g.eid, g.member_id, '{program}', 1, g.pts, g.pts, 0, 0, 0, 'Benchmark', '',
    'anonymous', g.eid::text, '', '', NULL, now(), g.pts, 0, 0, 0, g.pts, 0, 0
  FROM g RETURNING ledger_entry_id, member_id, points),
lot AS (
  INSERT INTO point_lots (point_lot_id, member_id, ledger_entry_id, original_points,
    remaining_points, earn_time, expire_time, release_time, pending)
  SELECT gen_random_uuid(), e.member_id, e.ledger_entry_id, e.points, e.points, now(),
    NULL, NULL, false FROM entry e),
also AS (
  INSERT INTO idempotency_keys (caller, request_id, method, fingerprint, response, create_time)
  SELECT 'anonymous', g.eid::text, 'EarnPoints', sha256(g.eid::text::bytea),
    decode(repeat('0a81020a24303161', 62), 'hex'), now() FROM g
  ON CONFLICT (caller, request_id) DO NOTHING RETURNING 1),
appended AS (
  INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, traceparent)
  SELECT gen_random_uuid(), 'member', g.member_id::text, 'custops.loyalty.v1.PointsEarned',
    decode(repeat('0ac2010a24303161', 38), 'hex'),
    '00-d1f8134c68416fca47281a1eedec96f4-1674c7f7fe6be776-00' FROM g)
SELECT count(*) FROM also"""


def one_line(sql):
    return " ".join(sql.split())


def psql(url, *commands):
    args = ["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt"]
    for command in commands:
        args += ["-c", command]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def with_database(url, name):
    """`url` with its database replaced by `name`."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def script(program, picks, repeat=1):
    """A pgbench script: `picks` members in each statement, `repeat` earns in one transaction."""
    lines = []
    for r in range(repeat):
        names = [f"n{r}_{i}" for i in range(picks)]
        lines += [f"\\set {n} random(1, {MEMBERS})" for n in names]
    lines.append("BEGIN;")
    for r in range(repeat):
        members = "n IN (" + ", ".join(f":n{r}_{i}" for i in range(picks)) + ")"
        lines.append(one_line(LOCK.format(members=members)) + ";")
        lines.append(one_line(WRITE.format(members=members, program=program)) + ";")
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


def tps(output):
    match = re.search(r"^tps = ([0-9.]+)", output, re.M)
    if not match:
        sys.exit(f"no tps in pgbench's output:\n{output}")
    return float(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--groups", default="4,8", help="members per statement, besides 1")
    args = parser.parse_args()
    admin = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    binary = os.environ.get("CUSTOPS_BIN", "target/release/custops")
    suffix = uuid.uuid4().hex[:8]
    earn_db, tpcb_db = f"custops_ceiling_{suffix}", f"custops_ceiling_tpcb_{suffix}"
    earn_url, tpcb_url = with_database(admin, earn_db), with_database(admin, tpcb_db)
    env = dict(os.environ, PGSSLMODE="disable")
    psql(admin, f'CREATE DATABASE "{earn_db}"', f'CREATE DATABASE "{tpcb_db}"')
    try:
        subprocess.run(
            [binary, "migrate"], check=True, capture_output=True,
            env=dict(env, DATABASE_URL=earn_url),
        )
        program = str(uuid.uuid4())
        psql(
            earn_url,
            f"SET search_path = loyalty; "
            f"INSERT INTO programs (program_id, display_name, state, currency, time_zone, rules, "
            f"create_time, update_time) VALUES ('{program}', 'Ceiling', 1, 'CNY', 'UTC', "
            f"'{RULES}', now(), now()); "
            f"CREATE TABLE public.picks AS SELECT n, gen_random_uuid() AS member_id "
            f"FROM generate_series(1, {MEMBERS}) AS n; "
            f"ALTER TABLE public.picks ADD PRIMARY KEY (n); "
            f"INSERT INTO members (member_id, program_id, customer_id, status, enrol_channel, "
            f"enrol_time, tier_code, tier_achieve_time) SELECT member_id, '{program}', "
            f"gen_random_uuid(), 1, 'app', now(), 'member', now() FROM public.picks; "
            f"INSERT INTO balances (member_id, update_time) SELECT member_id, now() "
            f"FROM public.picks; "
            f"ALTER DATABASE \"{earn_db}\" SET search_path = loyalty; ANALYZE",
        )
        subprocess.run(
            ["pgbench", "-i", "-q", "-I", "dtGvp", "-s", "16", tpcb_url],
            check=True, capture_output=True, env=env,
        )
        groups = [int(g) for g in args.groups.split(",") if g]
        scripts = {"earn1": (script(program, 1), 1), "earn1x4": (script(program, 1, 4), 4)}
        scripts.update({f"earn{g}": (script(program, g), g) for g in groups})
        common = ["-n", "-c", str(args.clients), "-j", "2", "-T", str(args.seconds)]
        results = {name: [] for name in ["tpcb-like", *scripts]}
        with tempfile.TemporaryDirectory() as tmp:
            for name, (text, _) in scripts.items():
                with open(os.path.join(tmp, f"{name}.sql"), "w") as f:
                    f.write(text)
            for round_ in range(args.rounds):
                run = subprocess.run(["pgbench", "-b", "tpcb-like", *common, tpcb_url],
                                     capture_output=True, text=True, env=env)
                results["tpcb-like"].append(tps(run.stdout))
                for name, (_, earns_per_tx) in scripts.items():
                    run = subprocess.run(
                        ["pgbench", "-M", "prepared", "-f", os.path.join(tmp, f"{name}.sql"),
                         *common, earn_url],
                        capture_output=True, text=True, env=env,
                    )
                    results[name].append(tps(run.stdout) * earns_per_tx)
                print(f"round {round_ + 1}: " + ", ".join(
                    f"{name} {rates[-1]:.0f}" for name, rates in results.items()), flush=True)
        base = sum(results["tpcb-like"]) / len(results["tpcb-like"])
        for name, rates in results.items():
            mean = sum(rates) / len(rates)
            print(f"{name:10} {mean:8.0f} /s  {mean / base:5.2f}x tpcb-like  "
                  f"(runs: {', '.join(f'{r:.0f}' for r in rates)})")
    finally:
        psql(admin, f'DROP DATABASE IF EXISTS "{earn_db}" WITH (FORCE)',
             f'DROP DATABASE IF EXISTS "{tpcb_db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
