//! Leases, attempts and dead notifications: a claim counts the attempt in a
//! lease of its own before any handler runs, so a notification whose
//! process dies mid-handler is claimed again once its lease runs out, and
//! one that keeps failing (or keeps killing its process) ends dead, kept
//! with its error, until `dead retry` or `dead purge`.
//!
//! The tests of killed processes re-execute this test binary as a child
//! (`LEASES_CHILD` set), running one listener there; the test kills it, or
//! its handler aborts it.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double, Int4, Nullable, Text};
use pgpubsub::dead::Selection;
use pgpubsub::{Context, RetryPolicy};
use pgpubsub_tests::{count, spawn_listening, wait_until, TestDb, WAIT};
use serde::{Deserialize, Serialize};

const SCHEMA: &str = "
CREATE TABLE handled (
    id bigserial PRIMARY KEY, channel text NOT NULL, key bigint NOT NULL,
    backend int NOT NULL DEFAULT pg_backend_pid()
);
CREATE TABLE started (id bigserial PRIMARY KEY, pid int NOT NULL, attempt int NOT NULL);
CREATE TABLE slow_effects (
    id bigserial PRIMARY KEY,
    key bigint NOT NULL,
    attempt int NOT NULL,
    seen_error text
);
CREATE TABLE fragile (id bigserial PRIMARY KEY, poison boolean NOT NULL);
CREATE TABLE fragile_effects (id bigserial PRIMARY KEY, fragile_id bigint NOT NULL, attempt int NOT NULL);
CREATE TABLE hurried (id bigserial PRIMARY KEY, key bigint NOT NULL, attempt int NOT NULL);
CREATE TABLE paced (
    id bigserial PRIMARY KEY,
    key bigint NOT NULL,
    attempt int NOT NULL,
    xid text NOT NULL,
    xact_start timestamptz NOT NULL,
    done_at timestamptz NOT NULL
);
";

/// Fast retries, so a test does not wait for backoffs.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
    }
}

fn record(conn: &mut PgConnection, channel: &str, key: i64) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO handled (channel, key) VALUES ($1, $2)")
        .bind::<Text, _>(channel)
        .bind::<BigInt, _>(key)
        .execute(conn)
        .map(drop)
}

/// A stored notification, as the tests read it back.
#[derive(QueryableByName, Debug)]
struct Stored {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    channel: String,
    /// Attempts counted: the ones that ended, plus the one in flight when
    /// a lease holds the notification.
    #[diesel(sql_type = Int4)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Bool)]
    dead: bool,
    /// `available_at = 'infinity'`.
    #[diesel(sql_type = Bool)]
    parked: bool,
    /// `available_at <= now()`.
    #[diesel(sql_type = Bool)]
    available: bool,
}

fn stored(conn: &mut PgConnection, filter: &str) -> Vec<Stored> {
    diesel::sql_query(format!(
        "SELECT id, channel::text AS channel, \
                attempts + (SELECT count(*) FROM pgpubsub_notification_leases AS l \
                            WHERE n.id = ANY(l.ids))::int AS attempts, \
                last_error, dead_at IS NOT NULL AS dead, \
                available_at = 'infinity' AS parked, \
                available_at <= now() AND NOT EXISTS (SELECT 1 FROM pgpubsub_notification_leases AS l \
                                                      WHERE n.id = ANY(l.ids)) AS available \
         FROM pgpubsub_notification AS n WHERE NOT broadcast AND ({filter}) ORDER BY id"
    ))
    .load(conn)
    .unwrap()
}

// ---------------------------------------------------------------------------
// 1. A channel's own `max_attempts`.

#[pgpubsub::channel(lock_notifications, max_attempts = 3)]
#[derive(Serialize, Deserialize)]
struct Capped {
    key: i64,
    fail: bool,
}

#[pgpubsub::listener(Capped)]
fn capped(msg: Capped, conn: &mut PgConnection) -> anyhow::Result<()> {
    if msg.fail {
        anyhow::bail!("capped job {} always fails", msg.key);
    }
    record(conn, "capped", msg.key)?;
    Ok(())
}

#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct Bystander {
    key: i64,
}

#[pgpubsub::listener(Bystander)]
fn bystander(msg: Bystander, conn: &mut PgConnection) -> anyhow::Result<()> {
    record(conn, "bystander", msg.key)?;
    Ok(())
}

