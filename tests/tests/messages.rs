//! Application messages sent with `notify()`: a lockable message channel is
//! really processed (django-pgpubsub #84), follows the sender's transaction,
//! survives a listener being down, and a message sent from a handler is
//! picked up at once (django-pgpubsub #83).

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int4, Jsonb, Nullable, Text};
use pgpubsub_tests::{count, spawn_listening, wait_until, TestDb, WAIT};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct PostReads {
    post_id: i64,
    reads: i32,
}

#[pgpubsub::listener(PostReads)]
fn count_reads(
    msg: PostReads,
    conn: &mut PgConnection,
    ctx: &pgpubsub::Context,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO reads (post_id, reads, context, notification_id) VALUES ($1, $2, $3, $4)",
    )
    .bind::<BigInt, _>(msg.post_id)
    .bind::<Int4, _>(msg.reads)
    .bind::<Jsonb, _>(ctx.data().clone())
    .bind::<Nullable<BigInt>, _>(ctx.notification_id())
    .execute(conn)
    .map(drop)
}

/// Sent by a handler of `UploadDone`.
#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct ScanRequested {
    upload_id: i64,
}

#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct UploadDone {
    upload_id: i64,
}

#[pgpubsub::listener(UploadDone)]
fn request_scan(msg: UploadDone, conn: &mut PgConnection) -> pgpubsub::Result<()> {
    pgpubsub::notify(
        conn,
        &ScanRequested {
            upload_id: msg.upload_id,
        },
    )
}

#[pgpubsub::listener(ScanRequested)]
fn scan(msg: ScanRequested, conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO scans (upload_id) VALUES ($1)")
        .bind::<BigInt, _>(msg.upload_id)
        .execute(conn)
        .map(drop)
}

/// A broadcast message channel.
#[pgpubsub::channel]
#[derive(Serialize, Deserialize)]
struct Announcement {
    text: String,
}

#[pgpubsub::listener(Announcement)]
fn announce(msg: Announcement, conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO announcements (text) VALUES ($1)")
        .bind::<Text, _>(&msg.text)
        .execute(conn)
        .map(drop)
}

const SCHEMA: &str = "
CREATE TABLE reads (
    id bigserial PRIMARY KEY,
    post_id bigint NOT NULL,
    reads int NOT NULL,
    context jsonb NOT NULL,
    notification_id bigint
);
CREATE TABLE scans (id bigserial PRIMARY KEY, upload_id bigint NOT NULL);
CREATE TABLE announcements (id bigserial PRIMARY KEY, text text NOT NULL);
";

#[derive(QueryableByName, Debug, PartialEq)]
struct Read {
    #[diesel(sql_type = BigInt)]
    post_id: i64,
    #[diesel(sql_type = Int4)]
    reads: i32,
    #[diesel(sql_type = Jsonb)]
    context: Value,
    #[diesel(sql_type = Nullable<BigInt>)]
    notification_id: Option<i64>,
}

fn reads(conn: &mut PgConnection) -> Vec<Read> {
    diesel::sql_query("SELECT post_id, reads, context, notification_id FROM reads ORDER BY id")
        .load(conn)
        .unwrap()
}

fn post_ids(conn: &mut PgConnection) -> Vec<i64> {
    reads(conn).into_iter().map(|read| read.post_id).collect()
}

fn send_reads(conn: &mut PgConnection, post_id: i64, reads: i32) {
    pgpubsub::notify(conn, &PostReads { post_id, reads }).unwrap();
}

#[test]
fn a_lockable_message_is_processed() {
    let db = TestDb::new(SCHEMA);
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()));
    let mut conn = db.conn();
    send_reads(&mut conn, 7, 3);
    assert!(wait_until(WAIT, || reads(&mut conn).len() == 1));
    handle.shutdown().unwrap();
    let read = &reads(&mut conn)[0];
    assert_eq!((read.post_id, read.reads), (7, 3));
    assert_eq!(read.context, json!({}));
    assert!(read.notification_id.is_some());
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
}

