//! The lease protocol (schema steps 0004 and 0005: the runtime calls step
//! 0005's `pgpubsub_notification_lease_batch`), driven in SQL against the real
//! server: one lease row per batch, never two leases of one notification,
//! reaping of leases whose session died, and chained leases that commit
//! (or roll back) with the handlers' transaction.

use std::collections::HashSet;
use std::sync::Mutex;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable};
use pgpubsub_tests::{count, TestDb};

const SCHEMA: &str = "CREATE TABLE unused (id bigserial PRIMARY KEY);";

#[derive(QueryableByName, Debug)]
struct Leased {
    #[diesel(sql_type = Nullable<BigInt>)]
    lease: Option<i64>,
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Integer)]
    attempt: i32,
    #[diesel(sql_type = Bool)]
    dead: bool,
}

#[derive(QueryableByName, Debug)]
struct Lease {
    #[diesel(sql_type = Nullable<BigInt>)]
    lease: Option<i64>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    ids: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    dead: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<Integer>>)]
    dead_attempts: Option<Vec<i32>>,
}

#[derive(QueryableByName)]
struct Attempt {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Integer)]
    attempt: i32,
}

/// A lease's one row as one row per notification, with the attempt about
/// to run (read after the lease, in the same transaction).
fn expand(conn: &mut PgConnection, lease: Lease) -> QueryResult<Vec<Leased>> {
    let ids = lease.ids.unwrap_or_default();
    let attempts: Vec<Attempt> = diesel::sql_query(
        "SELECT id, attempts + 1 AS attempt FROM pgpubsub_notification WHERE id = ANY($1) ORDER BY id",
    )
    .bind::<Array<BigInt>, _>(&ids)
    .load(conn)?;
    let mut rows: Vec<Leased> = attempts
        .into_iter()
        .map(|row| Leased {
            lease: lease.lease,
            id: row.id,
            attempt: row.attempt,
            dead: false,
        })
        .collect();
    assert_eq!(rows.len(), ids.len(), "every leased id exists");
    let dead = lease.dead.unwrap_or_default();
    let dead_attempts = lease.dead_attempts.unwrap_or_default();
    assert_eq!(dead.len(), dead_attempts.len());
    rows.extend(
        dead.into_iter()
            .zip(dead_attempts)
            .map(|(id, attempt)| Leased {
                lease: None,
                id,
                attempt,
                dead: true,
            }),
    );
    Ok(rows)
}

/// `pgpubsub_notification_lease_batch` with `$1` done ids, `$2` their lease
/// and `$3` the cursor, for channel `jobs`, 5 at a time.
const NEXT_SQL: &str =
    "SELECT lease, ids, dead, dead_attempts FROM pgpubsub_notification_lease_batch(\
                        $1, $2, false, 'jobs', NULL, 5, $3, 30, 25)";

fn next(conn: &mut PgConnection, ids: &[i64], lease: i64, cursor: i64) -> QueryResult<Vec<Leased>> {
    let mut rows: Vec<Lease> = diesel::sql_query(NEXT_SQL)
        .bind::<Array<BigInt>, _>(ids)
        .bind::<BigInt, _>(lease)
        .bind::<BigInt, _>(cursor)
        .load(conn)?;
    assert_eq!(rows.len(), 1, "a lease returns one row");
    expand(conn, rows.remove(0))
}

fn take(conn: &mut PgConnection, limit: i64, lease_secs: f64, max_attempts: i32) -> Vec<Leased> {
    let mut rows: Vec<Lease> = diesel::sql_query(
        "SELECT lease, ids, dead, dead_attempts \
         FROM pgpubsub_notification_lease_batch(NULL, NULL, true, 'jobs', NULL, $1, 0, $2, $3)",
    )
    .bind::<BigInt, _>(limit)
    .bind::<diesel::sql_types::Double, _>(lease_secs)
    .bind::<Integer, _>(max_attempts)
    .load(conn)
    .unwrap();
    assert_eq!(rows.len(), 1, "a lease returns one row");
    expand(conn, rows.remove(0)).unwrap()
}

fn store(conn: &mut PgConnection, n: i64) {
    diesel::sql_query(
        "INSERT INTO pgpubsub_notification (channel, payload) \
         SELECT 'jobs', jsonb_build_object('message', i) FROM generate_series(1, $1) AS i",
    )
    .bind::<BigInt, _>(n)
    .execute(conn)
    .unwrap();
}

fn complete(conn: &mut PgConnection, lease: i64, ids: &[i64]) {
    diesel::sql_query(
        "WITH done AS (DELETE FROM pgpubsub_notification WHERE id = ANY($1)) \
         DELETE FROM pgpubsub_notification_leases WHERE id = $2",
    )
    .bind::<Array<BigInt>, _>(ids)
    .bind::<BigInt, _>(lease)
    .execute(conn)
    .unwrap();
}