#[test]
fn a_handler_that_always_fails_ends_dead_after_the_channels_max_attempts_while_the_rest_flow() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    conn.transaction::<_, anyhow::Error, _>(|conn| {
        // The failing one first, so every early batch meets it.
        pgpubsub::notify(conn, &Capped { key: 0, fail: true })?;
        for key in 1..=500 {
            pgpubsub::notify(conn, &Capped { key, fail: false })?;
            pgpubsub::notify(conn, &Bystander { key })?;
        }
        Ok(())
    })
    .unwrap();
    // The listener's default would allow 10: the channel's 3 wins.
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .workers(2)
            .max_attempts(10)
            .retry(fast_retry())
            .poll_interval(Duration::from_millis(100)),
    );
    assert!(
        wait_until(WAIT, || {
            count(&mut conn, "SELECT count(*) AS n FROM handled") == 1000
                && !stored(&mut conn, "dead_at IS NOT NULL").is_empty()
        }),
        "handled: {}, stored: {:#?}",
        count(&mut conn, "SELECT count(*) AS n FROM handled"),
        stored(&mut conn, "true")
    );
    assert!(wait_until(WAIT, || handle
        .stats()
        .dead
        .load(Ordering::SeqCst)
        == 1));
    // Give the listener time to (wrongly) try it again.
    std::thread::sleep(Duration::from_millis(500));
    let stats = handle.stats();
    assert_eq!(stats.dead.load(Ordering::SeqCst), 1);
    assert_eq!(stats.failed.load(Ordering::SeqCst), 3);
    assert_eq!(stats.completed.load(Ordering::SeqCst), 1000);
    handle.shutdown().unwrap();

    // Every other notification handled exactly once, on both channels.
    for channel in ["capped", "bystander"] {
        assert_eq!(
            count(
                &mut conn,
                &format!(
                    "SELECT count(DISTINCT key) AS n FROM handled WHERE channel = '{channel}'"
                )
            ),
            500
        );
    }
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM handled"), 1000);
    // The dead one stays stored after the listener stopped, alone.
    let kept = stored(&mut conn, "true");
    assert_eq!(kept.len(), 1, "{kept:#?}");
    let dead = &kept[0];
    assert_eq!(dead.channel, "capped");
    assert_eq!(dead.attempts, 3, "{dead:?}");
    assert!(dead.dead && dead.parked, "{dead:?}");
    let error = dead.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("capped job 0 always fails"), "{error}");
    assert!(
        error.contains("capped"),
        "the error names the handler: {error}"
    );
    let listed = pgpubsub::dead::list(&mut conn, None).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, dead.id);
    assert_eq!(listed[0].attempts, 3);
}

// ---------------------------------------------------------------------------
// 2. The listener's `max_attempts` for channels that set none.

#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct Uncapped {
    key: i64,
}

#[pgpubsub::listener(Uncapped)]
fn uncapped(msg: Uncapped) -> anyhow::Result<()> {
    anyhow::bail!("uncapped job {} always fails", msg.key)
}

#[test]
fn the_listeners_max_attempts_applies_to_a_channel_that_sets_none() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    pgpubsub::notify(&mut conn, &Uncapped { key: 7 }).unwrap();
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .channels(["uncapped"])
            .max_attempts(2)
            .retry(fast_retry())
            .poll_interval(Duration::from_millis(100)),
    );
    assert!(
        wait_until(WAIT, || !stored(&mut conn, "dead_at IS NOT NULL")
            .is_empty()),
        "{:#?}",
        stored(&mut conn, "true")
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(handle.stats().dead.load(Ordering::SeqCst), 1);
    assert_eq!(handle.stats().failed.load(Ordering::SeqCst), 2);
    handle.shutdown().unwrap();
    let kept = stored(&mut conn, "true");
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(kept[0].attempts, 2, "{kept:?}");
    assert!(kept[0].dead && kept[0].parked, "{kept:?}");
    let error = kept[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("uncapped job 7 always fails"), "{error}");
}

// ---------------------------------------------------------------------------
// 3. A huge error is cut.

#[pgpubsub::channel(lock_notifications, max_attempts = 1)]
#[derive(Serialize, Deserialize)]
struct Verbose {
    size: usize,
}

#[pgpubsub::listener(Verbose)]
fn verbose(msg: Verbose) -> anyhow::Result<()> {
    anyhow::bail!("verbose failure: {}", "x".repeat(msg.size))
}

#[derive(QueryableByName)]
struct ErrorSize {
    #[diesel(sql_type = BigInt)]
    bytes: i64,
    #[diesel(sql_type = Text)]
    text: String,
}

#[test]
fn a_huge_error_is_stored_cut_with_its_length_noted() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    let size = 1_000_000;
    pgpubsub::notify(&mut conn, &Verbose { size }).unwrap();
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .channels(["verbose"])
            .poll_interval(Duration::from_millis(100)),
    );
    assert!(wait_until(WAIT, || !stored(
        &mut conn,
        "dead_at IS NOT NULL"
    )
    .is_empty()));
    handle.shutdown().unwrap();
    let row = diesel::sql_query(
        "SELECT octet_length(last_error)::bigint AS bytes, last_error AS text \
         FROM pgpubsub_notification WHERE channel = 'verbose'",
    )
    .get_result::<ErrorSize>(&mut conn)
    .unwrap();
    assert!(
        row.bytes <= 4200,
        "last_error has {} bytes: not cut",
        row.bytes
    );
    assert!(row.bytes >= 4096, "cut too short: {} bytes", row.bytes);
    // The handler's name, then its error.
    let (handler, rest) = row
        .text
        .split_once("verbose failure: ")
        .unwrap_or_else(|| panic!("{}", &row.text[..row.text.len().min(200)]));
    assert!(handler.ends_with("verbose: "), "{handler}");
    assert!(
        rest.starts_with("xxxxxxxxxx"),
        "{}",
        &rest[..rest.len().min(200)]
    );
    // The note gives the original length: the handler's name, the prefix
    // and the million x's.
    let noted = row
        .text
        .rsplit_once("[cut: the error had ")
        .and_then(|(_, rest)| rest.strip_suffix(" bytes]"))
        .unwrap_or_else(|| panic!("no cut note at the end: …{}", tail(&row.text)));
    let noted: usize = noted
        .parse()
        .unwrap_or_else(|_| panic!("not a length: {noted}"));
    let expected = handler.len() + "verbose failure: ".len() + size;
    assert_eq!(noted, expected);
}

fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(120);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    &text[start..]
}

// ---------------------------------------------------------------------------
// 4. Lease expiry after a killed listener.

/// Set in the child processes this binary runs of itself.
const CHILD_ENV: &str = "LEASES_CHILD";
/// The database URL a child's listener serves.
const CHILD_URL_ENV: &str = "LEASES_CHILD_URL";

fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Set by the in-process test once it terminated the session of the slow
/// handler's first attempt.
static TERMINATED: AtomicBool = AtomicBool::new(false);

#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct Slow {
    key: i64,
}

#[derive(QueryableByName)]
struct LastError {
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Int4)]
    pid: i32,
}

#[derive(QueryableByName)]
struct Database {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Writes its effect through the handler's connection (committed only with
/// the notification's removal). Its first attempt then says it started,
/// through a connection of its own, and hangs: in a child process until it
/// is killed, in the test process until the test terminated its session.
#[pgpubsub::listener(Slow)]
fn slow(msg: Slow, conn: &mut PgConnection, ctx: &Context) -> anyhow::Result<()> {
    let seen = diesel::sql_query("SELECT last_error FROM pgpubsub_notification WHERE id = $1")
        .bind::<BigInt, _>(ctx.notification_id().unwrap_or(0))
        .get_result::<LastError>(conn)?
        .last_error;
    diesel::sql_query("INSERT INTO slow_effects (key, attempt, seen_error) VALUES ($1, $2, $3)")
        .bind::<BigInt, _>(msg.key)
        .bind::<Int4, _>(ctx.attempt())
        .bind::<Nullable<Text>, _>(seen)
        .execute(conn)?;
    if ctx.attempt() == 1 {
        let pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result::<Pid>(conn)?
            .pid;
        let database = diesel::sql_query("SELECT current_database()::text AS name")
            .get_result::<Database>(conn)?
            .name;
        let url = pgpubsub_tests::url_with_database(&pgpubsub_tests::admin_url(), &database);
        let mut signal = PgConnection::establish(&url)?;
        diesel::sql_query("INSERT INTO started (pid, attempt) VALUES ($1, $2)")
            .bind::<Int4, _>(pid)
            .bind::<Int4, _>(ctx.attempt())
            .execute(&mut signal)?;
        drop(signal);
        if in_child() {
            std::thread::sleep(Duration::from_secs(60));
        } else {
            wait_until(Duration::from_secs(30), || {
                TERMINATED.load(Ordering::SeqCst)
            });
        }
    }
    Ok(())
}

/// A child process of this test binary, killed when dropped.
struct ChildListener(Child);

impl ChildListener {
    /// Runs test `test` of this binary in a child process, with
    /// [`CHILD_ENV`] set and the listener's database `url`.
    fn spawn(test: &str, url: &str) -> ChildListener {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .env(CHILD_URL_ENV, url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        ChildListener(child)
    }
}

impl Drop for ChildListener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's side of a test: a listener of `channel` with a 1 s lease,
/// until the child is killed (or, at the latest, after a minute).
fn run_child_listener(channel: &str, batch_size: i64) {
    let url = std::env::var(CHILD_URL_ENV).unwrap();
    let handle = pgpubsub::Listener::new(url)
        .channels([channel])
        .lease(Duration::from_secs(1))
        .batch_size(batch_size)
        .poll_interval(Duration::from_millis(100))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop(handle);
    std::process::exit(0);
}

#[derive(QueryableByName, Debug)]
struct SlowEffect {
    #[diesel(sql_type = BigInt)]
    key: i64,
    #[diesel(sql_type = Int4)]
    attempt: i32,
    #[diesel(sql_type = Nullable<Text>)]
    seen_error: Option<String>,
}

fn slow_effects(conn: &mut PgConnection) -> Vec<SlowEffect> {
    diesel::sql_query("SELECT key, attempt, seen_error FROM slow_effects ORDER BY id")
        .load(conn)
        .unwrap()
}

/// The second attempt ran exactly once, saw the first one's lease run out,
/// and its effect is the only one (the first attempt's rolled back).
fn assert_handled_once_on_the_second_attempt(conn: &mut PgConnection, key: i64) {
    let effects = slow_effects(conn);
    assert_eq!(effects.len(), 1, "{effects:#?}");
    let effect = &effects[0];
    assert_eq!(effect.key, key);
    assert_eq!(effect.attempt, 2, "{effect:?}");
    let seen = effect.seen_error.as_deref().unwrap_or_default();
    assert!(
        seen.contains("attempt 1 did not finish before its lease ran out"),
        "the second attempt should see why the first one ended: {seen:?}"
    );
    assert_eq!(
        count(conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        0
    );
}

#[test]
fn a_listener_killed_mid_handler_leaves_its_notification_to_the_next_once_its_lease_runs_out() {
    const TEST: &str =
        "a_listener_killed_mid_handler_leaves_its_notification_to_the_next_once_its_lease_runs_out";
    if in_child() {
        run_child_listener("slow", 100);
        return;
    }
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    pgpubsub::notify(&mut conn, &Slow { key: 41 }).unwrap();
    let mut child = ChildListener::spawn(TEST, db.url());
    assert!(
        wait_until(WAIT, || count(
            &mut conn,
            "SELECT count(*) AS n FROM started"
        ) == 1),
        "the child's handler did not start"
    );
    let leased = stored(&mut conn, "true");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].attempts, 1, "{leased:?}");
    // kill -9, mid-handler.
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "{status:?}");

    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .channels(["slow"])
            .lease(Duration::from_secs(1))
            .poll_interval(Duration::from_millis(100)),
    );
    assert!(
        wait_until(WAIT, || count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification"
        ) == 0),
        "{:#?}",
        stored(&mut conn, "true")
    );
    // Nothing runs it again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(handle.stats().completed.load(Ordering::SeqCst), 1);
    handle.shutdown().unwrap();
    assert_handled_once_on_the_second_attempt(&mut conn, 41);
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM started"), 1);
}

