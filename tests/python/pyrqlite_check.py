"""pyrqlite (Python DB-API 2.0 client for rqlite, 2.2.3) against raftlite, through a follower.

Usage: python pyrqlite_check.py HOST PORT

Every expectation is what pyrqlite gives against real rqlite, derived from the sources:
pyrqlite 2.2.3 (cursors.py: INSERT sets lastrowid from `last_insert_id`; UPDATE/DELETE set
rowcount to the sum of `rows_affected`, anything else to the number of rows; a result with
`error` raises `Error(json.dumps(result))`, a top-level `error` raises nothing; extensions.py:
the DATE, DATETIME, TIMESTAMP and BOOL converters apply by the column's type whatever
`detect_types` is), rqlite (db/db.go: a DATE/DATETIME/TIMESTAMP column's text value comes back
as go-sqlite3's time.Time, marshalled RFC 3339 in UTC, `2024-01-02T03:04:05.123456Z`;
rows_affected is sqlite3_changes(), which leaves out rows changed by triggers) and go-sqlite3
(sqlite3.go SQLiteTimestampFormats: the text formats a time column is parsed with).
"""

import datetime
import json
import sys
import time

import pyrqlite.dbapi2 as dbapi2
from pyrqlite.extensions import PARSE_DECLTYPES

from _checks import check, expect, raw, run

# Tables this script created, for the listing check.
created = []


def create(cur, name, columns):
    cur.execute(f"CREATE TABLE {name} ({columns})")
    created.append(name)


@check
def insert_select_and_lastrowid(conn, host, port):
    cur = conn.cursor()
    create(cur, "gadgets", "id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB")
    cur.execute("INSERT INTO gadgets(name, price, data) VALUES(?, ?, ?)", ("widget", 9.5, b"\x00\x01\xff"))
    expect(cur.lastrowid, 1, "lastrowid of the first insert")
    # pyrqlite reports the number of rows returned as the rowcount of an INSERT (none).
    expect(cur.rowcount, 0, "rowcount of an INSERT")
    cur.executemany(
        "INSERT INTO gadgets(name, price, data) VALUES(?, ?, ?)",
        [("sprocket", 1.25, b"s"), ("gizmo", 100.0, b"")],
    )
    expect(cur.rowcount, 2, "rowcount of executemany")
    cur.execute("INSERT INTO gadgets(name, price, data) VALUES(:name, :price, :data)",
                {"name": "named", "price": 2.0, "data": b"n"})
    expect(cur.lastrowid, 4, "lastrowid after executemany and a named insert")

    cur.execute("SELECT id, name, price, data FROM gadgets ORDER BY id")
    rows = cur.fetchall()
    expect([r[1] for r in rows], ["widget", "sprocket", "gizmo", "named"], "names")
    expect(rows[0][2], 9.5, "price")
    expect(bytes(rows[0][3]), b"\x00\x01\xff", "blob")
    expect([d[0] for d in cur.description], ["id", "name", "price", "data"], "description")

    cur.execute("SELECT name FROM gadgets WHERE price > ?", (5,))
    expect(sorted(r[0] for r in cur.fetchall()), ["gizmo", "widget"], "filtered names")
    cur.execute("SELECT name FROM gadgets WHERE id = 2")
    expect(cur.fetchone()[0], "sprocket", "fetchone")
    expect(cur.fetchone(), None, "fetchone past the end")


@check
def lastrowid_of_equal_rowids_in_two_tables(conn, host, port):
    # rqlite reports SQLite's last_insert_rowid() after every INSERT: the same rowid twice in a
    # row (two tables) is still that rowid, not "nothing inserted".
    cur = conn.cursor()
    create(cur, "left_side", "id INTEGER PRIMARY KEY, v TEXT")
    create(cur, "right_side", "id INTEGER PRIMARY KEY, v TEXT")
    cur.execute("INSERT INTO left_side(v) VALUES (?)", ("l",))
    expect(cur.lastrowid, 1, "lastrowid in the first table")
    cur.execute("INSERT INTO right_side(v) VALUES (?)", ("r",))
    expect(cur.lastrowid, 1, "lastrowid in the second table")


