//! Notification context (transaction- or session-bound) and metadata
//! (created_at, db_version, id, attempt) reach handlers.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int4, Jsonb, Nullable, Text, Timestamptz};
use pgpubsub::Context;
use pgpubsub_tests::{wait_until, TestDb, WAIT};
use serde::Deserialize;
use serde_json::{json, Value};

diesel::table! {
    items (id) {
        id -> BigInt,
        name -> Text,
    }
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug)]
#[diesel(table_name = items)]
pub struct Item {
    pub id: i64,
    pub name: String,
}

#[pgpubsub::trigger_channel(model = Item, lock_notifications)]
pub struct ItemChannel;

const SCHEMA: &str = "
CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE pings (id bigserial PRIMARY KEY);
CREATE TABLE effects (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    context jsonb NOT NULL,
    request_id jsonb,
    channel text NOT NULL,
    notification_id bigint,
    created_at timestamptz,
    db_version text,
    attempt int NOT NULL
);
";

#[pgpubsub::post_insert_listener(ItemChannel)]
fn item_inserted(new: Item, conn: &mut PgConnection, ctx: &Context) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO effects (name, context, request_id, channel, notification_id, created_at, db_version, attempt) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind::<Text, _>(&new.name)
    .bind::<Jsonb, _>(ctx.data().clone())
    .bind::<Nullable<Jsonb>, _>(ctx.get("request_id").cloned())
    .bind::<Text, _>(ctx.channel())
    .bind::<Nullable<BigInt>, _>(ctx.notification_id())
    .bind::<Nullable<Timestamptz>, _>(ctx.created_at())
    .bind::<Nullable<Text>, _>(ctx.db_version())
    .bind::<Int4, _>(ctx.attempt())
    .execute(conn)
    .map(drop)
}

#[derive(QueryableByName, Debug)]
struct Effect {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Jsonb)]
    context: Value,
    #[diesel(sql_type = Nullable<Jsonb>)]
    request_id: Option<Value>,
    #[diesel(sql_type = Text)]
    channel: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    notification_id: Option<i64>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    created_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    db_version: Option<String>,
    #[diesel(sql_type = Int4)]
    attempt: i32,
}

fn effects(conn: &mut PgConnection) -> Vec<Effect> {
    diesel::sql_query(
        "SELECT name, context, request_id, channel, notification_id, created_at, db_version, attempt \
         FROM effects ORDER BY id",
    )
    .load(conn)
    .unwrap()
}

/// The context each handled row carried, by row name, in handling order.
fn contexts(conn: &mut PgConnection) -> Vec<(String, Value)> {
    effects(conn)
        .into_iter()
        .map(|effect| (effect.name, effect.context))
        .collect()
}

fn insert(conn: &mut PgConnection, name: &str) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO items (name) VALUES ($1)")
        .bind::<Text, _>(name)
        .execute(conn)
        .map(drop)
}

fn listener(db: &TestDb) -> pgpubsub::ListenerHandle {
    let handle = pgpubsub::Listener::new(db.url()).spawn().unwrap();
    assert!(handle.wait_listening(WAIT));
    handle
}

fn expect(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect()
}

#[test]
fn context_is_an_empty_object_by_default() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    insert(&mut conn, "plain").unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 1));
    handle.shutdown().unwrap();
    assert_eq!(contexts(&mut conn), expect(&[("plain", json!({}))]));
    assert_eq!(effects(&mut conn)[0].request_id, None);
}

#[test]
fn with_context_reaches_the_handler_and_ends_with_its_transaction() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    pgpubsub::with_context(&mut conn, &json!({"request_id": "r1"}), |conn| {
        insert(conn, "inside")
    })
    .unwrap();
    insert(&mut conn, "after").unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 2));
    handle.shutdown().unwrap();
    assert_eq!(
        contexts(&mut conn),
        expect(&[
            ("inside", json!({"request_id": "r1"})),
            ("after", json!({}))
        ])
    );
    assert_eq!(effects(&mut conn)[0].request_id, Some(json!("r1")));
}

#[test]
fn nested_with_context_overrides_then_restores_the_outer_context() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    pgpubsub::with_context(&mut conn, &json!({"request_id": "outer"}), |conn| {
        insert(conn, "a")?;
        pgpubsub::with_context(conn, &json!({"request_id": "inner"}), |conn| {
            insert(conn, "b")
        })?;
        insert(conn, "c")
    })
    .unwrap();
    insert(&mut conn, "d").unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 4));
    handle.shutdown().unwrap();
    assert_eq!(
        contexts(&mut conn),
        expect(&[
            ("a", json!({"request_id": "outer"})),
            ("b", json!({"request_id": "inner"})),
            ("c", json!({"request_id": "outer"})),
            ("d", json!({})),
        ])
    );
}

#[test]
fn session_context_applies_to_every_later_write_until_cleared() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    pgpubsub::set_session_context(&mut conn, &json!({"tenant": "t1"})).unwrap();
    insert(&mut conn, "first").unwrap();
    insert(&mut conn, "second").unwrap();
    // Another session does not see it.
    insert(&mut db.conn(), "elsewhere").unwrap();
    pgpubsub::clear_session_context(&mut conn).unwrap();
    insert(&mut conn, "cleared").unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 4));
    handle.shutdown().unwrap();
    assert_eq!(
        contexts(&mut conn),
        expect(&[
            ("first", json!({"tenant": "t1"})),
            ("second", json!({"tenant": "t1"})),
            ("elsewhere", json!({})),
            ("cleared", json!({})),
        ])
    );
}