#[test]
fn a_worker_whose_session_is_terminated_mid_handler_leaves_its_notification_to_the_next_once_its_lease_runs_out(
) {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    pgpubsub::notify(&mut conn, &Slow { key: 42 }).unwrap();
    // Two workers: the idle one must not take the notification from the
    // slow one, even once its lease ran out.
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .channels(["slow"])
            .workers(2)
            .lease(Duration::from_secs(1))
            .poll_interval(Duration::from_millis(100)),
    );
    assert!(
        wait_until(WAIT, || count(
            &mut conn,
            "SELECT count(*) AS n FROM started"
        ) == 1),
        "the handler did not start"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let leased = stored(&mut conn, "true");
    assert_eq!(leased.len(), 1);
    assert_eq!(
        leased[0].attempts, 1,
        "a slow handler past its lease lost its notification to another worker: {leased:?}"
    );
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM started"), 1);
    let pid = diesel::sql_query("SELECT pid FROM started")
        .get_result::<Pid>(&mut conn)
        .unwrap()
        .pid;
    #[derive(QueryableByName)]
    struct Terminated {
        #[diesel(sql_type = Bool)]
        done: bool,
    }
    let terminated = diesel::sql_query("SELECT pg_terminate_backend($1) AS done")
        .bind::<Int4, _>(pid)
        .get_result::<Terminated>(&mut conn)
        .unwrap();
    assert!(terminated.done);
    TERMINATED.store(true, Ordering::SeqCst);
    assert!(
        wait_until(WAIT, || count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification"
        ) == 0),
        "{:#?}",
        stored(&mut conn, "true")
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(handle.stats().completed.load(Ordering::SeqCst), 1);
    handle.shutdown().unwrap();
    assert_handled_once_on_the_second_attempt(&mut conn, 42);
}

// ---------------------------------------------------------------------------
// 5. A handler that kills its process.

diesel::table! {
    fragile (id) {
        id -> BigInt,
        poison -> Bool,
    }
}

#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = fragile)]
pub struct Fragile {
    pub id: i64,
    pub poison: bool,
}

#[pgpubsub::trigger_channel(model = Fragile, lock_notifications, max_attempts = 3)]
pub struct FragileChannel;

#[pgpubsub::post_insert_listener(FragileChannel)]
fn fragile_inserted(new: Fragile, conn: &mut PgConnection, ctx: &Context) -> QueryResult<()> {
    if new.poison {
        assert!(in_child(), "the poison row ran in the test process");
        std::process::abort();
    }
    diesel::sql_query("INSERT INTO fragile_effects (fragile_id, attempt) VALUES ($1, $2)")
        .bind::<BigInt, _>(new.id)
        .bind::<Int4, _>(ctx.attempt())
        .execute(conn)
        .map(drop)
}