#[test]
fn a_message_sent_while_no_listener_runs_is_processed_when_one_starts() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    send_reads(&mut conn, 1, 10);
    send_reads(&mut conn, 2, 20);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        2
    );
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()));
    assert!(wait_until(WAIT, || reads(&mut conn).len() == 2));
    handle.shutdown().unwrap();
    assert_eq!(post_ids(&mut conn), [1, 2]);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
}

#[test]
fn a_message_sent_in_a_rolled_back_transaction_is_never_processed() {
    let db = TestDb::new(SCHEMA);
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()));
    let mut conn = db.conn();
    let rolled_back = conn.transaction::<(), _, _>(|conn| {
        send_reads(conn, 666, 1);
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert!(rolled_back.is_err());
    send_reads(&mut conn, 1, 1);
    assert!(wait_until(WAIT, || post_ids(&mut conn) == [1]));
    handle.shutdown().unwrap();
    assert_eq!(post_ids(&mut conn), [1]);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
}

#[test]
fn a_message_is_delivered_only_when_the_sending_transaction_commits() {
    let db = TestDb::new(SCHEMA);
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()));
    let mut writer = db.conn();
    let mut conn = db.conn();
    writer
        .transaction::<_, diesel::result::Error, _>(|writer| {
            send_reads(writer, 2, 1);
            send_reads(&mut conn, 1, 1);
            assert!(wait_until(WAIT, || post_ids(&mut conn) == [1]));
            assert_eq!(post_ids(&mut conn), [1]);
            Ok(())
        })
        .unwrap();
    assert!(wait_until(WAIT, || post_ids(&mut conn) == [1, 2]));
    handle.shutdown().unwrap();
}

#[test]
fn a_message_carries_the_sender_context() {
    let db = TestDb::new(SCHEMA);
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()));
    let mut conn = db.conn();
    pgpubsub::with_context(&mut conn, &json!({"request_id": "m1"}), |conn| {
        pgpubsub::notify(
            conn,
            &PostReads {
                post_id: 5,
                reads: 1,
            },
        )
    })
    .unwrap();
    assert!(wait_until(WAIT, || reads(&mut conn).len() == 1));
    handle.shutdown().unwrap();
    assert_eq!(reads(&mut conn)[0].context, json!({"request_id": "m1"}));
}

#[test]
fn a_stored_message_that_does_not_decode_is_kept_with_the_field_named() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    // What an older or foreign sender might have written.
    diesel::sql_query(
        "SELECT pgpubsub_notification_send('post_reads', true, '{\"message\": {\"post_id\": \"seven\", \"reads\": 1}}')",
    )
    .execute(&mut conn)
    .unwrap();
    send_reads(&mut conn, 8, 1);
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()));
    assert!(wait_until(WAIT, || post_ids(&mut conn) == [8]));
    assert!(wait_until(WAIT, || {
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification WHERE attempts >= 1 AND last_error IS NOT NULL",
        ) == 1
    }));
    handle.shutdown().unwrap();
    #[derive(QueryableByName)]
    struct Failed {
        #[diesel(sql_type = Nullable<Text>)]
        last_error: Option<String>,
    }
    let failed: Vec<Failed> = diesel::sql_query("SELECT last_error FROM pgpubsub_notification")
        .load(&mut conn)
        .unwrap();
    assert_eq!(failed.len(), 1);
    let error = failed[0].last_error.as_deref().unwrap();
    assert!(
        error.contains("post_id") && error.contains("PostReads"),
        "{error}"
    );
}

#[test]
fn a_message_sent_by_a_handler_is_handled_without_waiting_for_a_poll() {
    let db = TestDb::new(SCHEMA);
    // Polling alone would take a minute, far beyond WAIT: only the wake-up
    // of the handler's own notification can explain prompt handling.
    let handle =
        spawn_listening(pgpubsub::Listener::new(db.url()).poll_interval(Duration::from_secs(60)));
    let mut conn = db.conn();
    pgpubsub::notify(&mut conn, &UploadDone { upload_id: 42 }).unwrap();
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM scans WHERE upload_id = 42"
    ) == 1));
    handle.shutdown().unwrap();
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
}

