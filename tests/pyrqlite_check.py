"""pyrqlite (Python DB-API 2.0 client for rqlite) against raftlite.

Usage: python pyrqlite_check.py HOST PORT
Exits non-zero with a message on the first mismatch.
"""

import sys

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

    cur.execute("SELECT count(*) FROM gadgets")
    assert cur.fetchone()[0] == 4
    print("pyrqlite: ok")


if __name__ == "__main__":
    main()