@check
def update_and_delete_rowcount(conn, host, port):
    cur = conn.cursor()
    create(cur, "stock", "id INTEGER PRIMARY KEY, qty INTEGER")
    cur.executemany("INSERT INTO stock(qty) VALUES(?)", [(1,), (2,), (3,)])
    cur.execute("UPDATE stock SET qty = qty + 10 WHERE qty >= 2")
    expect(cur.rowcount, 2, "UPDATE of two rows")
    cur.execute("UPDATE stock SET qty = 0 WHERE id = 99")
    expect(cur.rowcount, 0, "UPDATE of no row")
    cur.execute("DELETE FROM stock WHERE id = 1")
    expect(cur.rowcount, 1, "DELETE of one row")
    cur.execute("SELECT id, qty FROM stock ORDER BY id")
    expect([tuple(r) for r in cur.fetchall()], [(2, 12), (3, 13)], "rows left")


@check
def trigger_rows_are_not_counted(conn, host, port):
    # rqlite's rows_affected is sqlite3_changes(): the rows the statement itself changed.
    cur = conn.cursor()
    create(cur, "accounts", "id INTEGER PRIMARY KEY, balance INTEGER")
    create(cur, "account_audit", "account_id INTEGER, note TEXT")
    cur.execute(
        "CREATE TRIGGER accounts_audit AFTER UPDATE ON accounts BEGIN "
        "INSERT INTO account_audit VALUES (NEW.id, 'before'); "
        "INSERT INTO account_audit VALUES (NEW.id, 'after'); END"
    )
    cur.execute("INSERT INTO accounts(balance) VALUES (?)", (100,))
    expect(cur.lastrowid, 1, "lastrowid of the account")
    cur.execute("UPDATE accounts SET balance = 50 WHERE id = ?", (1,))
    expect(cur.rowcount, 1, "UPDATE of one row whose trigger inserts two")
    cur.execute("SELECT count(*) FROM account_audit")
    expect(cur.fetchone()[0], 2, "audit rows written by the trigger")
    # An INSERT whose trigger inserts elsewhere still reports its own rowid.
    cur.execute(
        "CREATE TRIGGER accounts_new AFTER INSERT ON accounts BEGIN "
        "INSERT INTO account_audit VALUES (NEW.id, 'opened'); END"
    )
    cur.execute("INSERT INTO accounts(balance) VALUES (?)", (7,))
    expect(cur.lastrowid, 2, "lastrowid of an INSERT with a trigger")


