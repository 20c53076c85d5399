//! Notifications follow the writer's transaction: they are delivered when it
//! commits, never while it is open, and never after a rollback.

use diesel::prelude::*;
use diesel::sql_types::Text;
use pgpubsub_tests::{count, wait_until, TestDb, WAIT};
use serde::Deserialize;

diesel::table! {
    jobs (id) {
        id -> BigInt,
        name -> Text,
    }
}

diesel::table! {
    pings (id) {
        id -> BigInt,
        name -> Text,
    }
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug)]
#[diesel(table_name = jobs)]
pub struct Job {
    pub id: i64,
    pub name: String,
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug)]
#[diesel(table_name = pings)]
pub struct Ping {
    pub id: i64,
    pub name: String,
}

/// Stored and claimed exactly once.
#[pgpubsub::trigger_channel(model = Job, lock_notifications)]
pub struct JobChannel;

/// Broadcast through NOTIFY only.
#[pgpubsub::trigger_channel(model = Ping)]
pub struct PingChannel;

const SCHEMA: &str = "
CREATE TABLE jobs (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE pings (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE effects (id bigserial PRIMARY KEY, handler text NOT NULL, name text NOT NULL);
";

fn record(conn: &mut PgConnection, handler: &str, name: &str) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO effects (handler, name) VALUES ($1, $2)")
        .bind::<Text, _>(handler)
        .bind::<Text, _>(name)
        .execute(conn)
        .map(drop)
}

#[pgpubsub::post_insert_listener(JobChannel)]
fn on_job(new: Job, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, "on_job", &new.name)
}

#[pgpubsub::post_insert_listener(PingChannel)]
fn on_ping(new: Ping, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, "on_ping", &new.name)
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// The names the handler `handler` saw, in the order they were handled.
fn handled(conn: &mut PgConnection, handler: &str) -> Vec<String> {
    diesel::sql_query("SELECT name FROM effects WHERE handler = $1 ORDER BY id")
        .bind::<Text, _>(handler)
        .load::<Name>(conn)
        .unwrap()
        .into_iter()
        .map(|row| row.name)
        .collect()
}

fn insert(conn: &mut PgConnection, table: &str, name: &str) {
    diesel::sql_query(format!("INSERT INTO {table} (name) VALUES ($1)"))
        .bind::<Text, _>(name)
        .execute(conn)
        .unwrap();
}

fn listener(db: &TestDb) -> pgpubsub::ListenerHandle {
    let handle = pgpubsub::Listener::new(db.url()).spawn().unwrap();
    assert!(handle.wait_listening(WAIT));
    handle
}

#[test]
fn stored_insert_inside_a_transaction_is_handled_only_after_commit() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut writer = db.conn();
    let mut other = db.conn();
    writer
        .transaction::<_, diesel::result::Error, _>(|writer| {
            insert(writer, "jobs", "pending");
            // A later, separately committed row: once it is handled, the
            // listener has claimed past the pending one (claims go by id).
            insert(&mut other, "jobs", "marker");
            assert!(wait_until(WAIT, || handled(&mut other, "on_job") == ["marker"]));
            assert_eq!(handled(&mut other, "on_job"), ["marker"]);
            Ok(())
        })
        .unwrap();
    assert!(wait_until(WAIT, || handled(&mut other, "on_job")
        == ["marker", "pending"]));
    handle.shutdown().unwrap();
    assert_eq!(
        count(
            &mut other,
            "SELECT count(*) AS n FROM pgpubsub_notification"
        ),
        0
    );
}

#[test]
fn stored_insert_rolled_back_is_never_handled() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    let rolled_back = conn.transaction::<(), _, _>(|conn| {
        insert(conn, "jobs", "rolled back");
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert!(rolled_back.is_err());
    insert(&mut conn, "jobs", "marker");
    assert!(wait_until(WAIT, || handled(&mut conn, "on_job") == ["marker"]));
    handle.shutdown().unwrap();
    assert_eq!(handled(&mut conn, "on_job"), ["marker"]);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM jobs"), 1);
}

#[test]
fn broadcast_insert_inside_a_transaction_is_handled_only_after_commit() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut writer = db.conn();
    let mut other = db.conn();
    writer
        .transaction::<_, diesel::result::Error, _>(|writer| {
            insert(writer, "pings", "pending");
            insert(&mut other, "pings", "marker");
            assert!(wait_until(WAIT, || handled(&mut other, "on_ping") == ["marker"]));
            assert_eq!(handled(&mut other, "on_ping"), ["marker"]);
            Ok(())
        })
        .unwrap();
    assert!(wait_until(WAIT, || handled(&mut other, "on_ping")
        == ["marker", "pending"]));
    handle.shutdown().unwrap();
}

#[test]
fn broadcast_insert_rolled_back_is_never_handled() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    let rolled_back = conn.transaction::<(), _, _>(|conn| {
        insert(conn, "pings", "rolled back");
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert!(rolled_back.is_err());
    insert(&mut conn, "pings", "marker");
    assert!(wait_until(WAIT, || handled(&mut conn, "on_ping") == ["marker"]));
    // One worker takes broadcasts in arrival order: a notification of the
    // rolled-back write would have been handled before the marker.
    handle.shutdown().unwrap();
    assert_eq!(handled(&mut conn, "on_ping"), ["marker"]);
}
