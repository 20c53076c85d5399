//! Stopping and failing: a graceful stop finishes the handler in flight and
//! commits; killed worker sessions are restarted and the listen session
//! reconnects; with restarting off, the listener ends with the error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::Text;
use pgpubsub_tests::{count, names, wait_until, TestDb, WAIT};
use serde::{Deserialize, Serialize};

diesel::table! {
    tasks (id) {
        id -> BigInt,
        name -> Text,
    }
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug)]
#[diesel(table_name = tasks)]
pub struct Task {
    pub id: i64,
    pub name: String,
}

#[pgpubsub::trigger_channel(model = Task, lock_notifications)]
pub struct TaskChannel;

#[pgpubsub::post_insert_listener(TaskChannel)]
fn task_inserted(new: Task, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, &new.name)
}

/// A message whose handler blocks until the test releases it. Only
/// `a_graceful_stop_finishes_the_handler_in_flight_and_commits` sends it.
#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct SlowJob {
    name: String,
}

static SLOW_STARTED: AtomicBool = AtomicBool::new(false);
static SLOW_RELEASED: Mutex<bool> = Mutex::new(false);
static SLOW_RELEASE: Condvar = Condvar::new();

#[pgpubsub::listener(SlowJob)]
fn slow_job(msg: SlowJob, conn: &mut PgConnection) -> QueryResult<()> {
    SLOW_STARTED.store(true, Ordering::SeqCst);
    let released = SLOW_RELEASED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (released, _) = SLOW_RELEASE
        .wait_timeout_while(released, WAIT, |released| !*released)
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    assert!(*released, "the test never released the slow job");
    drop(released);
    record(conn, &msg.name)
}

fn release_slow_job() {
    *SLOW_RELEASED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
    SLOW_RELEASE.notify_all();
}

const SCHEMA: &str = "
CREATE TABLE tasks (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE effects (id bigserial PRIMARY KEY, name text NOT NULL);
";

fn record(conn: &mut PgConnection, name: &str) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO effects (name) VALUES ($1)")
        .bind::<Text, _>(name)
        .execute(conn)
        .map(drop)
}

fn handled(conn: &mut PgConnection) -> Vec<String> {
    names(conn, "SELECT name FROM effects ORDER BY name")
}

fn insert(conn: &mut PgConnection, name: &str) {
    diesel::sql_query("INSERT INTO tasks (name) VALUES ($1)")
        .bind::<Text, _>(name)
        .execute(conn)
        .unwrap();
}

/// Waits for the listener's sessions (two workers and the listen session),
/// then terminates every other session of the test database. Returns how
/// many were terminated.
fn kill_other_sessions(conn: &mut PgConnection) -> i64 {
    assert!(wait_until(WAIT, || {
        count(
            conn,
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ) >= 3
    }));
    count(
        conn,
        "SELECT count(*) AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) killed",
    )
}

fn restarts(handle: &pgpubsub::ListenerHandle) -> u64 {
    handle.stats().restarts.load(Ordering::Relaxed)
}

#[test]
fn a_graceful_stop_finishes_the_handler_in_flight_and_commits() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    // Two jobs stored before the listener starts: one claim takes both.
    conn.transaction::<_, pgpubsub::Error, _>(|conn| {
        for name in ["slow", "queued"] {
            pgpubsub::notify(conn, &SlowJob { name: name.into() })?;
        }
        Ok(())
    })
    .unwrap();
    let handle = pgpubsub::Listener::new(db.url()).spawn().unwrap();
    assert!(handle.wait_listening(WAIT));
    assert!(wait_until(WAIT, || SLOW_STARTED.load(Ordering::SeqCst)));
    // The handler is mid-flight: its writes are not committed yet.
    handle.stop();
    assert_eq!(handled(&mut conn), Vec::<String>::new());
    release_slow_job();
    handle.join().unwrap();
    // The job in flight committed; the rest of the batch stays stored for
    // the next listener instead of delaying the stop.
    assert_eq!(handled(&mut conn), ["slow"]);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification WHERE payload->'message'->>'name' = 'queued' AND attempts = 0"
        ),
        1
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        1
    );
}

#[test]
fn killed_worker_sessions_are_restarted_and_rows_are_still_processed() {
    let db = TestDb::new(SCHEMA);
    let handle = pgpubsub::Listener::new(db.url())
        .workers(2)
        .spawn()
        .unwrap();
    assert!(handle.wait_listening(WAIT));
    let mut conn = db.conn();
    insert(&mut conn, "before");
    assert!(wait_until(WAIT, || handled(&mut conn) == ["before"]));
    // Two workers and the listen session.
    assert!(kill_other_sessions(&mut conn) >= 3);
    insert(&mut conn, "after 1");
    insert(&mut conn, "after 2");
    assert!(wait_until(WAIT, || handled(&mut conn).len() == 3));
    assert!(wait_until(WAIT, || restarts(&handle) > 0));
    handle.shutdown().unwrap();
    assert_eq!(handled(&mut conn), ["after 1", "after 2", "before"]);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
}

#[test]
fn the_listen_session_reconnects_so_new_rows_need_no_poll() {
    let db = TestDb::new(SCHEMA);
    // Polling alone would take a minute: only a reconnected LISTEN session
    // can wake the workers in time.
    let handle = pgpubsub::Listener::new(db.url())
        .workers(2)
        .poll_interval(Duration::from_secs(60))
        .spawn()
        .unwrap();
    assert!(handle.wait_listening(WAIT));
    let mut conn = db.conn();
    assert!(kill_other_sessions(&mut conn) >= 3);
    // Idle workers notice their dead sessions only when woken, and only the
    // reconnected listen session wakes them: both restarts prove it is back.
    assert!(wait_until(WAIT, || restarts(&handle) >= 2));
    insert(&mut conn, "after reconnect");
    assert!(wait_until(WAIT, || handled(&mut conn) == ["after reconnect"]));
    handle.shutdown().unwrap();
}

#[test]
fn without_restarts_killed_sessions_end_the_listener_with_an_error() {
    let db = TestDb::new(SCHEMA);
    let handle = pgpubsub::Listener::new(db.url())
        .workers(2)
        .restart_on_failure(false)
        .spawn()
        .unwrap();
    assert!(handle.wait_listening(WAIT));
    let mut conn = db.conn();
    assert!(kill_other_sessions(&mut conn) >= 3);
    let (sender, receiver) = mpsc::channel();
    // join() in a thread, so that a listener that never ends fails the test
    // instead of hanging it.
    std::thread::spawn(move || {
        let _ = sender.send(handle.join());
    });
    let result = receiver.recv_timeout(WAIT).expect("join() did not return");
    match result {
        Err(pgpubsub::Error::Worker { message, .. }) => assert!(!message.is_empty()),
        other => panic!("expected a worker error, got {other:?}"),
    }
}
