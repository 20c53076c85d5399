//! A lockable channel is handled exactly once even when several listener
//! processes (each with several worker sessions) compete for it.

use std::sync::atomic::Ordering;

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use pgpubsub_tests::{count, wait_until, TestDb, WAIT};
use serde::Deserialize;

diesel::table! {
    orders (id) {
        id -> BigInt,
        amount -> BigInt,
    }
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug)]
#[diesel(table_name = orders)]
pub struct Order {
    pub id: i64,
    pub amount: i64,
}

#[pgpubsub::trigger_channel(model = Order, lock_notifications)]
pub struct OrderChannel;

const SCHEMA: &str = "
CREATE TABLE orders (id bigserial PRIMARY KEY, amount bigint NOT NULL);
-- No unique constraint on purpose: a duplicate run must be countable.
CREATE TABLE effects (id bigserial PRIMARY KEY, order_id bigint NOT NULL);
";

#[pgpubsub::post_insert_listener(OrderChannel)]
fn order_inserted(new: Order, conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO effects (order_id) VALUES ($1)")
        .bind::<BigInt, _>(new.id)
        .execute(conn)
        .map(drop)
}

const ROWS: i64 = 10_000;

#[test]
fn ten_thousand_rows_are_each_handled_once_by_two_competing_listeners() {
    let db = TestDb::new(SCHEMA);
    // Two listeners, like two processes: 2 + 2 worker sessions.
    let spawn = || {
        let handle = pgpubsub::Listener::new(db.url())
            .workers(2)
            .batch_size(10)
            .spawn()
            .unwrap();
        assert!(handle.wait_listening(WAIT));
        handle
    };
    let first = spawn();
    let second = spawn();
    let mut conn = db.conn();
    diesel::sql_query(format!(
        "INSERT INTO orders (amount) SELECT i FROM generate_series(1, {ROWS}) i"
    ))
    .execute(&mut conn)
    .unwrap();
    assert!(wait_until(WAIT * 3, || {
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification") == 0
    }));
    let completed =
        [&first, &second].map(|handle| handle.stats().completed.load(Ordering::Relaxed));
    first.shutdown().unwrap();
    second.shutdown().unwrap();

    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM effects"), ROWS);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(DISTINCT order_id) AS n FROM effects"
        ),
        ROWS
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM effects e JOIN orders o ON o.id = e.order_id"
        ),
        ROWS
    );
    assert_eq!(completed.iter().sum::<u64>(), ROWS as u64, "{completed:?}");
    // Both listeners took part: the claims really competed.
    assert!(completed.iter().all(|&n| n > 0), "{completed:?}");
}