#[test]
fn a_message_sent_by_a_handler_wakes_an_idle_listener_of_its_channel() {
    let db = TestDb::new(SCHEMA);
    // The scanning listener only polls once a minute and never claims
    // uploads itself: only the NOTIFY of the handler's commit can wake it.
    let scanner = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .channels([<ScanRequested as pgpubsub::Channel>::NAME])
            .poll_interval(Duration::from_secs(60)),
    );
    let uploads = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .channels([<UploadDone as pgpubsub::Channel>::NAME])
            .poll_interval(Duration::from_secs(60)),
    );
    let mut conn = db.conn();
    pgpubsub::notify(&mut conn, &UploadDone { upload_id: 7 }).unwrap();
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM scans WHERE upload_id = 7"
    ) == 1));
    uploads.shutdown().unwrap();
    scanner.shutdown().unwrap();
}

#[test]
fn a_broadcast_message_reaches_every_listener() {
    let db = TestDb::new(SCHEMA);
    let first = spawn_listening(pgpubsub::Listener::new(db.url()));
    let second = spawn_listening(pgpubsub::Listener::new(db.url()));
    let mut conn = db.conn();
    pgpubsub::notify(
        &mut conn,
        &Announcement {
            text: "hello".into(),
        },
    )
    .unwrap();
    let large = "x".repeat(10_000);
    pgpubsub::notify(
        &mut conn,
        &Announcement {
            text: large.clone(),
        },
    )
    .unwrap();
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM announcements"
    ) == 4));
    first.shutdown().unwrap();
    second.shutdown().unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM announcements WHERE text = 'hello'"
        ),
        2
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM announcements WHERE text = repeat('x', 10000)"
        ),
        2
    );
}

/// Numbers a JSON parser going through `f64` would change.
#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Extremes {
    seq: i64,
    u64_max: u64,
    i64_min: i64,
    i128_min: i128,
    u128_max: u128,
    floats: Vec<f64>,
    decimal: bigdecimal::BigDecimal,
    big_decimal: bigdecimal::BigDecimal,
}

/// The same, broadcast.
#[pgpubsub::channel]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct BroadcastExtremes {
    inner: Extremes,
}

static EXTREMES: std::sync::Mutex<Vec<Extremes>> = std::sync::Mutex::new(Vec::new());

#[pgpubsub::listener(Extremes)]
fn extremes(msg: Extremes) {
    EXTREMES.lock().unwrap().push(msg);
}

#[pgpubsub::listener(BroadcastExtremes)]
fn broadcast_extremes(msg: BroadcastExtremes) {
    EXTREMES.lock().unwrap().push(msg.inner);
}

fn extremes_message(seq: i64) -> Extremes {
    Extremes {
        seq,
        u64_max: u64::MAX,
        i64_min: i64::MIN,
        i128_min: i128::MIN,
        u128_max: u128::MAX,
        floats: vec![
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            f64::EPSILON,
            0.1 + 0.2,
            1.7e308,
            123_456_789.123_456_78,
        ],
        decimal: "123456789012345678901234567.891".parse().unwrap(),
        big_decimal: "-1.00000000000000000000000000001e400".parse().unwrap(),
    }
}

#[test]
fn message_numbers_arrive_exactly_as_sent() {
    let db = TestDb::new(SCHEMA);
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url()).channels(["extremes", "broadcast_extremes"]),
    );
    let mut conn = db.conn();
    pgpubsub::notify(&mut conn, &extremes_message(1)).unwrap();
    pgpubsub::notify(
        &mut conn,
        &BroadcastExtremes {
            inner: extremes_message(2),
        },
    )
    .unwrap();
    assert!(wait_until(WAIT, || EXTREMES.lock().unwrap().len() == 2));
    handle.shutdown().unwrap();

    let mut received = EXTREMES.lock().unwrap().clone();
    received.sort_by_key(|msg| msg.seq);
    for (msg, seq) in received.iter().zip([1, 2]) {
        let sent = extremes_message(seq);
        assert_eq!(msg, &sent);
        // Bit for bit, not merely `==`.
        let bits = |floats: &[f64]| floats.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&msg.floats), bits(&sent.floats));
        assert_eq!(msg.decimal.to_string(), sent.decimal.to_string());
    }
}