#[test]
fn a_notification_that_kills_its_process_ends_dead_and_its_batch_mates_are_handled_once() {
    const TEST: &str =
        "a_notification_that_kills_its_process_ends_dead_and_its_batch_mates_are_handled_once";
    if in_child() {
        run_child_listener("fragile_channel", 100);
        return;
    }
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    // 51 rows in one statement: the 25th kills any process that handles it.
    diesel::sql_query(
        "INSERT INTO fragile (poison) SELECT i = 25 FROM generate_series(1, 51) AS i",
    )
    .execute(&mut conn)
    .unwrap();
    let settled = |conn: &mut PgConnection| {
        count(
            conn,
            "SELECT count(DISTINCT fragile_id) AS n FROM fragile_effects",
        ) == 50
            && !stored(conn, "channel = 'fragile_channel' AND dead_at IS NOT NULL").is_empty()
    };
    let mut aborts = 0;
    let mut spawned = 0;
    while !settled(&mut conn) {
        assert!(
            spawned < 8,
            "not settled after {spawned} child listeners ({aborts} aborted): {:#?}",
            stored(&mut conn, "true")
        );
        let mut child = ChildListener::spawn(TEST, db.url());
        spawned += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break Some(status);
            }
            if settled(&mut conn) || Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match status {
            Some(status) => {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(6),
                    "the child ended otherwise than by the poison's abort: {status:?}"
                );
                aborts += 1;
            }
            // Settled, or hung: the loop's condition tells.
            None => drop(child),
        }
    }
    assert_eq!(aborts, 3, "one abort per attempt of the poison");
    let kept = stored(&mut conn, "true");
    assert_eq!(kept.len(), 1, "only the poison is left: {kept:#?}");
    let dead = &kept[0];
    assert_eq!(
        stored(
            &mut conn,
            "(payload -> 'new' ->> 'id')::bigint = (SELECT id FROM fragile WHERE poison)"
        )
        .iter()
        .map(|row| row.id)
        .collect::<Vec<_>>(),
        [dead.id],
        "the one left is the poison"
    );
    assert!(dead.dead && dead.parked, "{dead:?}");
    assert_eq!(dead.attempts, 3, "{dead:?}");
    let error = dead.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("attempt 3 did not finish before its lease ran out"),
        "{error}"
    );
    // Each batch-mate handled exactly once: its effect committed once.
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM fragile_effects"),
        50
    );
    // All 51 were leased together by the first child, which the poison
    // killed; after that each was leased alone, so none was in the poison's
    // lease again: every batch-mate ran on its second attempt.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM fragile_effects WHERE attempt <> 2"
        ),
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM fragile_effects AS e JOIN fragile AS f ON f.id = e.fragile_id \
             WHERE f.poison"
        ),
        0
    );
    assert_eq!(
        pgpubsub::dead::list(&mut conn, Some("fragile_channel"))
            .unwrap()
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------
// 6. Dead retry and purge, through the API and the command line.

/// Flipped once the test retries: the revivable notifications succeed then.
static REVIVED: AtomicBool = AtomicBool::new(false);

#[pgpubsub::channel(lock_notifications, max_attempts = 1)]
#[derive(Serialize, Deserialize)]
struct Revivable {
    key: i64,
}

#[pgpubsub::listener(Revivable)]
fn revivable(msg: Revivable, conn: &mut PgConnection) -> anyhow::Result<()> {
    if !REVIVED.load(Ordering::SeqCst) {
        anyhow::bail!("revivable {} is not ready yet", msg.key);
    }
    record(conn, "revivable", msg.key)?;
    Ok(())
}

#[pgpubsub::channel(lock_notifications, max_attempts = 1)]
#[derive(Serialize, Deserialize)]
struct Doomed {
    key: i64,
}

#[pgpubsub::listener(Doomed)]
fn doomed(msg: Doomed) -> anyhow::Result<()> {
    anyhow::bail!("doomed {} never works", msg.key)
}

#[derive(clap::Parser, Debug)]
enum Cmd {
    Dead(pgpubsub::cli::DeadArgs),
}

fn parse(args: &[&str]) -> Result<pgpubsub::cli::DeadArgs, clap::Error> {
    let Cmd::Dead(args) = Cmd::try_parse_from(["app", "dead"].iter().chain(args))?;
    Ok(args)
}

/// Runs `dead ARGS` against `url`; returns its report.
fn cli(url: &str, args: &[&str]) -> String {
    let mut all = vec!["--database-url", url];
    all.extend_from_slice(args);
    let parsed = parse(&all).unwrap_or_else(|err| panic!("{args:?}: {err}"));
    let mut out = Vec::new();
    parsed
        .run(&mut out)
        .unwrap_or_else(|err| panic!("{args:?}: {err}"));
    String::from_utf8(out).unwrap()
}

fn dead_listener(db: &TestDb) -> pgpubsub::ListenerHandle {
    spawn_listening(
        pgpubsub::Listener::new(db.url())
            .channels(["revivable", "doomed"])
            .retry(fast_retry())
            .poll_interval(Duration::from_millis(100)),
    )
}

#[test]
fn dead_notifications_are_listed_retried_and_purged_through_the_api_and_the_cli() {
    let db = TestDb::new(SCHEMA);
    let url = db.url().to_owned();
    let mut conn = db.conn();
    for key in 1..=3 {
        pgpubsub::notify(&mut conn, &Revivable { key }).unwrap();
    }
    for key in 1..=2 {
        pgpubsub::notify(&mut conn, &Doomed { key }).unwrap();
    }
    let handle = dead_listener(&db);
    assert!(wait_until(WAIT, || stored(
        &mut conn,
        "dead_at IS NOT NULL"
    )
    .len()
        == 5));
    handle.shutdown().unwrap();
    let ids = |conn: &mut PgConnection, channel: &str| -> Vec<i64> {
        stored(conn, &format!("channel = '{channel}'"))
            .iter()
            .map(|row| row.id)
            .collect()
    };
    let revivable = ids(&mut conn, "revivable");
    let doomed = ids(&mut conn, "doomed");
    assert_eq!((revivable.len(), doomed.len()), (3, 2));

    // List, through the API.
    let all = pgpubsub::dead::list(&mut conn, None).unwrap();
    assert_eq!(
        all.iter().map(|dead| dead.id).collect::<Vec<_>>(),
        [revivable.clone(), doomed.clone()].concat()
    );
    let of_doomed = pgpubsub::dead::list(&mut conn, Some("doomed")).unwrap();
    assert_eq!(of_doomed.len(), 2);
    for dead in &of_doomed {
        assert_eq!(dead.channel, "doomed");
        assert_eq!(dead.attempts, 1);
        let error = dead.last_error.as_deref().unwrap_or_default();
        assert!(error.contains("never works"), "{error}");
    }
    // And through the command line.
    let report = cli(&url, &["list"]);
    assert!(report.ends_with("5 dead\n"), "{report}");
    let line = report
        .lines()
        .find(|line| line.starts_with(&format!("{}\t", revivable[0])))
        .unwrap_or_else(|| panic!("no line for {}: {report}", revivable[0]));
    assert!(line.contains("\trevivable\t"), "{line}");
    assert!(line.contains("attempts=1"), "{line}");
    assert!(line.contains("revivable 1 is not ready yet"), "{line}");
    let report = cli(&url, &["list", "--channel", "doomed"]);
    assert_eq!(report.lines().count(), 3, "{report}");
    assert!(report.contains("doomed 1 never works"), "{report}");
    assert!(report.contains("doomed 2 never works"), "{report}");
    assert!(!report.contains("revivable"), "{report}");
    assert!(report.ends_with("2 dead\n"), "{report}");

    // Retry: one through the command line, one through the API; they are
    // available again with fresh attempts.
    REVIVED.store(true, Ordering::SeqCst);
    let first = revivable[0].to_string();
    assert_eq!(cli(&url, &["retry", "--id", &first]), "1 retried\n");
    assert_eq!(
        pgpubsub::dead::retry(
            &mut conn,
            &Selection::Ids(vec![revivable[1], doomed[0] + 1000])
        )
        .unwrap(),
        1
    );
    let retried = stored(
        &mut conn,
        &format!("id IN ({}, {})", revivable[0], revivable[1]),
    );
    assert_eq!(retried.len(), 2);
    for row in &retried {
        assert_eq!(row.attempts, 0, "{row:?}");
        assert!(!row.dead && !row.parked && row.available, "{row:?}");
    }
    // The rest are still dead.
    assert_eq!(pgpubsub::dead::list(&mut conn, None).unwrap().len(), 3);

    // A listener handles and removes the retried ones, and leaves the dead.
    let handle = dead_listener(&db);
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM handled WHERE channel = 'revivable'"
    ) == 2));
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM pgpubsub_notification"
    ) == 3));
    std::thread::sleep(Duration::from_millis(300));
    handle.shutdown().unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM handled WHERE channel = 'revivable' AND key IN (1, 2)"
        ),
        2
    );
    let left = stored(&mut conn, "true");
    assert_eq!(
        left.iter().map(|row| row.id).collect::<Vec<_>>(),
        [vec![revivable[2]], doomed.clone()].concat()
    );
    assert!(left
        .iter()
        .all(|row| row.dead && row.parked && row.attempts == 1));

    // Purge by channel: only that channel's dead ones go, not a live one
    // of the channel nor the other channel's dead one.
    pgpubsub::notify(&mut conn, &Doomed { key: 3 }).unwrap();
    assert_eq!(cli(&url, &["purge", "--channel", "doomed"]), "2 purged\n");
    let left = stored(&mut conn, "true");
    assert_eq!(left.len(), 2, "{left:#?}");
    assert_eq!(left[0].id, revivable[2]);
    assert!(left[0].dead);
    assert_eq!(left[1].channel, "doomed");
    assert!(!left[1].dead, "{left:?}");
    // Purge all, through the API: the live one stays.
    assert_eq!(
        pgpubsub::dead::purge(&mut conn, &Selection::All).unwrap(),
        1
    );
    let left = stored(&mut conn, "true");
    assert_eq!(left.len(), 1, "{left:#?}");
    assert!(!left[0].dead && left[0].channel == "doomed", "{left:?}");
    assert_eq!(cli(&url, &["list"]), "0 dead\n");
    assert_eq!(cli(&url, &["retry", "--all"]), "0 retried\n");

    // One selection, exactly.
    for args in [
        &["retry"][..],
        &["purge"],
        &["retry", "--all", "--channel", "doomed"],
        &["retry", "--id", "1", "--all"],
        &["purge", "--channel", "doomed", "--id", "1"],
        &["purge", "--all", "--id", "1,2"],
    ] {
        let mut all = vec!["--database-url", url.as_str()];
        all.extend_from_slice(args);
        let err = parse(&all).expect_err(&format!("{args:?} should not parse"));
        let expected = if args.len() == 1 {
            clap::error::ErrorKind::MissingRequiredArgument
        } else {
            clap::error::ErrorKind::ArgumentConflict
        };
        assert_eq!(err.kind(), expected, "{args:?}: {err}");
    }
    // Ids may repeat or be comma-separated.
    let ids = parse(&["retry", "--id", "1,2", "--id", "3"]).unwrap();
    match ids.command {
        pgpubsub::cli::DeadCommand::Retry(selection) => {
            assert_eq!(selection.selection(), Selection::Ids(vec![1, 2, 3]));
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// 7. A batch cut by handler time.

#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct Paced {
    key: i64,
}

#[pgpubsub::listener(Paced)]
fn paced(msg: Paced, conn: &mut PgConnection, ctx: &Context) -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_millis(150));
    diesel::sql_query(
        "INSERT INTO paced (key, attempt, xid, xact_start, done_at) \
         VALUES ($1, $2, txid_current()::text, now(), clock_timestamp())",
    )
    .bind::<BigInt, _>(msg.key)
    .bind::<Int4, _>(ctx.attempt())
    .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName, Debug)]
