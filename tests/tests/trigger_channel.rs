//! Row changes of a lockable trigger channel reach typed handlers, exactly once.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text};
use pgpubsub::Context;
use pgpubsub_tests::{count, wait_until, TestDb, WAIT};
use serde::Deserialize;

diesel::table! {
    media (id) {
        id -> BigInt,
        name -> Text,
        size -> BigInt,
        created_at -> Timestamptz,
    }
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug, Clone, PartialEq)]
#[diesel(table_name = media)]
pub struct Media {
    pub id: i64,
    pub name: String,
    pub size: i64,
    pub created_at: DateTime<Utc>,
}

#[pgpubsub::trigger_channel(model = Media, lock_notifications)]
pub struct MediaChannel;

const SCHEMA: &str = "
CREATE TABLE media (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    size bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE effects (
    id bigserial PRIMARY KEY,
    handler text NOT NULL,
    op text,
    old jsonb,
    new jsonb,
    context jsonb,
    notification_id bigint,
    db_version text,
    attempt int
);
";

fn record(
    conn: &mut PgConnection,
    handler: &str,
    op: &str,
    old: Option<&Media>,
    new: Option<&Media>,
    ctx: &Context,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO effects (handler, op, old, new, context, notification_id, db_version, attempt) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind::<Text, _>(handler)
    .bind::<Text, _>(op)
    .bind::<Nullable<Jsonb>, _>(old.map(|m| serde_json::json!({"id": m.id, "name": m.name, "size": m.size})))
    .bind::<Nullable<Jsonb>, _>(new.map(|m| serde_json::json!({"id": m.id, "name": m.name, "size": m.size})))
    .bind::<Jsonb, _>(ctx.data().clone())
    .bind::<Nullable<BigInt>, _>(ctx.notification_id())
    .bind::<Nullable<Text>, _>(ctx.db_version())
    .bind::<diesel::sql_types::Int4, _>(ctx.attempt())
    .execute(conn)
    .map(drop)
}

#[pgpubsub::post_save_listener(MediaChannel)]
fn on_save(
    old: Option<Media>,
    new: Media,
    conn: &mut PgConnection,
    ctx: &Context,
) -> QueryResult<()> {
    if new.name == "fail" {
        return Err(diesel::result::Error::RollbackTransaction);
    }
    if new.name == "panic" {
        panic!("handler panicked on purpose");
    }
    let op = if old.is_some() { "update" } else { "insert" };
    record(conn, "on_save", op, old.as_ref(), Some(&new), ctx)
}

#[pgpubsub::post_delete_listener(MediaChannel)]
fn on_delete(old: Media, conn: &mut PgConnection, ctx: &Context) -> QueryResult<()> {
    record(conn, "on_delete", "delete", Some(&old), None, ctx)
}

#[derive(QueryableByName, Debug)]
struct Effect {
    #[diesel(sql_type = Text)]
    handler: String,
    #[diesel(sql_type = Nullable<Text>)]
    op: Option<String>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    old: Option<serde_json::Value>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    new: Option<serde_json::Value>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    context: Option<serde_json::Value>,
    #[diesel(sql_type = Nullable<BigInt>)]
    notification_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    db_version: Option<String>,
}

fn effects(conn: &mut PgConnection) -> Vec<Effect> {
    diesel::sql_query("SELECT handler, op, old, new, context, notification_id, db_version FROM effects ORDER BY id")
        .load(conn)
        .unwrap()
}

fn listener(db: &TestDb) -> pgpubsub::ListenerHandle {
    let handle = pgpubsub::Listener::new(db.url())
        .channels(["media_channel"])
        .workers(2)
        .spawn()
        .unwrap();
    assert!(handle.wait_listening(WAIT));
    handle
}

#[test]
fn insert_update_delete_reach_their_handlers_with_typed_rows() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    diesel::sql_query("INSERT INTO media (name, size) VALUES ('cat.png', 10)")
        .execute(&mut conn)
        .unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 1));
    diesel::sql_query("UPDATE media SET size = 20")
        .execute(&mut conn)
        .unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 2));
    diesel::sql_query("DELETE FROM media")
        .execute(&mut conn)
        .unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 3));
    handle.shutdown().unwrap();

    let effects = effects(&mut conn);
    assert_eq!(effects[0].handler, "on_save");
    assert_eq!(effects[0].op.as_deref(), Some("insert"));
    assert_eq!(effects[0].old, None);
    assert_eq!(effects[0].new.as_ref().unwrap()["name"], "cat.png");
    assert_eq!(effects[1].op.as_deref(), Some("update"));
    assert_eq!(effects[1].old.as_ref().unwrap()["size"], 10);
    assert_eq!(effects[1].new.as_ref().unwrap()["size"], 20);
    assert_eq!(effects[2].handler, "on_delete");
    assert_eq!(effects[2].old.as_ref().unwrap()["size"], 20);
    assert_eq!(effects[2].new, None);
    // Stored notifications carry metadata; the context defaults to `{}`.
    assert!(effects[0].notification_id.is_some());
    assert_eq!(effects[0].db_version.as_deref(), Some("20000101000001"));
    assert_eq!(effects[0].context, Some(serde_json::json!({})));
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
}

#[test]
fn bulk_insert_of_1000_rows_gives_1000_events() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    diesel::sql_query("INSERT INTO media (name) SELECT 'm' || i FROM generate_series(1, 1000) i")
        .execute(&mut conn)
        .unwrap();
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM effects"
    ) == 1000));
    handle.shutdown().unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(DISTINCT new->>'id') AS n FROM effects"
        ),
        1000
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
}

#[test]
fn failing_handler_keeps_its_row_and_others_are_processed() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    diesel::sql_query("INSERT INTO media (name) VALUES ('a'), ('fail'), ('panic'), ('b')")
        .execute(&mut conn)
        .unwrap();
    let handle = listener(&db);
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM effects"
    ) == 2));
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM pgpubsub_notification WHERE attempts > 0"
    ) == 2));
    handle.shutdown().unwrap();
    #[derive(QueryableByName)]
    struct Failed {
        #[diesel(sql_type = Nullable<Text>)]
        last_error: Option<String>,
    }
    let failed: Vec<Failed> = diesel::sql_query(
        "SELECT last_error FROM pgpubsub_notification ORDER BY payload->'new'->>'name'",
    )
    .load(&mut conn)
    .unwrap();
    let errors: Vec<String> = failed.into_iter().map(|f| f.last_error.unwrap()).collect();
    assert!(errors[0].contains("on_save"), "{errors:?}");
    assert!(
        errors[1].contains("panicked") && errors[1].contains("on purpose"),
        "{errors:?}"
    );
}
