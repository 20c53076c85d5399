//! Notifications written before the table changed, decoded by code written
//! after: an added nullable column decodes as `None`, a column added with a
//! default reads as the table's existing rows read it, a dropped column is
//! ignored, and a renamed column is a permanent error naming the column and
//! both schema versions, unless the channel's `upgrade` hook renames it.

use std::sync::Mutex;

use diesel::prelude::*;
use diesel::sql_types::{Bool, Int4, Nullable, Text};
use pgpubsub_tests::{spawn_listening, wait_until, TestDb, WAIT};

diesel::table! {
    docs (id) {
        id -> BigInt,
        title -> Text,
        note -> Nullable<Text>,
        pages -> Int4,
    }
}

/// The model after the migration: `note` and `pages` were added.
#[derive(Queryable, Selectable, Identifiable, Debug, Clone, PartialEq)]
#[diesel(table_name = docs)]
pub struct Doc {
    pub id: i64,
    pub title: String,
    pub note: Option<String>,
    pub pages: i32,
}

#[pgpubsub::trigger_channel(model = Doc, lock_notifications)]
pub struct DocChannel;

diesel::table! {
    books (id) {
        id -> BigInt,
        name -> Text,
    }
}

/// The model after `title` was renamed `name`.
#[derive(Queryable, Selectable, Identifiable, Debug, Clone, PartialEq)]
#[diesel(table_name = books)]
pub struct Book {
    pub id: i64,
    pub name: String,
}

#[pgpubsub::trigger_channel(model = Book, lock_notifications)]
pub struct BookChannel;

diesel::table! {
    albums (id) {
        id -> BigInt,
        name -> Text,
    }
}

/// Like `Book`, with an upgrade hook for payloads written before the rename.
#[derive(Queryable, Selectable, Identifiable, Debug, Clone, PartialEq)]
#[diesel(table_name = albums)]
pub struct Album {
    pub id: i64,
    pub name: String,
}

#[pgpubsub::trigger_channel(
    model = Album,
    lock_notifications,
    upgrade = "CASE WHEN row_json ? 'title' \
               THEN row_json - 'title' || jsonb_build_object('name', row_json -> 'title') \
               ELSE row_json END"
)]
pub struct AlbumChannel;

diesel::table! {
    cards (id) {
        id -> BigInt,
        meta -> Nullable<Json>,
    }
}

/// A `json` column added with a default, on a channel with an upgrade hook.
#[derive(Queryable, Selectable, Identifiable, Debug, Clone, PartialEq)]
#[diesel(table_name = cards)]
pub struct Card {
    pub id: i64,
    pub meta: Option<serde_json::Value>,
}

#[pgpubsub::trigger_channel(model = Card, lock_notifications, upgrade = "row_json")]
pub struct CardChannel;

static CARDS: Mutex<Vec<Card>> = Mutex::new(Vec::new());

#[pgpubsub::post_insert_listener(CardChannel)]
fn card_inserted(new: Card) {
    CARDS.lock().unwrap().push(new);
}

static DOCS: Mutex<Vec<Doc>> = Mutex::new(Vec::new());
static BOOKS: Mutex<Vec<Book>> = Mutex::new(Vec::new());
static ALBUMS: Mutex<Vec<Album>> = Mutex::new(Vec::new());

#[pgpubsub::post_insert_listener(DocChannel)]
fn doc_inserted(new: Doc) {
    DOCS.lock().unwrap().push(new);
}

#[pgpubsub::post_insert_listener(BookChannel)]
fn book_inserted(new: Book) {
    BOOKS.lock().unwrap().push(new);
}

#[pgpubsub::post_insert_listener(AlbumChannel)]
fn album_inserted(new: Album) {
    ALBUMS.lock().unwrap().push(new);
}

/// The tables as they were when the notifications were written.
const BEFORE: &str = "
CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, obsolete text);
CREATE TABLE books (id bigint PRIMARY KEY, title text NOT NULL);
CREATE TABLE albums (id bigint PRIMARY KEY, title text NOT NULL);
CREATE TABLE cards (id bigint PRIMARY KEY);
";

/// The migration the new code comes with.
const AFTER: &str = "
ALTER TABLE docs ADD COLUMN note text;
ALTER TABLE docs ADD COLUMN pages integer NOT NULL DEFAULT 1;
ALTER TABLE docs DROP COLUMN obsolete;
ALTER TABLE books RENAME COLUMN title TO name;
ALTER TABLE albums RENAME COLUMN title TO name;
ALTER TABLE cards ADD COLUMN meta json DEFAULT '{\"d\": 1}';
";

const LATER_VERSION: &str = "2000-01-02-000000";

