# Seeds N synthetic active enrollments and a month of device events into a Steward SQLite database,
# for measuring console page latency at fleet scale. Rows are shaped like the store writes them.
import sqlite3, sys, uuid, random, time
db, n, events_per_day = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
con = sqlite3.connect(db)
now = int(time.time() * 1_000_000)
day = 86_400_000_000
oses = ["10.0.26100.2605", "10.0.22631.4460", "10.0.19045.5131", "10.0.26100.1742"]
rows = []
for i in range(n):
    eid = str(uuid.uuid4())
    enrolled = now - random.randint(0, 60) * day
    seen = None if i % 50 == 0 else now - random.randint(0, 3 * day)
    rows.append((eid, f"DEV{i:08d}", f"PC-{i:06d}", random.choice(oses), f"user{i}@example.com",
                 f"SER{i}", f"TH{i}", now + 365 * day, enrolled, enrolled, seen))
con.executemany("""INSERT INTO enrollments (id, device_id, device_name, os_version, os_edition, enrollment_type,
  user_email, auth_method, cert_serial, cert_thumbprint, cert_not_after, state, enrolled_at, updated_at, last_seen_at)
  VALUES (?, ?, ?, ?, '72', 'Full', ?, 'enrollment_token', ?, ?, ?, 'active', ?, ?, ?)""", rows)
ev = []
kinds = ["command_acknowledged"] * 8 + ["command_failed", "enrolled"]
for d in range(30):
    for _ in range(events_per_day):
        r = rows[random.randrange(n)]
        k = random.choice(kinds)
        data = '{"replaced": false}' if k == "enrolled" else '{"status_code": 200}'
        ev.append((k, r[0], r[1], data, now - d * day - random.randint(0, day - 1)))
con.executemany("INSERT INTO device_events (kind, enrollment_id, device_id, data, at) VALUES (?, ?, ?, ?, ?)", ev)
con.commit()
print(f"seeded {n} enrollments, {len(ev)} events")