struct Transaction {
    #[diesel(sql_type = BigInt)]
    handlers: i64,
    #[diesel(sql_type = Double)]
    seconds: f64,
}

#[test]
fn a_batch_is_cut_by_handler_time_and_every_notification_is_handled_once() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    paced_notifications(&mut conn);
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .channels(["paced"])
            .batch_time(Duration::from_millis(300)),
    );
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM pgpubsub_notification"
    ) == 0));
    // Counted once the claim that ran them returns.
    assert!(wait_until(WAIT, || handle
        .stats()
        .completed
        .load(Ordering::SeqCst)
        == 20));
    assert!(handle.stats().batches_cut.load(Ordering::SeqCst) >= 1);
    handle.shutdown().unwrap();
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM paced"), 20);
    assert_eq!(
        count(&mut conn, "SELECT count(DISTINCT key) AS n FROM paced"),
        20
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM paced WHERE attempt <> 1"
        ),
        0
    );
    let transactions: Vec<Transaction> = diesel::sql_query(
        "SELECT count(*) AS handlers, \
                extract(epoch FROM max(done_at) - min(xact_start))::float8 AS seconds \
         FROM paced GROUP BY xid",
    )
    .load(&mut conn)
    .unwrap();
    // Each handler sleeps 150 ms, so after two the 300 ms are always up:
    // no transaction runs a third.
    assert!(
        transactions.iter().all(|tx| tx.handlers <= 2),
        "{transactions:#?}"
    );
    assert!(transactions.len() >= 10, "{transactions:#?}");
    // Uncut, the one transaction would have lasted 3 s.
    assert!(
        transactions.iter().all(|tx| tx.seconds < 2.5),
        "{transactions:#?}"
    );
}

