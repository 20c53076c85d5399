//! No payload can stop a worker: stored notifications that cannot be parsed
//! or decoded, or that are malformed, fail alone with an error naming the
//! channel, the notification and the column, and are kept (not retried, not
//! deleted), while good notifications on every channel keep flowing.

use std::sync::atomic::{AtomicU64, Ordering};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Int4, Nullable, Text};
use pgpubsub_tests::{count, spawn_listening, wait_until, TestDb, WAIT};
use serde::{Deserialize, Serialize};

diesel::table! {
    items (id) {
        id -> BigInt,
        n -> Int4,
        label -> Text,
    }
}

#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = items)]
pub struct Item {
    pub id: i64,
    pub n: i32,
    pub label: String,
}

#[pgpubsub::trigger_channel(model = Item, lock_notifications)]
pub struct ItemChannel;

static ITEMS: AtomicU64 = AtomicU64::new(0);
static ORDERS: AtomicU64 = AtomicU64::new(0);

#[pgpubsub::post_save_listener(ItemChannel)]
fn item_saved(new: Item) {
    assert!(new.n >= 0);
    ITEMS.fetch_add(1, Ordering::SeqCst);
}

#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct OrderPlaced {
    order_id: i64,
}

#[pgpubsub::listener(OrderPlaced)]
fn order_placed(msg: OrderPlaced) {
    assert!(msg.order_id >= 0);
    ORDERS.fetch_add(1, Ordering::SeqCst);
}

const SCHEMA: &str = "
CREATE TABLE items (id bigserial PRIMARY KEY, n integer NOT NULL, label text NOT NULL);
CREATE TABLE tasks (id bigserial PRIMARY KEY, owner text);
CREATE TABLE parcels (id bigserial PRIMARY KEY, weight integer NOT NULL);
CREATE TABLE shelves (id bigserial PRIMARY KEY, label text NOT NULL, legacy integer);
";

#[derive(QueryableByName, Debug)]
struct Kept {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Int4)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Bool)]
    parked: bool,
}

fn kept(conn: &mut PgConnection) -> Vec<Kept> {
    diesel::sql_query(
        "SELECT id, attempts, last_error, (available_at = 'infinity' AND dead_at IS NOT NULL) AS parked \
         FROM pgpubsub_notification ORDER BY id",
    )
    .load(conn)
    .unwrap()
}

/// Writes a raw stored notification, as a buggy or hostile writer could.
fn store(conn: &mut PgConnection, channel: &str, payload: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    diesel::sql_query(
        "INSERT INTO pgpubsub_notification (channel, payload) VALUES ($1, $2::jsonb) RETURNING id",
    )
    .bind::<Text, _>(channel)
    .bind::<Text, _>(payload)
    .get_result::<Id>(conn)
    .unwrap()
    .id
}

