//! Several handlers on one channel: each runs only for its own event kinds
//! (and `when` condition), pre_delete never cancels the delete, and the
//! handlers of one notification commit or fail together.

use diesel::prelude::*;
use diesel::sql_types::{Int4, Nullable, Text};
use pgpubsub_tests::{count, wait_until, TestDb, WAIT};
use serde::Deserialize;

diesel::table! {
    media (id) {
        id -> BigInt,
        name -> Text,
        size -> BigInt,
    }
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug)]
#[diesel(table_name = media)]
pub struct Media {
    pub id: i64,
    pub name: String,
    pub size: i64,
}

#[pgpubsub::trigger_channel(model = Media, lock_notifications)]
pub struct MediaChannel;

diesel::table! {
    uploads (id) {
        id -> BigInt,
        name -> Text,
        size -> BigInt,
    }
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug)]
#[diesel(table_name = uploads)]
pub struct Upload {
    pub id: i64,
    pub name: String,
    pub size: i64,
}

/// Only a conditional handler: the trigger itself filters.
#[pgpubsub::trigger_channel(model = Upload, lock_notifications)]
pub struct UploadChannel;

const SCHEMA: &str = "
CREATE TABLE media (id bigserial PRIMARY KEY, name text NOT NULL, size bigint NOT NULL);
CREATE TABLE uploads (id bigserial PRIMARY KEY, name text NOT NULL, size bigint NOT NULL);
CREATE TABLE effects (id bigserial PRIMARY KEY, handler text NOT NULL, name text NOT NULL);
";

fn record(conn: &mut PgConnection, handler: &str, name: &str) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO effects (handler, name) VALUES ($1, $2)")
        .bind::<Text, _>(handler)
        .bind::<Text, _>(name)
        .execute(conn)
        .map(drop)
}

#[pgpubsub::post_insert_listener(MediaChannel)]
fn inserted(new: Media, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, "inserted", &new.name)
}

#[pgpubsub::post_update_listener(MediaChannel)]
fn updated(old: Media, new: Media, conn: &mut PgConnection) -> QueryResult<()> {
    assert_eq!(old.id, new.id);
    record(conn, "updated", &new.name)
}

#[pgpubsub::pre_delete_listener(MediaChannel)]
fn deleting(old: Media, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, "deleting", &old.name)
}

#[pgpubsub::trigger_listener(MediaChannel, insert, update, when = "NEW.size > 100")]
fn large(old: Option<Media>, new: Media, conn: &mut PgConnection) -> anyhow::Result<()> {
    if new.name == "explode" {
        anyhow::bail!("refusing `{}`", new.name);
    }
    let op = if old.is_some() {
        "large update"
    } else {
        "large insert"
    };
    record(conn, op, &new.name)?;
    Ok(())
}

#[pgpubsub::trigger_listener(UploadChannel, insert, when = "NEW.size > 100")]
fn large_upload(new: Upload, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, "large upload", &new.name)
}

#[derive(QueryableByName)]
struct Effect {
    #[diesel(sql_type = Text)]
    handler: String,
    #[diesel(sql_type = Text)]
    name: String,
}

fn effects(conn: &mut PgConnection) -> Vec<(String, String)> {
    diesel::sql_query("SELECT handler, name FROM effects ORDER BY id")
        .load::<Effect>(conn)
        .unwrap()
        .into_iter()
        .map(|effect| (effect.handler, effect.name))
        .collect()
}

fn execute(conn: &mut PgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).unwrap();
}

/// Waits until `n` effects exist and every notification is handled.
fn settled(conn: &mut PgConnection, n: usize) -> bool {
    wait_until(WAIT, || {
        effects(conn).len() == n
            && count(conn, "SELECT count(*) AS n FROM pgpubsub_notification") == 0
    })
}

fn listener(db: &TestDb) -> pgpubsub::ListenerHandle {
    let handle = pgpubsub::Listener::new(db.url()).spawn().unwrap();
    assert!(handle.wait_listening(WAIT));
    handle
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(handler, name)| ((*handler).to_owned(), (*name).to_owned()))
        .collect()
}