fn paced_notifications(conn: &mut PgConnection) {
    conn.transaction::<_, anyhow::Error, _>(|conn| {
        for key in 1..=20 {
            pgpubsub::notify(conn, &Paced { key })?;
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_stopped_listener_gives_back_the_leased_notifications_it_did_not_run() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    paced_notifications(&mut conn);
    let listener = || {
        pgpubsub::Listener::new(db.url())
            .channels(["paced"])
            .batch_time(Duration::from_millis(300))
    };
    let handle = spawn_listening(listener());
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM paced"
    ) >= 4));
    handle.shutdown().unwrap();
    let handled = count(&mut conn, "SELECT count(*) AS n FROM paced");
    assert!(handled < 20, "the stop came too late to test anything");
    let left = stored(&mut conn, "true");
    assert_eq!(left.len() as i64, 20 - handled, "{left:#?}");
    // Leased with the rest of the batch, never run: their attempt is not
    // counted, and they are not taken for interrupted ones.
    assert!(
        left.iter()
            .all(|row| row.attempts == 0 && row.available && row.last_error.is_none()),
        "{left:#?}"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT (SELECT count(*) FROM pgpubsub_notification WHERE interrupted_at IS NOT NULL) \
             + (SELECT count(*) FROM pgpubsub_notification_leases) AS n"
        ),
        0
    );
    let handle = spawn_listening(listener());
    assert!(wait_until(WAIT, || count(
        &mut conn,
        "SELECT count(*) AS n FROM pgpubsub_notification"
    ) == 0));
    handle.shutdown().unwrap();
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM paced"), 20);
    assert_eq!(
        count(&mut conn, "SELECT count(DISTINCT key) AS n FROM paced"),
        20
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM paced WHERE attempt <> 1"
        ),
        0
    );
}

#[test]
fn a_lease_under_a_second_and_zero_max_attempts_are_refused() {
    // Refused before any connection is made.
    let url = "postgres://postgres@127.0.0.1:1/nowhere";
    for (listener, option) in [
        (
            pgpubsub::Listener::new(url).lease(Duration::from_millis(999)),
            "lease",
        ),
        (pgpubsub::Listener::new(url).max_attempts(0), "max_attempts"),
        (
            pgpubsub::Listener::new(url).batch_time(Duration::ZERO),
            "batch_time",
        ),
    ] {
        let err = listener
            .spawn()
            .err()
            .unwrap_or_else(|| panic!("`{option}` was accepted"));
        assert!(matches!(err, pgpubsub::Error::Config(_)), "{option}: {err}");
        assert!(err.to_string().contains(option), "{option}: {err}");
    }
    pgpubsub::Listener::new(url)
        .lease(Duration::from_secs(1))
        .config()
        .validate()
        .unwrap();
}

// ---------------------------------------------------------------------------
// The notifications waiting behind a cut batch keep their lease.

#[pgpubsub::channel(lock_notifications, max_attempts = 1)]
#[derive(Serialize, Deserialize)]
struct Hurried {
    key: i64,
}

#[pgpubsub::listener(Hurried)]
fn hurried(msg: Hurried, conn: &mut PgConnection, ctx: &Context) -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_millis(150));
    diesel::sql_query("INSERT INTO hurried (key, attempt) VALUES ($1, $2)")
        .bind::<BigInt, _>(msg.key)
        .bind::<Int4, _>(ctx.attempt())
        .execute(conn)?;
    Ok(())
}

// A batch cut by `batch_time` renews the leases of the notifications still
// waiting behind it inside the transaction that holds their locks, from the
// clock (not the transaction's start): even when the part that ran took
// longer than the lease (here 1 s of handlers against a 1 s lease), no idle
// worker finds them unlocked with a lease that ran out and takes them as
// interrupted (counting an attempt, or with `max_attempts = 1` making them
// dead without any handler having run).
#[test]
fn notifications_waiting_behind_a_cut_batch_are_not_taken_by_another_worker() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    conn.transaction::<_, anyhow::Error, _>(|conn| {
        for key in 1..=40 {
            pgpubsub::notify(conn, &Hurried { key })?;
        }
        Ok(())
    })
    .unwrap();
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .channels(["hurried"])
            .workers(4)
            .lease(Duration::from_secs(1))
            .batch_time(Duration::from_secs(1))
            .poll_interval(Duration::from_millis(1)),
    );
    assert!(wait_until(Duration::from_secs(60), || count(
        &mut conn,
        "SELECT count(*) AS n FROM pgpubsub_notification WHERE dead_at IS NULL"
    ) == 0));
    handle.shutdown().unwrap();
    let dead = pgpubsub::dead::list(&mut conn, None).unwrap();
    let handled = count(&mut conn, "SELECT count(*) AS n FROM hurried");
    let retried = count(
        &mut conn,
        "SELECT count(*) AS n FROM hurried WHERE attempt <> 1",
    );
    assert!(
        dead.is_empty() && retried == 0,
        "{} of 40 notifications never run were made dead by another worker's lease, \
         {retried} of the {handled} handled ran on a later attempt: {dead:#?}",
        dead.len()
    );
    assert_eq!(handled, 40);
    assert_eq!(
        count(&mut conn, "SELECT count(DISTINCT key) AS n FROM hurried"),
        40
    );
}

