//! Rows are decoded through PostgreSQL and Diesel by the model's `Selectable`
//! columns (custom primary keys, `column_name` renames); a row that does not
//! decode keeps its notification with an error naming the column, and the
//! others are processed.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int4, Jsonb, Nullable, Text};
use pgpubsub_tests::{count, wait_until, TestDb, WAIT};
use serde_json::{json, Value};

diesel::table! {
    files (media_id) {
        media_id -> BigInt,
        file_name -> Text,
        size -> BigInt,
    }
}

/// A custom primary key and a renamed column, with no serde attributes.
#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = files, primary_key(media_id))]
pub struct File {
    pub media_id: i64,
    #[diesel(column_name = file_name)]
    pub name: String,
    pub size: i64,
}

#[pgpubsub::trigger_channel(model = File, lock_notifications)]
pub struct FileChannel;

diesel::table! {
    counters (id) {
        id -> BigInt,
        hits -> Integer,
    }
}

#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = counters)]
pub struct Counter {
    pub id: i64,
    pub hits: i32,
}

#[pgpubsub::trigger_channel(model = Counter, lock_notifications)]
pub struct CounterChannel;

diesel::table! {
    gauges (id) {
        id -> BigInt,
        level -> Integer,
    }
}

/// The SQL column is `bigint` but the schema says `Integer`: Diesel cannot
/// load any row of this table, and neither can the listener.
#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = gauges)]
pub struct Gauge {
    pub id: i64,
    pub level: i32,
}

#[pgpubsub::trigger_channel(model = Gauge, lock_notifications)]
pub struct GaugeChannel;

diesel::table! {
    notes (id) {
        id -> BigInt,
        body -> Text,
        author -> Text,
    }
}

/// The SQL table has no `author` column.
#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = notes)]
pub struct Note {
    pub id: i64,
    pub body: String,
    pub author: String,
}

#[pgpubsub::trigger_channel(model = Note, lock_notifications)]
pub struct NoteChannel;

// The SQL column order differs from the model's field order on purpose.
const SCHEMA: &str = "
CREATE TABLE files (
    size bigint NOT NULL DEFAULT 0,
    file_name text NOT NULL,
    media_id bigserial PRIMARY KEY
);
CREATE TABLE counters (id bigserial PRIMARY KEY, hits integer NOT NULL);
CREATE TABLE gauges (id bigserial PRIMARY KEY, level bigint NOT NULL);
CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL);
CREATE TABLE effects (id bigserial PRIMARY KEY, handler text NOT NULL, old jsonb, new jsonb);
";

fn file_json(file: &File) -> Value {
    json!({"media_id": file.media_id, "name": file.name, "size": file.size})
}

fn record(
    conn: &mut PgConnection,
    handler: &str,
    old: Option<Value>,
    new: Option<Value>,
) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO effects (handler, old, new) VALUES ($1, $2, $3)")
        .bind::<Text, _>(handler)
        .bind::<Nullable<Jsonb>, _>(old)
        .bind::<Nullable<Jsonb>, _>(new)
        .execute(conn)
        .map(drop)
}

#[pgpubsub::post_save_listener(FileChannel)]
fn file_saved(old: Option<File>, new: File, conn: &mut PgConnection) -> QueryResult<()> {
    record(
        conn,
        "file_saved",
        old.as_ref().map(file_json),
        Some(file_json(&new)),
    )
}

#[pgpubsub::post_delete_listener(FileChannel)]
fn file_deleted(old: File, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, "file_deleted", Some(file_json(&old)), None)
}

#[pgpubsub::post_insert_listener(CounterChannel)]
fn counter_inserted(new: Counter, conn: &mut PgConnection) -> QueryResult<()> {
    record(
        conn,
        "counter_inserted",
        None,
        Some(json!({"id": new.id, "hits": new.hits})),
    )
}

#[pgpubsub::post_insert_listener(GaugeChannel)]
fn gauge_inserted(new: Gauge, conn: &mut PgConnection) -> QueryResult<()> {
    record(
        conn,
        "gauge_inserted",
        None,
        Some(json!({"id": new.id, "level": new.level})),
    )
}

#[pgpubsub::post_insert_listener(NoteChannel)]
fn note_inserted(new: Note, conn: &mut PgConnection) -> QueryResult<()> {
    record(
        conn,
        "note_inserted",
        None,
        Some(json!({"body": new.body, "author": new.author})),
    )
}

#[derive(QueryableByName, Debug)]
struct Effect {
    #[diesel(sql_type = Text)]
    handler: String,
    #[diesel(sql_type = Nullable<Jsonb>)]
    old: Option<Value>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    new: Option<Value>,
}

fn effects(conn: &mut PgConnection) -> Vec<Effect> {
    diesel::sql_query("SELECT handler, old, new FROM effects ORDER BY id")
        .load(conn)
        .unwrap()
}