@check
def dates_come_back_through_pyrqlite_converters(conn, host, port):
    cur = conn.cursor()
    create(cur, "events", "id INTEGER PRIMARY KEY, d DATE, dt DATETIME, ts TIMESTAMP")
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, 123456)
    # pyrqlite adapts date to '2024-01-02' and datetime to '2024-01-02 03:04:05.123456'.
    cur.execute("INSERT INTO events(d, dt, ts) VALUES(?, ?, ?)", (when.date(), when, when))
    cur.execute("INSERT INTO events(d, dt, ts) VALUES(?, ?, ?)",
                (datetime.date(2024, 2, 29), datetime.datetime(2024, 2, 29, 23, 59, 59),
                 datetime.datetime(2024, 2, 29, 23, 59, 59)))
    # Text in other formats go-sqlite3 parses: 'T' separator, 'Z', no seconds, date only.
    cur.execute("INSERT INTO events(d, dt, ts) VALUES("
                "'2024-03-04 10:11:12', '2024-03-04', '2024-03-04T05:06:07Z')")
    cur.execute("INSERT INTO events(d, dt, ts) VALUES(NULL, '2024-05-06T07:08', '2024-05-06 07:08')")
    cur.execute("SELECT d, dt, ts FROM events ORDER BY id")
    rows = [tuple(r) for r in cur.fetchall()]
    # DATE -> datetime.date, DATETIME -> 'YYYY-MM-DD HH:MM:SS[.ffffff]' text (pyrqlite turns the
    # RFC 3339 value back into SQLite's format), TIMESTAMP -> datetime.datetime.
    expect(rows[0], (datetime.date(2024, 1, 2), "2024-01-02 03:04:05.123456", when), "row 1")
    expect(rows[1], (datetime.date(2024, 2, 29), "2024-02-29 23:59:59",
                     datetime.datetime(2024, 2, 29, 23, 59, 59)), "row 2")
    expect(rows[2], (datetime.date(2024, 3, 4), "2024-03-04 00:00:00",
                     datetime.datetime(2024, 3, 4, 5, 6, 7)), "row 3")
    expect(rows[3], (None, "2024-05-06 07:08:00", datetime.datetime(2024, 5, 6, 7, 8)), "row 4")
    # A WHERE on the stored text still works (the conversion is only on the way out).
    cur.execute("SELECT id FROM events WHERE d = ?", (datetime.date(2024, 2, 29),))
    expect([r[0] for r in cur.fetchall()], [2], "select by date")


@check
def detect_types_and_bool(conn, host, port):
    cur = conn.cursor()
    create(cur, "flags", "id INTEGER PRIMARY KEY, on_ BOOL, amount FLOAT, note TEXT")
    cur.execute("INSERT INTO flags(on_, amount, note) VALUES(?, ?, ?)", (True, 2, "x"))
    cur.execute("INSERT INTO flags(on_, amount, note) VALUES(?, ?, ?)", (False, 1.5, None))
    for detect in (0, PARSE_DECLTYPES):
        c = dbapi2.connect(host=host, port=port, detect_types=detect).cursor()
        c.execute("SELECT on_, amount, note FROM flags ORDER BY id")
        expect([tuple(r) for r in c.fetchall()], [(True, 2.0, "x"), (False, 1.5, None)],
               f"detect_types={detect}")
    cur.execute("SELECT on_ FROM flags WHERE id = 1")
    expect(type(cur.fetchone()[0]), bool, "BOOL column type")


@check
def errors_raise(conn, host, port):
    cur = conn.cursor()
    cases = [
        ("INSERT INTO nope VALUES (1)", "no such table: nope"),
        ("SELEC 1", 'near "SELEC": syntax error'),
        ("INSERT INTO gadgets(id, name) VALUES (1, 'again')", "UNIQUE constraint failed: gadgets.id"),
        ("SELECT nosuchcolumn FROM gadgets", "no such column: nosuchcolumn"),
    ]
    for sql, message in cases:
        try:
            cur.execute(sql)
        except dbapi2.Error as e:
            expect(json.loads(str(e)), {"error": message}, sql)
        else:
            raise AssertionError(f"{sql!r} did not fail")


@check
def executemany_is_one_transaction(conn, host, port):
    cur = conn.cursor()
    # pyrqlite sends ?transaction: one bad row and none of them is stored.
    cur.executemany(
        "INSERT INTO gadgets(id, name, price, data) VALUES(?, ?, ?, ?)",
        [(100, "tx-a", 1.0, b"a"), (1, "duplicate id", 1.0, b"b"), (101, "tx-c", 1.0, b"c")],
    )
    cur.execute("SELECT count(*) FROM gadgets WHERE name LIKE 'tx-%'")
    expect(cur.fetchone()[0], 0, "rows left by a failed transaction")


@check
def reads_at_every_level(conn, host, port):
    cur = conn.cursor()
    for level in ("weak", "strong", "linearizable"):
        cur.execute("SELECT count(*) FROM gadgets", consistency=level)
        expect(cur.fetchone()[0], 4, level)
    # `none` reads this follower's own copy, which may trail the leader by a heartbeat.
    deadline = time.monotonic() + 10
    while True:
        cur.execute("SELECT count(*) FROM gadgets", consistency="none")
        if cur.fetchone()[0] == 4:
            break
        assert time.monotonic() < deadline, "level=none never caught up"
        time.sleep(0.05)