/// A message with no fields serializes to JSON `null`.
#[pgpubsub::channel]
#[derive(Serialize, Deserialize)]
struct CacheFlush;

static FLUSHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[pgpubsub::listener(CacheFlush)]
fn cache_flush(msg: CacheFlush) {
    let CacheFlush = msg;
    FLUSHES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn a_broadcast_unit_struct_message_is_handled() {
    let db = TestDb::new(SCHEMA);
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()).channels(["cache_flush"]));
    let mut conn = db.conn();
    pgpubsub::notify(&mut conn, &CacheFlush).unwrap();
    assert!(wait_until(WAIT, || FLUSHES
        .load(std::sync::atomic::Ordering::SeqCst)
        == 1));
    handle.shutdown().unwrap();
}

#[test]
fn notify_all_stores_many_messages_in_one_statement_in_order_with_the_senders_context() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    let batch: Vec<PostReads> = (1..=1000)
        .map(|post_id| PostReads { post_id, reads: 1 })
        .collect();
    let sent = conn
        .transaction(|conn| {
            pgpubsub::with_context(conn, &json!({"producer": "bulk"}), |conn| {
                pgpubsub::notify_all(conn, &batch)
            })
        })
        .unwrap();
    assert_eq!(sent, 1000);
    // Stored in the order given: ids ascend with the messages.
    #[derive(QueryableByName)]
    struct Stored {
        #[diesel(sql_type = BigInt)]
        post_id: i64,
    }
    let stored: Vec<i64> = diesel::sql_query(
        "SELECT (payload -> 'message' ->> 'post_id')::bigint AS post_id FROM pgpubsub_notification ORDER BY id",
    )
    .load::<Stored>(&mut conn)
    .unwrap()
    .into_iter()
    .map(|row| row.post_id)
    .collect();
    assert_eq!(stored, (1..=1000).collect::<Vec<i64>>());

    let handle = spawn_listening(pgpubsub::Listener::new(db.url()));
    assert!(wait_until(WAIT, || reads(&mut conn).len() == 1000));
    handle.shutdown().unwrap();
    let mut seen = post_ids(&mut conn);
    seen.sort_unstable();
    assert_eq!(seen, (1..=1000).collect::<Vec<i64>>());
    assert!(reads(&mut conn)
        .iter()
        .all(|read| read.context == json!({"producer": "bulk"})));
}

#[test]
fn notify_all_of_nothing_sends_nothing_and_a_rolled_back_batch_is_never_processed() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    assert_eq!(
        pgpubsub::notify_all::<PostReads, _>(&mut conn, &[]).unwrap(),
        0
    );
    let rolled = conn.transaction(|conn| {
        pgpubsub::notify_all(
            conn,
            &[
                PostReads {
                    post_id: 1,
                    reads: 1,
                },
                PostReads {
                    post_id: 2,
                    reads: 1,
                },
            ],
        )?;
        Err::<(), _>(pgpubsub::Error::Transaction(
            diesel::result::Error::RollbackTransaction,
        ))
    });
    assert!(rolled.is_err());
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
}

#[test]
fn notify_all_on_a_broadcast_channel_reaches_the_listener_once_per_message() {
    let db = TestDb::new(SCHEMA);
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()).channels(["announcement"]));
    let mut conn = db.conn();
    let texts = ["one", "two", "three"];
    let messages: Vec<Announcement> = texts
        .iter()
        .map(|text| Announcement {
            text: (*text).to_owned(),
        })
        .collect();
    assert_eq!(pgpubsub::notify_all(&mut conn, &messages).unwrap(), 3);
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM announcements"
    ) == 3));
    std::thread::sleep(Duration::from_millis(300));
    handle.shutdown().unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(DISTINCT text) AS n FROM announcements"
        ),
        3
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM announcements"),
        3
    );
}