fn write_then_migrate(db: &TestDb, writes: &str) {
    let mut conn = db.conn();
    diesel::connection::SimpleConnection::batch_execute(&mut conn, writes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let migration = dir.path().join(format!("{LATER_VERSION}_evolve"));
    std::fs::create_dir_all(&migration).unwrap();
    std::fs::write(migration.join("up.sql"), AFTER).unwrap();
    std::fs::write(migration.join("down.sql"), "SELECT 1;").unwrap();
    db.migrate(dir.path());
}

#[test]
fn added_and_dropped_columns_decode_like_the_tables_existing_rows() {
    let db = TestDb::new(BEFORE);
    write_then_migrate(
        &db,
        "INSERT INTO docs (id, title, obsolete) VALUES (1, 'before', 'gone');",
    );
    let mut conn = db.conn();
    diesel::sql_query("INSERT INTO docs (id, title, note, pages) VALUES (2, 'after', 'n', 7)")
        .execute(&mut conn)
        .unwrap();
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()).channels(["doc_channel"]));
    assert!(wait_until(WAIT, || DOCS.lock().unwrap().len() == 2));
    handle.shutdown().unwrap();

    let mut received = DOCS.lock().unwrap().clone();
    received.sort_by_key(|doc| doc.id);
    let loaded: Vec<Doc> = docs::table
        .order(docs::id)
        .select(Doc::as_select())
        .load(&mut conn)
        .unwrap();
    // The row written before the migration reads `note` as NULL and `pages`
    // as the default, exactly as the table's own old row does.
    assert_eq!(received, loaded);
    assert_eq!(
        received[0],
        Doc {
            id: 1,
            title: "before".into(),
            note: None,
            pages: 1
        }
    );
}

#[derive(QueryableByName, Debug)]
struct Kept {
    #[diesel(sql_type = Int4)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Bool)]
    parked: bool,
}

#[test]
fn a_renamed_column_is_a_permanent_error_naming_the_column_and_both_versions() {
    let db = TestDb::new(BEFORE);
    write_then_migrate(&db, "INSERT INTO books (id, title) VALUES (1, 'Dune');");
    let mut conn = db.conn();
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()).channels(["book_channel"]));
    let stored = |conn: &mut PgConnection| -> Vec<Kept> {
        diesel::sql_query(
            "SELECT attempts, last_error, (available_at = 'infinity' AND dead_at IS NOT NULL) AS parked \
             FROM pgpubsub_notification WHERE channel = 'book_channel'",
        )
        .load(conn)
        .unwrap()
    };
    assert!(wait_until(WAIT, || stored(&mut conn)
        .first()
        .is_some_and(|row| row.last_error.is_some())));
    handle.shutdown().unwrap();

    assert!(BOOKS.lock().unwrap().is_empty());
    let kept = stored(&mut conn);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].attempts, 1);
    assert!(kept[0].parked, "not retried: {kept:?}");
    let error = kept[0].last_error.as_deref().unwrap();
    for fragment in [
        "`name`",
        "not in the payload",
        // Diesel records versions without the dashes.
        "written at db_version 20000101000001",
        "now 20000102000000",
        "`title`",
        "upgrade",
    ] {
        assert!(error.contains(fragment), "`{fragment}` not in: {error}");
    }
}

#[test]
fn the_upgrade_hook_rewrites_old_payloads_before_they_are_decoded() {
    let db = TestDb::new(BEFORE);
    write_then_migrate(&db, "INSERT INTO albums (id, title) VALUES (1, 'Blue');");
    let mut conn = db.conn();
    diesel::sql_query("INSERT INTO albums (id, name) VALUES (2, 'Red')")
        .execute(&mut conn)
        .unwrap();
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()).channels(["album_channel"]));
    assert!(wait_until(WAIT, || ALBUMS.lock().unwrap().len() == 2));
    handle.shutdown().unwrap();

    let mut received = ALBUMS.lock().unwrap().clone();
    received.sort_by_key(|album| album.id);
    let loaded: Vec<Album> = albums::table
        .order(albums::id)
        .select(Album::as_select())
        .load(&mut conn)
        .unwrap();
    assert_eq!(received, loaded);
    assert_eq!(received[0].name, "Blue");
}

#[test]
fn json_written_after_a_json_column_was_added_with_a_default_keeps_its_exact_value() {
    let db = TestDb::new(BEFORE);
    write_then_migrate(&db, "SELECT 1;");
    let mut conn = db.conn();
    // What the trigger of the code before the column wrote (the trigger of
    // this code reads `meta`, which did not exist yet).
    diesel::sql_query(
        "INSERT INTO pgpubsub_notification (channel, payload, db_version) \
         VALUES ('card_channel', '{\"op\": \"INSERT\", \"new\": {\"id\": 1}}', '20000101000001')",
    )
    .execute(&mut conn)
    .unwrap();

    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        "INSERT INTO cards (id, meta) VALUES (2, '{\"x\": 1e2}'), (3, 'null'), (4, NULL);",
    )
    .unwrap();
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()).channels(["card_channel"]));
    assert!(wait_until(WAIT, || CARDS.lock().unwrap().len() == 4));
    handle.shutdown().unwrap();

    let mut received = CARDS.lock().unwrap().clone();
    received.sort_by_key(|card| card.id);
    let mut loaded: Vec<Card> = cards::table
        .order(cards::id)
        .select(Card::as_select())
        .load(&mut conn)
        .unwrap();
    // Row 1 is not in the table (only its old notification is): it reads
    // the column's default, as an old row of the table would.
    loaded.insert(
        0,
        Card {
            id: 1,
            meta: Some(serde_json::json!({"d": 1})),
        },
    );
    assert_eq!(received, loaded);
    assert_eq!(received[0].meta, Some(serde_json::json!({"d": 1})));
    assert_eq!(received[2].meta, Some(serde_json::Value::Null));
    assert_eq!(received[3].meta, None);
}
