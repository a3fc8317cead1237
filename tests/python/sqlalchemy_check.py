"""SQLAlchemy 2.0 through the sqlalchemy-rqlite dialect (2.0, on pyrqlite) against raftlite,
through a follower.

Usage: python sqlalchemy_check.py HOST PORT

The dialect's entry point is `rqlite.pyrqlite` (URL `rqlite+pyrqlite://HOST:PORT/`); it is
SQLAlchemy's SQLite dialect on pyrqlite. Expectations are what this stack gives against real
rqlite (see pyrqlite_check.py for the sources), in particular:

* the ORM checks the rowcount of every UPDATE and DELETE it emits against the rows it meant to
  change, so rows_affected must leave out rows changed by triggers (rqlite reports
  sqlite3_changes());
* create_all/has_table, get_table_names and reflection read sqlite_master and PRAGMA
  table_info, so those must show the user's tables and nothing else;
* dates: `native_datetime=True` (a create_engine option of SQLAlchemy's SQLite dialects) hands
  Date and TIMESTAMP values to pyrqlite, whose converters turn rqlite's RFC 3339 answers into
  date/datetime. Without it, SQLAlchemy's own Date processor gets the datetime.date pyrqlite
  already made and raises TypeError, against rqlite too; DateTime works either way (pyrqlite
  turns DATETIME answers back into SQLite's text format, which SQLAlchemy parses).
"""

import datetime
import sys
import warnings