#[test]
fn bad_payloads_fail_alone_and_good_ones_on_every_channel_are_handled() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    let item = "item_channel";
    let order = "order_placed";
    // Poison first, so every claim meets it before the good rows.
    let bad = [
        (
            store(
                &mut conn,
                item,
                r#"{"new": {"id": 1, "n": 1, "label": "x"}}"#,
            ),
            vec!["no `op`"],
        ),
        (
            store(&mut conn, item, r#"{"op": "TRUNCATE", "new": {"id": 1}}"#),
            vec!["unknown `op`", "TRUNCATE"],
        ),
        (
            store(
                &mut conn,
                item,
                r#"{"op": "UPDATE", "new": {"id": 1, "n": 1, "label": "x"}}"#,
            ),
            vec!["UPDATE has no `old` row"],
        ),
        (
            store(
                &mut conn,
                item,
                r#"{"op": "INSERT", "new": "not an object"}"#,
            ),
            vec!["INSERT has no `new` row"],
        ),
        (
            store(
                &mut conn,
                item,
                r#"{"op": "INSERT", "new": {"id": 2, "n": "abc", "label": "x"}}"#,
            ),
            vec!["column `n`", "integer", "abc"],
        ),
        (
            // A value no client-side JSON parser reads as a number.
            store(
                &mut conn,
                item,
                r#"{"op": "INSERT", "new": {"id": 3, "n": 1e400, "label": "x"}}"#,
            ),
            vec!["column `n`", "out of range"],
        ),
        (
            store(
                &mut conn,
                item,
                r#"{"op": "INSERT", "new": {"id": 4, "label": "x"}}"#,
            ),
            vec!["`n`", "not in the payload"],
        ),
        (
            store(
                &mut conn,
                item,
                r#"{"op": "INSERT", "new": {"id": 5, "n": 1, "label": "x"}, "context": {"big": 1e400}}"#,
            ),
            vec!["context"],
        ),
        (
            store(&mut conn, order, r#"{"app": "x"}"#),
            vec!["no `message`"],
        ),
        (
            store(&mut conn, order, r#"{"message": {"order_id": "seven"}}"#),
            vec!["order_id"],
        ),
        (
            store(&mut conn, order, r#"{"message": {"order_id": 1e400}}"#),
            vec!["order_id"],
        ),
    ];
    diesel::sql_query(
        "INSERT INTO items (n, label) SELECT i, 'item ' || i FROM generate_series(1, 500) AS i",
    )
    .execute(&mut conn)
    .unwrap();
    for order_id in 0..500 {
        pgpubsub::notify(&mut conn, &OrderPlaced { order_id }).unwrap();
    }

    let handle = spawn_listening(pgpubsub::Listener::new(db.url()).workers(2));
    assert!(wait_until(WAIT, || {
        ITEMS.load(Ordering::SeqCst) == 500 && ORDERS.load(Ordering::SeqCst) == 500
    }));
    assert!(wait_until(WAIT, || kept(&mut conn)
        .iter()
        .all(|row| row.last_error.is_some())));
    handle.shutdown().unwrap();

    let kept = kept(&mut conn);
    assert_eq!(kept.len(), bad.len(), "{kept:#?}");
    for ((id, fragments), row) in bad.iter().zip(&kept) {
        assert_eq!(row.id, *id);
        assert_eq!(row.attempts, 1, "{row:?}");
        assert!(row.parked, "a permanent error is not retried: {row:?}");
        let error = row.last_error.as_deref().unwrap_or_default();
        for fragment in fragments {
            assert!(error.contains(fragment), "`{fragment}` not in: {error}");
        }
    }
    for row in &kept[4..8] {
        let error = row.last_error.as_deref().unwrap_or_default();
        assert!(
            error.contains(&format!("notification {}", row.id)),
            "{error}"
        );
        assert!(error.contains("item_channel"), "{error}");
    }
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        bad.len() as i64
    );
}

diesel::table! {
    tasks (id) {
        id -> BigInt,
        owner -> Text,
    }
}

/// `owner` became NOT NULL after a backfill: old rows of the backfill's
/// UPDATE have it NULL, which this model cannot hold.
#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = tasks)]
pub struct Task {
    pub id: i64,
    pub owner: String,
}

#[pgpubsub::trigger_channel(model = Task, lock_notifications)]
pub struct TaskChannel;

static TASK_UPDATES: AtomicU64 = AtomicU64::new(0);

#[pgpubsub::post_update_listener(TaskChannel)]
fn task_updated(new: Task) {
    assert!(!new.owner.is_empty());
    TASK_UPDATES.fetch_add(1, Ordering::SeqCst);
}

#[pgpubsub::post_delete_listener(TaskChannel)]
fn task_deleted(old: Task) {
    assert!(old.id > 0);
}

#[test]
fn a_row_no_handler_of_the_operation_takes_is_not_decoded() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        "ALTER TABLE tasks DISABLE TRIGGER USER; \
         INSERT INTO tasks (owner) SELECT NULL FROM generate_series(1, 3); \
         ALTER TABLE tasks ENABLE TRIGGER USER; \
         UPDATE tasks SET owner = 'backfilled'; \
         ALTER TABLE tasks ALTER COLUMN owner SET NOT NULL;",
    )
    .unwrap();
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()).channels(["task_channel"]));
    // The UPDATEs' `old` rows hold a NULL `owner`, but only the delete
    // handler takes `old`: the update handler runs for each.
    assert!(wait_until(WAIT, || TASK_UPDATES.load(Ordering::SeqCst) == 3));
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM pgpubsub_notification WHERE channel = 'task_channel'"
    ) == 0));
    handle.shutdown().unwrap();
}