@check
def disallowed_pragmas_are_refused(conn, host, port):
    cur = conn.cursor()
    # pyrqlite sends PRAGMA as a query and ignores a top-level error: no rows, no exception.
    cur.execute("PRAGMA journal_mode=DELETE")
    expect(cur.fetchall(), [], "rows of a refused pragma")
    expect(cur.description, None, "description of a refused pragma")
    # Pragmas that only read are answered.
    cur.execute("PRAGMA table_info(stock)")
    expect([r[1] for r in cur.fetchall()], ["id", "qty"], "table_info")
    # rqlite store/state.go PragmaCheckRequest.Check, answered by http/service.go: 200 and
    # exactly this body, from the follower too.
    for method, path, body in [
        ("POST", "/db/execute", '["PRAGMA synchronous=OFF"]'),
        ("POST", "/db/execute?transaction", '["SELECT 1", "pragma main.wal_checkpoint(TRUNCATE)"]'),
        ("POST", "/db/request", '["PRAGMA query_only = 1"]'),
        ("GET", "/db/query?q=PRAGMA%20wal_autocheckpoint%3D0", None),
    ]:
        status, data = raw(host, port, method, path, body)
        expect((status, data), (200, b'{"results":[],"error":"disallowed pragma"}'), path)


@check
def load_sql_text_is_one_statement(conn, host, port):
    # rqlite http/service.go handleLoad: the text is ONE statement string, so ONE result with
    # SQLite's last_insert_rowid() and sqlite3_changes() after its last statement.
    text = (
        "PRAGMA foreign_keys=OFF;\n"
        "BEGIN TRANSACTION;\n"
        "CREATE TABLE loaded (id INTEGER PRIMARY KEY, name TEXT);\n"
        "INSERT INTO loaded VALUES(1,'a');\n"
        "INSERT INTO loaded VALUES(2,'b');\n"
        "COMMIT;\n"
    )
    status, data = raw(host, port, "POST", "/db/load", text, "text/plain")
    created.append("loaded")
    expect((status, data), (200, b'{"results":[{"last_insert_id":2,"rows_affected":1}]}'), "load")
    status, data = raw(host, port, "POST", "/db/load", "PRAGMA journal_mode=OFF;\n", "text/plain")
    expect((status, data), (200, b'{"results":[],"error":"disallowed pragma"}'), "load of a pragma")
    cur = conn.cursor()
    cur.execute("SELECT id, name FROM loaded ORDER BY id", consistency="strong")
    expect([tuple(r) for r in cur.fetchall()], [(1, "a"), (2, "b")], "loaded rows")


@check
def table_listing_shows_only_user_tables(conn, host, port):
    cur = conn.cursor()
    cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    expect([r[0] for r in cur.fetchall()], sorted(created), "sqlite_master tables")
    cur.execute("SELECT count(*) FROM sqlite_schema WHERE name LIKE '%raftlite%'")
    expect(cur.fetchone()[0], 0, "raftlite's own tables in sqlite_schema")


@check
def bare_pragmas_are_answered(conn, host, port):
    # pyrqlite sends every PRAGMA to /db/query; rqlite answers a bare one from its read-only
    # connection (the database is in WAL mode there too).
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode")
    expect([tuple(r) for r in cur.fetchall()], [("wal",)], "PRAGMA journal_mode")
    cur.execute("PRAGMA foreign_keys")
    expect(len(cur.fetchall()), 1, "PRAGMA foreign_keys rows")

def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    conn = dbapi2.connect(host=host, port=port)
    run("pyrqlite", conn, host, port)


if __name__ == "__main__":
    main()
