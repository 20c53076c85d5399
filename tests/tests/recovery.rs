//! Notifications stored while no listener ran: processed at startup, or left
//! alone with `recover(false)`; and a listener serves only its selected channels.

use diesel::prelude::*;
use diesel::sql_types::{Int4, Text};
use pgpubsub_tests::{count, names, spawn_listening, wait_until, TestDb, WAIT};
use serde::Deserialize;

diesel::table! {
    tasks (id) {
        id -> BigInt,
        name -> Text,
    }
}

diesel::table! {
    reports (id) {
        id -> BigInt,
        name -> Text,
    }
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug)]
#[diesel(table_name = tasks)]
pub struct Task {
    pub id: i64,
    pub name: String,
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug)]
#[diesel(table_name = reports)]
pub struct Report {
    pub id: i64,
    pub name: String,
}

#[pgpubsub::trigger_channel(model = Task, lock_notifications)]
pub struct TaskChannel;

#[pgpubsub::trigger_channel(model = Report, lock_notifications)]
pub struct ReportChannel;

const SCHEMA: &str = "
CREATE TABLE tasks (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE reports (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE effects (id bigserial PRIMARY KEY, name text NOT NULL);
";

fn record(conn: &mut PgConnection, name: &str) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO effects (name) VALUES ($1)")
        .bind::<Text, _>(name)
        .execute(conn)
        .map(drop)
}

#[pgpubsub::post_insert_listener(TaskChannel)]
fn task_inserted(new: Task, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, &format!("task {}", new.name))
}

#[pgpubsub::post_insert_listener(ReportChannel)]
fn report_inserted(new: Report, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, &format!("report {}", new.name))
}

fn handled(conn: &mut PgConnection) -> Vec<String> {
    names(conn, "SELECT name FROM effects ORDER BY name")
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Stored {
    #[diesel(sql_type = Text)]
    channel: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Int4)]
    attempts: i32,
}

fn stored(conn: &mut PgConnection) -> Vec<Stored> {
    diesel::sql_query(
        "SELECT channel, payload->'new'->>'name' AS name, attempts FROM pgpubsub_notification ORDER BY id",
    )
    .load(conn)
    .unwrap()
}

fn insert(conn: &mut PgConnection, table: &str, names: &[&str]) {
    for name in names {
        diesel::sql_query(format!("INSERT INTO {table} (name) VALUES ($1)"))
            .bind::<Text, _>(*name)
            .execute(conn)
            .unwrap();
    }
}

#[test]
fn notifications_stored_while_no_listener_ran_are_processed_at_startup() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    insert(&mut conn, "tasks", &["a", "b", "c"]);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        3
    );
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()));
    assert!(wait_until(WAIT, || handled(&mut conn).len() == 3));
    handle.shutdown().unwrap();
    assert_eq!(handled(&mut conn), ["task a", "task b", "task c"]);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
}

#[test]
fn without_recovery_stored_notifications_are_left_alone_and_new_ones_processed() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    insert(&mut conn, "tasks", &["old 1", "old 2"]);
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()).recover(false));
    insert(&mut conn, "tasks", &["new"]);
    assert!(wait_until(WAIT, || handled(&mut conn) == ["task new"]));
    handle.shutdown().unwrap();
    // Claims go by id: the older rows were skipped, not merely not reached yet.
    assert_eq!(handled(&mut conn), ["task new"]);
    let untouched = |name: &str| Stored {
        channel: "task_channel".to_owned(),
        name: name.to_owned(),
        attempts: 0,
    };
    assert_eq!(stored(&mut conn), [untouched("old 1"), untouched("old 2")]);

    // They are intact: a recovering listener processes them.
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()));
    assert!(wait_until(WAIT, || handled(&mut conn).len() == 3));
    handle.shutdown().unwrap();
    assert_eq!(handled(&mut conn), ["task new", "task old 1", "task old 2"]);
    assert_eq!(stored(&mut conn), []);
}

#[test]
fn a_listener_serves_only_its_selected_channels() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    insert(&mut conn, "reports", &["r1"]);
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()).channels(["task_channel"]));
    insert(&mut conn, "reports", &["r2"]);
    // A task written after the reports: once it is handled, the listener has
    // had its chance at the reports.
    insert(&mut conn, "tasks", &["t"]);
    assert!(wait_until(WAIT, || handled(&mut conn) == ["task t"]));
    handle.shutdown().unwrap();
    assert_eq!(handled(&mut conn), ["task t"]);
    let stored = stored(&mut conn);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored
            .iter()
            .all(|row| row.channel == "report_channel" && row.attempts == 0),
        "{stored:?}"
    );
}

#[test]
fn without_recovery_a_write_committed_after_startup_is_processed() {
    let db = TestDb::new(SCHEMA);
    let mut writer = db.conn();
    let mut conn = db.conn();
    let mut handle = None;
    writer
        .transaction::<_, diesel::result::Error, _>(|writer| {
            // The notification row (and its id) exists before the listener
            // starts, but is committed only after it listens; a later id is
            // committed before the start (so it is left alone).
            insert(writer, "tasks", &["in flight"]);
            insert(&mut conn, "tasks", &["before start"]);
            handle = Some(spawn_listening(
                pgpubsub::Listener::new(db.url()).recover(false),
            ));
            Ok(())
        })
        .unwrap();
    let handle = handle.unwrap();
    insert(&mut conn, "tasks", &["marker"]);
    assert!(wait_until(WAIT, || handled(&mut conn)
        .contains(&"task marker".to_owned())));
    assert!(
        wait_until(WAIT, || handled(&mut conn).len() == 2),
        "{:?}",
        stored(&mut conn)
    );
    handle.shutdown().unwrap();
    assert_eq!(handled(&mut conn), ["task in flight", "task marker"]);
}

#[test]
fn a_row_committed_late_behind_the_claim_cursor_is_still_processed() {
    let db = TestDb::new(SCHEMA);
    let mut writer = db.conn();
    let mut conn = db.conn();
    // Polling would take a minute: only cursor resets can find the row.
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .batch_size(10)
            .poll_interval(std::time::Duration::from_secs(60)),
    );
    writer
        .transaction::<_, diesel::result::Error, _>(|writer| {
            // Takes the lowest id, then stays open while 300 later rows are
            // committed and drained past it.
            insert(writer, "tasks", &["late"]);
            let names: Vec<String> = (0..300).map(|i| format!("early {i:03}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            insert(&mut conn, "tasks", &names);
            assert!(wait_until(WAIT, || handled(&mut conn).len() == 300));
            Ok(())
        })
        .unwrap();
    assert!(
        wait_until(WAIT, || handled(&mut conn)
            .contains(&"task late".to_owned())),
        "{:?}",
        stored(&mut conn)
    );
    handle.shutdown().unwrap();
    assert_eq!(handled(&mut conn).len(), 301);
}