from sqlalchemy import (
    DDL,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    TIMESTAMP,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from _checks import check, expect, run


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    born: Mapped[datetime.date] = mapped_column(Date, nullable=True)
    joined: Mapped[datetime.datetime] = mapped_column(DateTime, nullable=True)
    books: Mapped[list["Book"]] = relationship(back_populates="author", cascade="all, delete-orphan")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


class Account(Base):
    """Every UPDATE of an account writes two audit rows (a trigger)."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    balance: Mapped[int] = mapped_column(Integer)


audit = Table(
    "account_audit",
    Base.metadata,
    Column("account_id", Integer),
    Column("note", String(20)),
)

stamps = Table(
    "stamps",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("ts", TIMESTAMP),
)

event.listen(
    Account.__table__,
    "after_create",
    DDL(
        "CREATE TRIGGER accounts_audit AFTER UPDATE ON accounts BEGIN "
        "INSERT INTO account_audit VALUES (NEW.id, 'before'); "
        "INSERT INTO account_audit VALUES (NEW.id, 'after'); END"
    ),
)

USER_TABLES = ["account_audit", "accounts", "authors", "books", "stamps"]


@check
def create_all_makes_the_tables(engine):
    Base.metadata.create_all(engine)
    expect(sorted(inspect(engine).get_table_names()), USER_TABLES, "tables after create_all")
    # A second create_all sees them (has_table) and creates nothing.
    Base.metadata.create_all(engine)


@check
def orm_insert_gets_ids(engine):
    with Session(engine) as s:
        ada = Author(name="Ada", born=datetime.date(1815, 12, 10),
                     joined=datetime.datetime(2024, 1, 2, 3, 4, 5, 123456))
        ada.books = [Book(title="Notes"), Book(title="Letters")]
        s.add(ada)
        s.add(Author(name="Grace"))
        s.commit()
        expect(ada.id, 1, "first author id (cursor.lastrowid)")
        expect(sorted(b.id for b in ada.books), [1, 2], "book ids")
        expect(s.scalar(select(func.count()).select_from(Book)), 2, "books")
    with engine.connect() as c:
        result = c.execute(insert(Author.__table__).values(name="Edsger"))
        expect(result.inserted_primary_key[0], 3, "Core insert primary key")


@check
def orm_update_and_delete_check_rowcount(engine):
    with Session(engine) as s:
        grace = s.scalars(select(Author).where(Author.name == "Grace")).one()
        grace.name = "Grace Hopper"
        s.commit()  # StaleDataError unless the UPDATE reports 1 row
        s.delete(grace)
        with warnings.catch_warnings():
            # The ORM only warns when a DELETE reports another rowcount: make it fail.
            warnings.simplefilter("error")
            s.commit()
        expect(s.scalar(select(func.count()).select_from(Author)), 2, "authors left")
    with engine.begin() as c:
        expect(c.execute(update(Book.__table__).values(title="X")).rowcount, 2, "Core UPDATE of 2 rows")
        expect(c.execute(delete(Book.__table__).where(Book.id == 99)).rowcount, 0, "Core DELETE of none")


@check
def update_with_a_trigger_reports_one_row(engine):
    with Session(engine) as s:
        acct = Account(balance=100)
        s.add(acct)
        s.commit()
        acct.balance = 50
        s.commit()  # the trigger's two inserts must not count: the ORM expects rowcount 1
        expect(s.scalar(select(func.count()).select_from(audit)), 2, "audit rows")
        s.delete(acct)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            s.commit()
    with engine.begin() as c:
        c.execute(insert(Account.__table__).values(id=7, balance=1))
        expect(c.execute(update(Account.__table__).where(Account.id == 7).values(balance=2)).rowcount,
               1, "Core UPDATE with a trigger")


@check
def dates_round_trip(engine):
    with Session(engine) as s:
        ada = s.scalars(select(Author).where(Author.name == "Ada")).one()
        expect(ada.born, datetime.date(1815, 12, 10), "Date")
        expect(ada.joined, datetime.datetime(2024, 1, 2, 3, 4, 5, 123456), "DateTime")
        ada.joined = datetime.datetime(2025, 6, 7, 8, 9, 10)
        s.commit()
    with Session(engine) as s:
        ada = s.scalars(select(Author).where(Author.born == datetime.date(1815, 12, 10))).one()
        expect(ada.joined, datetime.datetime(2025, 6, 7, 8, 9, 10), "DateTime without microseconds")
    with engine.begin() as c:
        when = datetime.datetime(2024, 2, 29, 23, 59, 59, 5)
        c.execute(insert(stamps).values(id=1, ts=when))
        expect(c.execute(select(stamps.c.ts)).scalar_one(), when, "TIMESTAMP")


@check
def reflection_shows_only_user_tables(engine):
    expect(sorted(inspect(engine).get_table_names()), USER_TABLES, "get_table_names")
    reflected = MetaData()
    reflected.reflect(engine)
    expect(sorted(reflected.tables), USER_TABLES, "MetaData.reflect")
    cols = [c.name for c in reflected.tables["authors"].columns]
    expect(cols, ["id", "name", "born", "joined"], "reflected columns")
    fks = inspect(engine).get_foreign_keys("books")
    expect([(f["referred_table"], f["constrained_columns"]) for f in fks],
           [("authors", ["author_id"])], "foreign keys")


@check
def raw_sql_and_errors(engine):
    with engine.connect() as c:
        expect(c.execute(text("SELECT name FROM authors WHERE id = :id"), {"id": 1}).scalar_one(),
               "Ada", "text() with a named parameter")
        try:
            c.execute(text("SELECT * FROM nope"))
        except Exception as e:  # SQLAlchemy wraps pyrqlite's Error in DBAPIError
            expect("no such table: nope" in str(e), True, f"error text {e}")
        else:
            raise AssertionError("a query of a missing table did not fail")


@check
def drop_all_leaves_an_empty_schema(engine):
    Base.metadata.drop_all(engine)
    expect(inspect(engine).get_table_names(), [], "tables after drop_all")
    with engine.connect() as c:
        expect(c.execute(text("SELECT count(*) FROM sqlite_master")).scalar_one(), 0,
               "sqlite_master rows after drop_all")


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    engine = create_engine(f"rqlite+pyrqlite://{host}:{port}/", native_datetime=True)
    with engine.connect() as c:
        version = c.execute(text("SELECT sqlite_version()")).scalar_one()
    # The dialect does not say which SQLite the server runs (pyrqlite's module has no
    # sqlite_version_info), so SQLAlchemy's server_version_info stays None and get_columns (so
    # MetaData.reflect) fails comparing it, against rqlite too. Give it the server's version.
    engine.dialect.server_version_info = tuple(int(p) for p in version.split("."))
    run("sqlalchemy", engine)


if __name__ == "__main__":
    main()