#[derive(QueryableByName, Debug)]
struct Failed {
    #[diesel(sql_type = Int4)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
}

fn stored(conn: &mut PgConnection, channel: &str) -> Vec<Failed> {
    diesel::sql_query(
        "SELECT attempts, last_error FROM pgpubsub_notification WHERE channel = $1 ORDER BY id",
    )
    .bind::<Text, _>(channel)
    .load(conn)
    .unwrap()
}

fn listener(db: &TestDb) -> pgpubsub::ListenerHandle {
    let handle = pgpubsub::Listener::new(db.url()).spawn().unwrap();
    assert!(handle.wait_listening(WAIT));
    handle
}

#[test]
fn custom_primary_key_and_renamed_column_decode_into_the_model() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        media_id: i64,
    }
    let id = diesel::sql_query(
        "INSERT INTO files (file_name, size) VALUES ('cat.png', 10) RETURNING media_id",
    )
    .get_result::<Id>(&mut conn)
    .unwrap()
    .media_id;
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 1));
    diesel::sql_query("UPDATE files SET file_name = 'dog.png', size = 20")
        .execute(&mut conn)
        .unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 2));
    diesel::sql_query("DELETE FROM files")
        .execute(&mut conn)
        .unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 3));
    handle.shutdown().unwrap();

    let effects = effects(&mut conn);
    let cat = json!({"media_id": id, "name": "cat.png", "size": 10});
    let dog = json!({"media_id": id, "name": "dog.png", "size": 20});
    assert_eq!(effects[0].handler, "file_saved");
    assert_eq!(effects[0].old, None);
    assert_eq!(effects[0].new.as_ref(), Some(&cat));
    assert_eq!(effects[1].handler, "file_saved");
    assert_eq!(effects[1].old.as_ref(), Some(&cat));
    assert_eq!(effects[1].new.as_ref(), Some(&dog));
    assert_eq!(effects[2].handler, "file_deleted");
    assert_eq!(effects[2].old.as_ref(), Some(&dog));
    assert_eq!(effects[2].new, None);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
}

#[test]
fn a_schema_type_diesel_cannot_load_fails_each_notification_with_the_column_named() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    diesel::sql_query("INSERT INTO gauges (level) VALUES (5), (7)")
        .execute(&mut conn)
        .unwrap();
    diesel::sql_query("INSERT INTO counters (hits) VALUES (3)")
        .execute(&mut conn)
        .unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 1));
    assert!(wait_until(WAIT, || {
        let rows = stored(&mut conn, "gauge_channel");
        rows.len() == 2 && rows.iter().all(|row| row.last_error.is_some())
    }));
    handle.shutdown().unwrap();

    assert_eq!(effects(&mut conn)[0].handler, "counter_inserted");
    for failed in stored(&mut conn, "gauge_channel") {
        let error = failed.last_error.as_deref().unwrap();
        assert!(error.contains("'level'"), "{error}");
        assert!(error.contains("gauge_channel"), "{error}");
        assert!(error.contains("i32"), "{error}");
    }
}

#[test]
fn a_model_column_missing_from_the_table_leaves_its_notifications_untouched_until_it_exists() {
    let db = TestDb::new(SCHEMA);
    let handle = listener(&db);
    let mut conn = db.conn();
    diesel::sql_query("INSERT INTO notes (body) VALUES ('hello')")
        .execute(&mut conn)
        .unwrap();
    diesel::sql_query("INSERT INTO counters (hits) VALUES (1)")
        .execute(&mut conn)
        .unwrap();
    // Other channels keep flowing.
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 1));
    assert_eq!(effects(&mut conn)[0].handler, "counter_inserted");
    // The note channel's decode query cannot work (`notes.author` does not
    // exist): a fault of the channel, not of the notification, which stays
    // stored with no attempt counted.
    assert!(!wait_until(std::time::Duration::from_secs(1), || {
        stored(&mut conn, "note_channel")
            .first()
            .is_some_and(|row| row.attempts > 0)
    }));
    assert_eq!(stored(&mut conn, "note_channel").len(), 1);
    // The migration that adds the column arrives: the note is handled, with
    // the column's default, as the table's own old row reads it.
    diesel::sql_query("ALTER TABLE notes ADD COLUMN author text NOT NULL DEFAULT 'anonymous'")
        .execute(&mut conn)
        .unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn).len() == 2));
    handle.shutdown().unwrap();
    let note = effects(&mut conn).pop().unwrap();
    assert_eq!(note.handler, "note_inserted");
    assert_eq!(
        note.new,
        Some(json!({"body": "hello", "author": "anonymous"}))
    );
    assert!(stored(&mut conn, "note_channel").is_empty());
}