diesel::table! {
    parcels (id) {
        id -> BigInt,
        weight -> Int4,
    }
}

#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = parcels)]
pub struct Parcel {
    pub id: i64,
    pub weight: i32,
}

#[pgpubsub::trigger_channel(model = Parcel, lock_notifications)]
pub struct ParcelChannel;

static PARCELS: AtomicU64 = AtomicU64::new(0);

#[pgpubsub::post_insert_listener(ParcelChannel)]
fn parcel_inserted(new: Parcel) {
    assert!(new.weight > 0);
    PARCELS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn a_decode_query_that_fails_for_the_whole_channel_records_nothing_and_recovers() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    diesel::sql_query("INSERT INTO parcels (weight) SELECT i FROM generate_series(1, 5) AS i")
        .execute(&mut conn)
        .unwrap();
    // A deploy in progress: the table is briefly not where the model says.
    diesel::sql_query("ALTER TABLE parcels RENAME TO parcels_moving")
        .execute(&mut conn)
        .unwrap();
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()).channels(["parcel_channel"]));
    // Give the worker time to meet the broken channel.
    assert!(!wait_until(std::time::Duration::from_secs(2), || {
        kept(&mut conn)
            .iter()
            .any(|row| row.attempts > 0 || row.parked)
    }));
    let untouched = kept(&mut conn);
    assert_eq!(untouched.len(), 5);
    assert!(
        untouched.iter().all(|row| row.attempts == 0 && !row.parked),
        "{untouched:?}"
    );
    assert_eq!(PARCELS.load(Ordering::SeqCst), 0);
    diesel::sql_query("ALTER TABLE parcels_moving RENAME TO parcels")
        .execute(&mut conn)
        .unwrap();
    // The channel is tried again and every notification is handled.
    assert!(wait_until(WAIT, || kept(&mut conn).is_empty()));
    handle.shutdown().unwrap();
    assert_eq!(PARCELS.load(Ordering::SeqCst), 5);
}

diesel::table! {
    /// The model does not select `legacy`.
    shelves (id) {
        id -> BigInt,
        label -> Text,
    }
}

#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = shelves)]
pub struct Shelf {
    pub id: i64,
    pub label: String,
}

#[pgpubsub::trigger_channel(model = Shelf, lock_notifications)]
pub struct ShelfChannel;

static SHELVES_SAVED: AtomicU64 = AtomicU64::new(0);
static SHELVES_DELETED: AtomicU64 = AtomicU64::new(0);

#[pgpubsub::post_save_listener(ShelfChannel)]
fn shelf_saved(new: Shelf) {
    assert!(!new.label.is_empty());
    SHELVES_SAVED.fetch_add(1, Ordering::SeqCst);
}

#[pgpubsub::post_delete_listener(ShelfChannel)]
fn shelf_deleted() {
    SHELVES_DELETED.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn inserts_and_deletes_decode_in_one_query_and_unselected_columns_are_not_read() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        "INSERT INTO shelves (label) SELECT 'shelf ' || i FROM generate_series(1, 50) AS i; \
         DELETE FROM shelves WHERE id % 2 = 0;",
    )
    .unwrap();
    // A column the model does not select, whose stored text no longer
    // parses as its (changed) type: it must not matter.
    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        "UPDATE pgpubsub_notification \
         SET payload = jsonb_set(payload, '{new,legacy}', '\"not a number\"') \
         WHERE channel = 'shelf_channel' AND payload ->> 'op' = 'INSERT';",
    )
    .unwrap();
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()).channels(["shelf_channel"]));
    assert!(wait_until(WAIT, || {
        SHELVES_SAVED.load(Ordering::SeqCst) == 50 && SHELVES_DELETED.load(Ordering::SeqCst) == 25
    }));
    assert!(wait_until(WAIT, || kept(&mut conn).is_empty()));
    // Deletes carry no `new` row; none of this made a batch fall back.
    assert_eq!(handle.stats().careful_claims.load(Ordering::SeqCst), 0);
    handle.shutdown().unwrap();
}