// ---------------------------------------------------------------------------
// A backlog drains in one chain of leases, even past a short one.

/// A notification whose last attempt was interrupted is leased alone, so
/// the lease before it stops short of the batch size. The chain goes on
/// past such short leases: the whole backlog drains with one lease taken
/// in a transaction of its own, each next one taken in the transaction
/// that settles the batch before.
#[test]
fn a_backlog_drains_in_one_chain_of_leases_past_short_ones() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    let messages: Vec<Bystander> = (1..=300).map(|key| Bystander { key }).collect();
    assert_eq!(pgpubsub::notify_all(&mut conn, &messages).unwrap(), 300);
    // Rows 50 and 120 as after an interrupted attempt: each is leased
    // alone, and the leases before them are short (49 and 69 rows).
    diesel::sql_query(
        "UPDATE pgpubsub_notification SET attempts = 1, interrupted_at = now(), failed_at = now() \
         WHERE id IN (SELECT id FROM pgpubsub_notification ORDER BY id OFFSET 49 LIMIT 1) \
            OR id IN (SELECT id FROM pgpubsub_notification ORDER BY id OFFSET 119 LIMIT 1)",
    )
    .execute(&mut conn)
    .unwrap();
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .channels(["bystander"])
            .workers(1)
            .batch_size(100)
            .poll_interval(Duration::from_secs(30)),
    );
    assert!(
        wait_until(WAIT, || count(
            &mut conn,
            "SELECT count(*) AS n FROM handled WHERE channel = 'bystander'"
        ) >= 300),
        "handled {} of 300",
        count(
            &mut conn,
            "SELECT count(*) AS n FROM handled WHERE channel = 'bystander'"
        )
    );
    let stats = handle.stats();
    let alone = stats.leases_alone.load(Ordering::SeqCst);
    let chained = stats.leases_chained.load(Ordering::SeqCst);
    handle.shutdown().unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(DISTINCT key) AS n FROM handled WHERE channel = 'bystander'"
        ),
        300
    );
    // 49 rows, then chained: 1, 69, 1, 100 and 80.
    assert_eq!((alone, chained), (1, 5), "(leases taken alone, chained)");
}

/// A wake-up brings in one idle worker, not all of them: with 8 idle
/// workers, one notification costs the woken worker two leases (the one
/// that finds it and the empty one that ends its chain: a channel so
/// drained is not claimed again until something new is announced), not a
/// sweep by every worker. A lease that comes back full
/// brings in the next worker, so a backlog is still shared.
#[test]
fn a_wake_up_wakes_one_idle_worker_and_a_full_lease_brings_in_the_next() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .channels(["bystander"])
            .workers(8)
            .batch_size(10)
            .poll_interval(Duration::from_secs(60)),
    );
    let stats = handle.stats();
    let leases = || {
        stats.leases_alone.load(Ordering::SeqCst)
            + stats.leases_chained.load(Ordering::SeqCst)
            + stats.leases_empty.load(Ordering::SeqCst)
    };
    // The start-up sweeps settle.
    let mut settled = leases();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = leases();
        if now == settled {
            break;
        }
        settled = now;
    }
    let handled = |conn: &mut PgConnection| {
        count(
            conn,
            "SELECT count(*) AS n FROM handled WHERE channel = 'bystander'",
        )
    };
    for round in 1..=3 {
        let before = leases();
        pgpubsub::notify(&mut conn, &Bystander { key: round }).unwrap();
        assert!(wait_until(WAIT, || handled(&mut conn) == round));
        std::thread::sleep(Duration::from_millis(300));
        let taken = leases() - before;
        // Waking all 8 took 11 (the woken worker's 4: those 2, then an
        // empty claim from its cursor and one from the start; and an empty
        // sweep by each of the other 7); one worker without the drained
        // mark, 4.
        assert!(taken <= 3, "one notification took {taken} leases");
    }
    // A backlog of 40 batches: the first worker's full lease wakes a second,
    // and so on, so several workers lease.
    let messages: Vec<Bystander> = (100..500).map(|key| Bystander { key }).collect();
    pgpubsub::notify_all(&mut conn, &messages).unwrap();
    assert!(wait_until(WAIT, || handled(&mut conn) == 403));
    let workers = count(
        &mut conn,
        "SELECT count(DISTINCT backend) AS n FROM handled WHERE channel = 'bystander' AND key >= 100",
    );
    handle.shutdown().unwrap();
    assert!(
        workers >= 2,
        "the backlog was handled by {workers} worker(s)"
    );
}
