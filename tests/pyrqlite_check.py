"""pyrqlite (Python DB-API 2.0 client for rqlite) against raftlite.

Usage: python pyrqlite_check.py HOST PORT
Exits non-zero with a message on the first mismatch.
"""

import sys
import time

import pyrqlite.dbapi2 as dbapi2


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    conn = dbapi2.connect(host=host, port=port)
    cur = conn.cursor()

    cur.execute("CREATE TABLE gadgets (id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB)")
    cur.execute("INSERT INTO gadgets(name, price, data) VALUES(?, ?, ?)", ("widget", 9.5, b"\x00\x01\xff"))
    assert cur.lastrowid == 1, cur.lastrowid
    cur.executemany(
        "INSERT INTO gadgets(name, price, data) VALUES(?, ?, ?)",
        [("sprocket", 1.25, b"s"), ("gizmo", 100.0, b"")],
    )
    cur.execute("INSERT INTO gadgets(name, price, data) VALUES(:name, :price, :data)",
                {"name": "named", "price": 2.0, "data": b"n"})

    cur.execute("SELECT id, name, price, data FROM gadgets ORDER BY id")
    rows = cur.fetchall()
    names = [r[1] for r in rows]
    assert names == ["widget", "sprocket", "gizmo", "named"], rows
    assert rows[0][2] == 9.5, rows[0]
    assert bytes(rows[0][3]) == b"\x00\x01\xff", rows[0]

    cur.execute("SELECT name FROM gadgets WHERE price > ?", (5,))
    assert sorted(r[0] for r in cur.fetchall()) == ["gizmo", "widget"]

    # A failing statement is an error the client sees.
    try:
        cur.execute("INSERT INTO nope VALUES (1)")
    except Exception as e:  # pyrqlite raises its own error types
        assert "nope" in str(e), e
    else:
        raise AssertionError("an insert into a missing table did not fail")

    # executemany runs as one rqlite transaction: one bad row and none of them is stored.
    cur.executemany(
        "INSERT INTO gadgets(id, name, price, data) VALUES(?, ?, ?, ?)",
        [(100, "tx-a", 1.0, b"a"), (1, "duplicate id", 1.0, b"b"), (101, "tx-c", 1.0, b"c")],
    )
    cur.execute("SELECT count(*) FROM gadgets WHERE name LIKE 'tx-%'")
    assert cur.fetchone()[0] == 0, "a failed transaction left rows behind"

    # Reads through this (follower) node at every consistency level. `none` reads the follower's
    # own copy, which may trail the leader by a heartbeat: poll it.
    for level in ("weak", "strong", "linearizable"):
        cur.execute("SELECT count(*) FROM gadgets", consistency=level)
        assert cur.fetchone()[0] == 4, level
    deadline = time.monotonic() + 10
    while True:
        cur.execute("SELECT count(*) FROM gadgets", consistency="none")
        if cur.fetchone()[0] == 4:
            break
        assert time.monotonic() < deadline, "level=none never caught up"
        time.sleep(0.05)
    print("pyrqlite: ok")


if __name__ == "__main__":
    main()