#[test]
fn four_sessions_leasing_one_channel_never_lease_a_notification_twice() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    store(&mut conn, 20_000);
    let seen = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let mut conn = db.conn();
                let mut mine = Vec::new();
                let mut empty = 0;
                while empty < 3 {
                    // Each lease commits on its own (as a listener's does,
                    // asynchronously); the batch is settled in a second
                    // transaction.
                    conn.batch_execute("SET synchronous_commit = off").unwrap();
                    let leased = take(&mut conn, 50, 30.0, 25);
                    if leased.is_empty() {
                        empty += 1;
                        continue;
                    }
                    let lease = leased[0].lease.unwrap();
                    assert!(leased
                        .iter()
                        .all(|row| row.lease == Some(lease) && !row.dead));
                    let ids: Vec<i64> = leased.iter().map(|row| row.id).collect();
                    conn.batch_execute("SET synchronous_commit = on").unwrap();
                    conn.transaction(|conn| {
                        complete(conn, lease, &ids);
                        QueryResult::Ok(())
                    })
                    .unwrap();
                    mine.extend(ids);
                }
                seen.lock().unwrap().extend(mine);
            });
        }
    });
    let seen = seen.into_inner().unwrap();
    let distinct: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(
        seen.len(),
        distinct.len(),
        "a notification was leased twice"
    );
    assert_eq!(distinct.len(), 20_000);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification_leases"
        ),
        0
    );
}

#[test]
fn a_lease_that_ran_out_unheld_is_reaped_its_attempt_counted_and_its_first_notification_leased_alone(
) {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    store(&mut conn, 5);
    // A lease whose session died: its deadline passes, nobody holds it.
    let first = take(&mut conn, 10, 0.05, 25);
    assert_eq!(first.len(), 5);
    assert!(first.iter().all(|row| row.attempt == 1));
    // Still leased: a second lease takes nothing.
    assert!(take(&mut conn, 10, 30.0, 25).is_empty());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let again = take(&mut conn, 10, 30.0, 25);
    assert_eq!(
        again.len(),
        1,
        "an interrupted notification is leased alone: {again:?}"
    );
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].attempt, 2, "the interrupted attempt is counted");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification \
             WHERE attempts = 1 AND interrupted_at IS NOT NULL \
               AND last_error LIKE 'attempt 1 did not finish before its lease ran out%'"
        ),
        5
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification_leases"
        ),
        1
    );
}

#[test]
fn a_lease_held_by_a_running_transaction_is_not_reaped_when_its_deadline_passes() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    store(&mut conn, 3);
    let leased = take(&mut conn, 10, 0.05, 25);
    let lease = leased[0].lease.unwrap();
    let ids: Vec<i64> = leased.iter().map(|row| row.id).collect();
    let mut running = db.conn();
    running.batch_execute("BEGIN").unwrap();
    let claimed = count(
        &mut running,
        &format!(
            // The claim query's lock: the lease row, in the handlers'
            // transaction.
            "SELECT count(*) AS n FROM pgpubsub_notification \
             WHERE id = ANY(ARRAY{ids:?}::bigint[]) AND id = ANY((SELECT l.ids FROM pgpubsub_notification_leases AS l WHERE l.id = {lease} FOR UPDATE)::bigint[])"
        ),
    );
    assert_eq!(claimed, 3);
    std::thread::sleep(std::time::Duration::from_millis(200));
    // A slow handler past its deadline: its batch is neither reaped nor
    // leased again.
    assert!(take(&mut conn, 10, 30.0, 25).is_empty());
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification WHERE attempts > 0"
        ),
        0
    );
    complete(&mut running, lease, &ids);
    running.batch_execute("COMMIT").unwrap();
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
}

#[test]
fn a_chained_lease_commits_with_the_handlers_transaction_and_rolls_back_with_it() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    store(&mut conn, 10);
    let first = take(&mut conn, 5, 30.0, 25);
    let lease = first[0].lease.unwrap();
    let ids: Vec<i64> = first.iter().map(|row| row.id).collect();
    let cursor = *ids.last().unwrap();
    // Rolled back: the first lease and its notifications are as they were,
    // and no second lease exists.
    let rolled = conn.transaction(|conn| {
        let next = next(conn, &ids, lease, cursor)?;
        assert_eq!(next.len(), 5);
        QueryResult::<()>::Err(diesel::result::Error::RollbackTransaction)
    });
    assert!(rolled.is_err());
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        10
    );
    assert_eq!(
        count(
            &mut conn,
            &format!("SELECT count(*) AS n FROM pgpubsub_notification_leases WHERE id = {lease}")
        ),
        1
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification_leases"
        ),
        1
    );
    // Committed: the first batch and its lease are gone, the next is leased.
    let next = conn
        .transaction(|conn| next(conn, &ids, lease, cursor))
        .unwrap();
    assert_eq!(next.len(), 5);
    assert!(next
        .iter()
        .all(|row| row.id > cursor && row.lease.is_some() && row.lease != Some(lease)));
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        5
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification_leases"
        ),
        1
    );
}

#[test]
fn a_notification_out_of_attempts_is_made_dead_by_the_lease_and_given_no_lease() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    store(&mut conn, 2);
    conn.batch_execute(
        "UPDATE pgpubsub_notification SET attempts = 3 WHERE id = (SELECT min(id) FROM pgpubsub_notification)",
    )
    .unwrap();
    let leased = take(&mut conn, 10, 30.0, 3);
    assert_eq!(leased.len(), 2, "{leased:?}");
    let dead: Vec<&Leased> = leased.iter().filter(|row| row.dead).collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].lease, None);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification WHERE dead_at IS NOT NULL AND available_at = 'infinity'"),
        1
    );
    let live: Vec<&Leased> = leased.iter().filter(|row| !row.dead).collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].attempt, 1);
}
