//! A non-lockable trigger channel is a broadcast: every running listener runs
//! the handlers for every row, rows larger than NOTIFY's 8000-byte limit
//! included.

use std::sync::atomic::Ordering;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text};
use pgpubsub::Context;
use pgpubsub_tests::{count, wait_until, TestDb, WAIT};
use serde::Deserialize;
use serde_json::{json, Value};

diesel::table! {
    posts (id) {
        id -> BigInt,
        body -> Text,
    }
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug)]
#[diesel(table_name = posts)]
pub struct Post {
    pub id: i64,
    pub body: String,
}

#[pgpubsub::trigger_channel(model = Post)]
pub struct PostChannel;

const SCHEMA: &str = "
CREATE TABLE posts (id bigserial PRIMARY KEY, body text NOT NULL);
CREATE TABLE effects (
    id bigserial PRIMARY KEY,
    post_id bigint NOT NULL,
    body text NOT NULL,
    context jsonb NOT NULL,
    notification_id bigint
);
";

#[pgpubsub::post_insert_listener(PostChannel)]
fn post_inserted(new: Post, conn: &mut PgConnection, ctx: &Context) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO effects (post_id, body, context, notification_id) VALUES ($1, $2, $3, $4)",
    )
    .bind::<BigInt, _>(new.id)
    .bind::<Text, _>(&new.body)
    .bind::<Jsonb, _>(ctx.data().clone())
    .bind::<Nullable<BigInt>, _>(ctx.notification_id())
    .execute(conn)
    .map(drop)
}

/// Two listeners, both listening before anything is written.
fn two_listeners(db: &TestDb) -> [pgpubsub::ListenerHandle; 2] {
    let spawn = || {
        let handle = pgpubsub::Listener::new(db.url()).spawn().unwrap();
        assert!(handle.wait_listening(WAIT));
        handle
    };
    [spawn(), spawn()]
}

fn broadcasts(handle: &pgpubsub::ListenerHandle) -> u64 {
    handle.stats().broadcasts.load(Ordering::Relaxed)
}

#[test]
fn every_listener_runs_the_handler_for_every_row() {
    let db = TestDb::new(SCHEMA);
    let [first, second] = two_listeners(&db);
    let mut conn = db.conn();
    diesel::sql_query("INSERT INTO posts (body) SELECT 'post ' || i FROM generate_series(1, 5) i")
        .execute(&mut conn)
        .unwrap();
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM effects"
    ) == 10));
    assert!(wait_until(WAIT, || broadcasts(&first) == 5 && broadcasts(&second) == 5));
    first.shutdown().unwrap();
    second.shutdown().unwrap();
    // Each row twice: once per listener.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM (SELECT post_id FROM effects GROUP BY post_id HAVING count(*) = 2) twice"
        ),
        5
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM effects WHERE notification_id IS NOT NULL"
        ),
        0
    );
    // Nothing is stored for claiming.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification WHERE NOT broadcast"
        ),
        0
    );
}

#[test]
fn a_row_larger_than_8000_bytes_is_written_and_reaches_every_listener_whole() {
    let db = TestDb::new(SCHEMA);
    let [first, second] = two_listeners(&db);
    let mut conn = db.conn();
    let body: String = (0..20_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    diesel::sql_query("INSERT INTO posts (body) VALUES ($1)")
        .bind::<Text, _>(&body)
        .execute(&mut conn)
        .unwrap();
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM effects"
    ) == 2));
    first.shutdown().unwrap();
    second.shutdown().unwrap();
    #[derive(QueryableByName)]
    struct Body {
        #[diesel(sql_type = Text)]
        body: String,
    }
    let bodies: Vec<Body> = diesel::sql_query("SELECT body FROM effects")
        .load(&mut conn)
        .unwrap();
    assert_eq!(bodies.len(), 2);
    assert!(bodies.iter().all(|row| row.body == body));
}

#[test]
fn a_broadcast_carries_the_writer_context() {
    let db = TestDb::new(SCHEMA);
    let [first, second] = two_listeners(&db);
    let mut conn = db.conn();
    pgpubsub::with_context(&mut conn, &json!({"request_id": "b1"}), |conn| {
        diesel::sql_query("INSERT INTO posts (body) VALUES ('hello')").execute(conn)
    })
    .unwrap();
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM effects"
    ) == 2));
    first.shutdown().unwrap();
    second.shutdown().unwrap();
    #[derive(QueryableByName)]
    struct Ctx {
        #[diesel(sql_type = Jsonb)]
        context: Value,
    }
    let contexts: Vec<Value> = diesel::sql_query("SELECT context FROM effects")
        .load::<Ctx>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|row| row.context)
        .collect();
    assert_eq!(
        contexts,
        [json!({"request_id": "b1"}), json!({"request_id": "b1"})]
    );
}
