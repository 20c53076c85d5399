//! A handler that ends the listener's transaction (`COMMIT`, `ROLLBACK`)
//! fails its notification with an error saying so, is not retried, and the
//! listener goes on with the others.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::Text;
use pgpubsub_tests::{count, spawn_listening, wait_until, TestDb, WAIT};
use serde::{Deserialize, Serialize};

#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct Job {
    name: String,
    /// `COMMIT`, `ROLLBACK` or nothing, after the handler's write.
    end_with: Option<String>,
}

#[pgpubsub::listener(Job)]
fn job(msg: Job, conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO effects (name) VALUES ($1)")
        .bind::<Text, _>(&msg.name)
        .execute(conn)?;
    if let Some(statement) = &msg.end_with {
        diesel::sql_query(statement).execute(conn)?;
    }
    Ok(())
}

const SCHEMA: &str = "CREATE TABLE effects (id bigserial PRIMARY KEY, name text NOT NULL);";

#[derive(QueryableByName, Debug)]
struct Dead {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    dead: bool,
}

fn dead(conn: &mut PgConnection) -> Vec<Dead> {
    diesel::sql_query(
        "SELECT last_error, dead_at IS NOT NULL AS dead FROM pgpubsub_notification ORDER BY id",
    )
    .load(conn)
    .unwrap()
}

fn effects(conn: &mut PgConnection, name: &str) -> i64 {
    count(
        conn,
        &format!(
            "SELECT count(*) AS n FROM effects WHERE name = {}",
            pgpubsub::contract::quote_literal(name)
        ),
    )
}

fn send(conn: &mut PgConnection, name: &str, end_with: Option<&str>) {
    pgpubsub::notify(
        conn,
        &Job {
            name: name.into(),
            end_with: end_with.map(str::to_owned),
        },
    )
    .unwrap();
}

fn ends_the_transaction(statement: &str) {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    // One transaction for the whole batch: the offender sits between two
    // good notifications.
    conn.transaction::<_, diesel::result::Error, _>(|conn| {
        send(conn, "before", None);
        send(conn, "offender", Some(statement));
        send(conn, "after", None);
        Ok(())
    })
    .unwrap();
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .retry(pgpubsub::RetryPolicy {
                base: Duration::from_millis(10),
                max: Duration::from_millis(10),
            })
            .poll_interval(Duration::from_millis(100)),
    );
    assert!(
        wait_until(WAIT, || effects(&mut conn, "before") == 1
            && effects(&mut conn, "after") == 1
            && dead(&mut conn).iter().any(|row| row.dead)),
        "{:?}",
        dead(&mut conn)
    );
    send(&mut conn, "later", None);
    assert!(wait_until(WAIT, || effects(&mut conn, "later") == 1));
    // Give a wrong retry every chance to happen.
    std::thread::sleep(Duration::from_millis(500));
    handle.shutdown().unwrap();

    let rows = dead(&mut conn);
    assert_eq!(rows.len(), 1, "only the offender is kept: {rows:?}");
    assert!(rows[0].dead, "{rows:?}");
    let error = rows[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains(statement), "{error}");
    assert!(error.contains("must not commit or roll back"), "{error}");
    // Exactly once for the good ones; the offender ran once and is not retried.
    assert_eq!(effects(&mut conn, "before"), 1);
    assert_eq!(effects(&mut conn, "after"), 1);
    let offender = effects(&mut conn, "offender");
    if statement == "COMMIT" {
        assert_eq!(offender, 1, "a COMMIT keeps the offender's write, once");
    } else {
        assert_eq!(offender, 0, "a ROLLBACK undoes the offender's write");
    }
}

#[test]
fn a_handler_that_commits_fails_its_notification_saying_so_and_is_not_retried() {
    ends_the_transaction("COMMIT");
}

#[test]
fn a_handler_that_rolls_back_fails_its_notification_saying_so_and_is_not_retried() {
    ends_the_transaction("ROLLBACK");
}
