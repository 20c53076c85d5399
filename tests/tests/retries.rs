//! A failed notification stays stored and is retried after its backoff,
//! behind the claim cursor, until its handler succeeds.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{Int4, Text};
use pgpubsub::Context;
use pgpubsub_tests::{count, spawn_listening, wait_until, TestDb, WAIT};
use serde::{Deserialize, Serialize};

#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct Flaky {
    name: String,
    /// The handler fails until this attempt.
    succeed_at: i32,
}

#[pgpubsub::listener(Flaky)]
fn flaky(msg: Flaky, conn: &mut PgConnection, ctx: &Context) -> anyhow::Result<()> {
    diesel::sql_query("INSERT INTO attempts (name, attempt) VALUES ($1, $2)")
        .bind::<Text, _>(&msg.name)
        .bind::<Int4, _>(ctx.attempt())
        .execute(conn)?;
    if ctx.attempt() < msg.succeed_at {
        anyhow::bail!("attempt {} of {} fails on purpose", ctx.attempt(), msg.name);
    }
    Ok(())
}

const SCHEMA: &str = "
CREATE TABLE attempts (id bigserial PRIMARY KEY, name text NOT NULL, attempt int NOT NULL);
";

#[test]
fn a_failing_notification_is_retried_with_backoff_until_it_succeeds() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .retry(pgpubsub::RetryPolicy {
                base: Duration::from_millis(100),
                max: Duration::from_millis(400),
            })
            .poll_interval(Duration::from_millis(100)),
    );
    pgpubsub::notify(
        &mut conn,
        &Flaky {
            name: "third time lucky".into(),
            succeed_at: 3,
        },
    )
    .unwrap();
    pgpubsub::notify(
        &mut conn,
        &Flaky {
            name: "fine".into(),
            succeed_at: 1,
        },
    )
    .unwrap();
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM pgpubsub_notification"
    ) == 0));
    handle.shutdown().unwrap();
    // The failed attempts' writes were rolled back with their savepoints:
    // only the successful attempt of each notification left its row.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM attempts WHERE name = 'third time lucky' AND attempt = 3"
        ),
        1
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM attempts"), 2);
}

#[test]
fn a_failed_attempt_records_the_error_and_waits_for_its_backoff() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url()).retry(pgpubsub::RetryPolicy {
            base: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
        }),
    );
    pgpubsub::notify(
        &mut conn,
        &Flaky {
            name: "never".into(),
            succeed_at: i32::MAX,
        },
    )
    .unwrap();
    assert!(wait_until(WAIT, || {
        count(
        &mut conn,
        "SELECT count(*) AS n FROM pgpubsub_notification WHERE attempts = 1 AND last_error IS NOT NULL"
    ) == 1
    }));
    handle.shutdown().unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification \
             WHERE last_error LIKE '%attempt 1 of never fails on purpose%' \
               AND available_at > now() + interval '3500 seconds'"
        ),
        1
    );
}