#[test]
fn with_context_inside_a_session_context_overrides_it_for_its_transaction_only() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    pgpubsub::set_session_context(&mut conn, &json!({"tenant": "t1"})).unwrap();
    pgpubsub::with_context(&mut conn, &json!({"request_id": "r2"}), |conn| {
        insert(conn, "request")
    })
    .unwrap();
    insert(&mut conn, "session").unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 2));
    handle.shutdown().unwrap();
    assert_eq!(
        contexts(&mut conn),
        expect(&[
            ("request", json!({"request_id": "r2"})),
            ("session", json!({"tenant": "t1"}))
        ])
    );
}

#[test]
fn with_context_whose_closure_fails_sends_nothing_and_leaves_no_context() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    let failed = pgpubsub::with_context(&mut conn, &json!({"request_id": "lost"}), |conn| {
        insert(conn, "rolled back")?;
        Err::<(), _>(diesel::result::Error::RollbackTransaction)
    });
    assert!(failed.is_err());
    insert(&mut conn, "after").unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 1));
    handle.shutdown().unwrap();
    assert_eq!(contexts(&mut conn), expect(&[("after", json!({}))]));
}

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = Timestamptz)]
    now: DateTime<Utc>,
}

fn db_now(conn: &mut PgConnection) -> DateTime<Utc> {
    diesel::sql_query("SELECT now() AS now")
        .get_result::<Now>(conn)
        .unwrap()
        .now
}

#[test]
fn metadata_names_the_write_time_schema_version_channel_and_attempt() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    // Each statement is its own transaction: now() moves forward between them.
    let before = db_now(&mut conn);
    insert(&mut conn, "dated").unwrap();
    let after = db_now(&mut conn);
    let handle = listener(&db);
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 1));
    handle.shutdown().unwrap();
    let effect = &effects(&mut conn)[0];
    let created_at = effect.created_at.unwrap();
    assert!(
        before <= created_at && created_at <= after,
        "{before} <= {created_at} <= {after}"
    );
    assert_eq!(effect.db_version.as_deref(), Some("20000101000001"));
    assert_eq!(effect.channel, "item_channel");
    assert!(effect.notification_id.is_some_and(|id| id > 0));
    assert_eq!(effect.attempt, 1);
}

#[test]
fn db_version_is_the_schema_version_when_the_row_was_written() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    insert(&mut conn, "old schema").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let migration = dir.path().join("2000-01-01-000002_later");
    std::fs::create_dir_all(&migration).unwrap();
    std::fs::write(
        migration.join("up.sql"),
        "ALTER TABLE items ADD COLUMN note text;",
    )
    .unwrap();
    std::fs::write(
        migration.join("down.sql"),
        "ALTER TABLE items DROP COLUMN note;",
    )
    .unwrap();
    db.migrate(dir.path());
    insert(&mut conn, "new schema").unwrap();
    let handle = listener(&db);
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 2));
    handle.shutdown().unwrap();
    let versions: Vec<(String, Option<String>)> = effects(&mut conn)
        .into_iter()
        .map(|effect| (effect.name, effect.db_version))
        .collect();
    assert_eq!(
        versions,
        [
            ("old schema".to_owned(), Some("20000101000001".to_owned())),
            ("new schema".to_owned(), Some("20000101000002".to_owned())),
        ]
    );
}

diesel::table! {
    pings (id) {
        id -> BigInt,
    }
}

#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = pings)]
pub struct Ping {
    pub id: i64,
}

/// A broadcast channel: its notifications are not stored.
#[pgpubsub::trigger_channel(model = Ping)]
pub struct PingChannel;

type PingSeen = (Option<DateTime<Utc>>, Option<String>, Option<i64>);

static PINGS: std::sync::Mutex<Vec<PingSeen>> = std::sync::Mutex::new(Vec::new());

#[pgpubsub::post_insert_listener(PingChannel)]
fn ping_inserted(new: Ping, ctx: &Context) {
    assert!(new.id > 0);
    PINGS.lock().unwrap().push((
        ctx.created_at(),
        ctx.db_version().map(str::to_owned),
        ctx.notification_id(),
    ));
}

#[test]
fn a_broadcast_carries_its_write_time_and_schema_version() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    let handle = pgpubsub::Listener::new(db.url())
        .channels(["ping_channel"])
        .spawn()
        .unwrap();
    assert!(handle.wait_listening(WAIT));
    let before = db_now(&mut conn);
    diesel::sql_query("INSERT INTO pings DEFAULT VALUES")
        .execute(&mut conn)
        .unwrap();
    let after = db_now(&mut conn);
    assert!(wait_until(WAIT, || PINGS.lock().unwrap().len() == 1));
    handle.shutdown().unwrap();
    let (created_at, db_version, id) = PINGS.lock().unwrap()[0].clone();
    let created_at = created_at.unwrap();
    assert!(
        before <= created_at && created_at <= after,
        "{before} <= {created_at} <= {after}"
    );
    assert_eq!(db_version.as_deref(), Some("20000101000001"));
    assert_eq!(id, None, "a broadcast is not stored");
}