#[test]
fn each_handler_runs_only_for_its_own_event_kinds_and_condition() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    // One statement at a time; each notification's handlers run together,
    // so a settled count means the whole notification was handled.
    execute(
        &mut conn,
        "INSERT INTO media (name, size) VALUES ('small', 10)",
    );
    assert!(settled(&mut conn, 1));
    execute(
        &mut conn,
        "INSERT INTO media (name, size) VALUES ('big', 200)",
    );
    assert!(settled(&mut conn, 3));
    execute(
        &mut conn,
        "UPDATE media SET size = 300 WHERE name = 'small'",
    );
    assert!(settled(&mut conn, 5));
    execute(&mut conn, "UPDATE media SET size = 50 WHERE name = 'big'");
    assert!(settled(&mut conn, 6));
    execute(&mut conn, "DELETE FROM media WHERE name = 'small'");
    assert!(settled(&mut conn, 7));
    handle.shutdown().unwrap();
    assert_eq!(
        effects(&mut conn),
        pairs(&[
            ("inserted", "small"),
            // Post handlers run before custom ones.
            ("inserted", "big"),
            ("large insert", "big"),
            ("updated", "small"),
            ("large update", "small"),
            ("updated", "big"),
            ("deleting", "small"),
        ])
    );
}

#[test]
fn pre_delete_listener_does_not_cancel_the_delete() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    execute(
        &mut conn,
        "INSERT INTO media (name, size) VALUES ('doomed', 1)",
    );
    let handle = listener(&db);
    assert!(settled(&mut conn, 1));
    let deleted = diesel::sql_query("DELETE FROM media WHERE name = 'doomed'")
        .execute(&mut conn)
        .unwrap();
    assert_eq!(deleted, 1);
    assert!(settled(&mut conn, 2));
    handle.shutdown().unwrap();
    assert_eq!(
        effects(&mut conn),
        pairs(&[("inserted", "doomed"), ("deleting", "doomed")])
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM media"), 0);
}

#[test]
fn a_when_condition_is_checked_by_the_trigger_so_unmatched_rows_store_nothing() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    execute(
        &mut conn,
        "INSERT INTO uploads (name, size) VALUES ('tiny', 10)",
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
    execute(
        &mut conn,
        "INSERT INTO uploads (name, size) VALUES ('huge', 1000)",
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        1
    );
    // The trigger fires on insert only: an update matching the condition stores nothing.
    execute(&mut conn, "UPDATE uploads SET size = 5000");
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        1
    );
    let handle = listener(&db);
    assert!(settled(&mut conn, 1));
    handle.shutdown().unwrap();
    assert_eq!(effects(&mut conn), pairs(&[("large upload", "huge")]));
}

#[derive(QueryableByName, Debug)]
struct Failed {
    #[diesel(sql_type = Int4)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
}

#[test]
fn a_failing_handler_undoes_the_writes_of_the_other_handlers_of_its_notification() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    // `inserted` runs first and writes, then `large` fails.
    execute(
        &mut conn,
        "INSERT INTO media (name, size) VALUES ('explode', 500)",
    );
    execute(
        &mut conn,
        "INSERT INTO media (name, size) VALUES ('fine', 1)",
    );
    assert!(wait_until(WAIT, || effects(&mut conn)
        == pairs(&[("inserted", "fine")])));
    assert!(wait_until(WAIT, || {
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification WHERE attempts >= 1 AND last_error IS NOT NULL",
        ) == 1
    }));
    handle.shutdown().unwrap();
    assert_eq!(effects(&mut conn), pairs(&[("inserted", "fine")]));
    let failed: Vec<Failed> =
        diesel::sql_query("SELECT attempts, last_error FROM pgpubsub_notification")
            .load(&mut conn)
            .unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].attempts >= 1, "{failed:?}");
    let error = failed[0].last_error.as_deref().unwrap();
    assert!(
        error.contains("large") && error.contains("refusing `explode`"),
        "{error}"
    );
}
