//! pgpubsub's benchmark: prints events/s, ratios and percentiles for the
//! measurements DESIGN.md asks for, against the plain-SQL floor, on a fresh
//! database of the server in `DATABASE_URL` (default: the local server).
//!
//! `cargo run --release -p pgpubsub-tests --bin pgpubsub-bench -- [--sizes 10000,100000] [--seconds 5] [--workers 2] [--batch 100] [--steady-seconds 60] [--only 1,8]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use pgpubsub_tests::TestDb;

diesel::table! { noop_rows (id) { id -> BigInt, v -> Int4 } }
diesel::table! { write_rows (id) { id -> BigInt, v -> Int4 } }
diesel::table! { latency_rows (id) { id -> BigInt, v -> Int4 } }
diesel::table! { steady_rows (id) { id -> BigInt, v -> BigInt } }

#[derive(Queryable, Selectable, Identifiable)]
#[diesel(table_name = noop_rows)]
struct NoopRow {
    id: i64,
    v: i32,
}

#[derive(Queryable, Selectable, Identifiable)]
#[diesel(table_name = write_rows)]
struct WriteRow {
    id: i64,
    v: i32,
}

#[derive(Queryable, Selectable, Identifiable)]
#[diesel(table_name = latency_rows)]
struct LatencyRow {
    id: i64,
    v: i32,
}

#[derive(Queryable, Selectable, Identifiable)]
#[diesel(table_name = steady_rows)]
struct SteadyRow {
    id: i64,
    v: i64,
}

#[pgpubsub::trigger_channel(model = SteadyRow, lock_notifications)]
struct SteadyChannel;

#[pgpubsub::trigger_channel(model = NoopRow, lock_notifications)]
struct NoopChannel;

#[pgpubsub::trigger_channel(model = WriteRow, lock_notifications)]
struct WriteChannel;

#[pgpubsub::trigger_channel(model = LatencyRow, lock_notifications)]
struct LatencyChannel;

/// A lockable message channel for the producer measure (no handler: the
/// measure is the sending).
#[pgpubsub::channel(lock_notifications)]
#[derive(serde::Serialize, serde::Deserialize)]
struct BenchMessage {
    n: i64,
}

static HANDLED: AtomicU64 = AtomicU64::new(0);
/// When the first event of a drain was handled.
static FIRST: Mutex<Option<Instant>> = Mutex::new(None);

/// Counts a handled event, noting when the first one was.
fn handled() {
    if HANDLED.fetch_add(1, Ordering::Relaxed) == 0 {
        if let Ok(mut first) = FIRST.lock() {
            *first = Some(Instant::now());
        }
    }
}
static LATENCY: Mutex<Option<mpsc::Sender<Instant>>> = Mutex::new(None);

#[pgpubsub::post_insert_listener(NoopChannel)]
fn noop(new: NoopRow) {
    std::hint::black_box((new.id, new.v));
    handled();
}

#[pgpubsub::post_insert_listener(WriteChannel)]
fn write_one(new: WriteRow, conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO sink (row_id, v) VALUES ($1, $2)")
        .bind::<BigInt, _>(new.id)
        .bind::<diesel::sql_types::Int4, _>(new.v)
        .execute(conn)?;
    handled();
    Ok(())
}

#[pgpubsub::post_insert_listener(LatencyChannel)]
fn latency(new: LatencyRow) {
    std::hint::black_box(new.id + i64::from(new.v));
    if let Ok(guard) = LATENCY.lock() {
        if let Some(sender) = guard.as_ref() {
            let _ = sender.send(Instant::now());
        }
    }
}

/// Steady load: when each write (by its `v`) committed and when its handler
/// started, in ns since `epoch` (0: not yet).
struct Steady {
    epoch: Instant,
    committed: Vec<AtomicU64>,
    started: Vec<AtomicU64>,
}

static STEADY: std::sync::RwLock<Option<Steady>> = std::sync::RwLock::new(None);

fn steady_mark(pick: fn(&Steady) -> &[AtomicU64], v: i64) {
    if let Ok(guard) = STEADY.read() {
        if let Some(steady) = guard.as_ref() {
            let at = steady.epoch.elapsed().as_nanos().max(1) as u64;
            if let Some(slot) = usize::try_from(v).ok().and_then(|v| pick(steady).get(v)) {
                // The first handler start counts (a retry would be later).
                let _ = slot.compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}

#[pgpubsub::post_insert_listener(SteadyChannel)]
fn steady(new: SteadyRow) {
    std::hint::black_box(new.id);
    steady_mark(|steady| &steady.started, new.v);
}

const SCHEMA: &str = "
CREATE TABLE steady_rows (id bigserial PRIMARY KEY, v bigint NOT NULL);
CREATE TABLE noop_rows (id bigserial PRIMARY KEY, v int NOT NULL);
CREATE TABLE write_rows (id bigserial PRIMARY KEY, v int NOT NULL);
CREATE TABLE latency_rows (id bigserial PRIMARY KEY, v int NOT NULL);
CREATE TABLE plain_rows (id bigserial PRIMARY KEY, v int NOT NULL);
CREATE TABLE sink (id bigserial PRIMARY KEY, row_id bigint NOT NULL, v int NOT NULL);
";

struct Args {
    sizes: Vec<u64>,
    seconds: u64,
    workers: usize,
    batch: i64,
    /// The sections to run (1-based), all when empty.
    only: Vec<u32>,
    /// How long each steady-load run lasts.
    steady_seconds: u64,
}

impl Args {
    fn runs(&self, section: u32) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sizes: vec![10_000, 100_000],
        seconds: 5,
        workers: 2,
        batch: 100,
        only: Vec::new(),
        steady_seconds: 60,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let value = iter
            .next()
            .ok_or_else(|| format!("`{flag}` needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("`{flag} {value}`: {e}");
        match flag.as_str() {
            "--sizes" => {
                args.sizes = value
                    .split(',')
                    .map(|s| s.trim().parse().map_err(bad))
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => args.seconds = value.parse().map_err(bad)?,
            "--workers" => args.workers = value.parse().map_err(bad)?,
            "--batch" => args.batch = value.parse().map_err(bad)?,
            "--steady-seconds" => args.steady_seconds = value.parse().map_err(bad)?,
            "--only" => {
                args.only = value
                    .split(',')
                    .map(|s| s.trim().parse().map_err(bad))
                    .collect::<Result<_, _>>()?
            }
            other => {
                return Err(format!(
                "unknown flag `{other}`; expected --sizes, --seconds, --workers, --batch, --only, --steady-seconds"
            ))
            }
        }
    }
    Ok(args)
}

fn exec(conn: &mut PgConnection, sql: &str) {
    if let Err(err) = conn.batch_execute(sql) {
        panic!("`{sql}` failed: {err}");
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .map(|c| c.n)
        .unwrap_or_else(|err| panic!("`{sql}` failed: {err}"))
}

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The machine's CPU time so far, busy and idle, in ms (`/proc/stat`).
fn cpu_ms() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal; 100 ticks per second.
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0) * 10;
    let idle = at(3) + at(4);
    let busy = (0..8).filter(|i| *i != 3 && *i != 4).map(at).sum();
    (busy, idle)
}

/// This process's CPU time so far (all threads), in ms.
fn own_cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    (fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)) * 10
}

/// Inserts `n` rows into `table` in one statement, then drains them with a
/// listener started afterwards; returns events/s.
fn drain(db: &TestDb, args: &Args, table: &str, channel: &str, n: u64) -> f64 {
    let mut conn = db.conn();
    exec(
        &mut conn,
        &format!("INSERT INTO {table} (v) SELECT i FROM generate_series(1, {n}) i"),
    );
    HANDLED.store(0, Ordering::SeqCst);
    if let Ok(mut first) = FIRST.lock() {
        *first = None;
    }
    let cpu_before = cpu_ms();
    let own_before = own_cpu_ms();
    let start = Instant::now();
    let handle = pgpubsub::Listener::new(db.url())
        .channels([channel])
        .workers(args.workers)
        .batch_size(args.batch)
        .spawn()
        .unwrap_or_else(|err| panic!("listener: {err}"));
    let mut peak = 0;
    while HANDLED.load(Ordering::Relaxed) < n {
        std::thread::sleep(Duration::from_millis(1));
        peak = peak.max(rss_kib().0);
    }
    let elapsed = start.elapsed();
    let first = FIRST
        .lock()
        .ok()
        .and_then(|mut first| first.take())
        .map(|at| at.saturating_duration_since(start));
    let cpu_after = cpu_ms();
    let own_after = own_cpu_ms();
    let stats = handle.stats();
    let leases = (
        stats.leases_alone.load(Ordering::Relaxed),
        stats.leases_chained.load(Ordering::Relaxed),
        stats.leases_empty.load(Ordering::Relaxed),
    );
    if let Err(err) = handle.shutdown() {
        panic!("listener failed: {err}");
    }
    if n >= 100_000 {
        println!(
            "    listener process RSS while draining {n}: peak {} MiB",
            peak / 1024
        );
    }
    let per_10k = |ms: u64| ms as f64 * 10_000.0 / n as f64;
    println!(
        "    {table}: first handled after {:?}; machine CPU per 10k events: busy {:.0} ms (listener process {:.0} ms), idle {:.0} ms",
        first.unwrap_or_default(),
        per_10k(cpu_after.0 - cpu_before.0),
        per_10k(own_after - own_before),
        per_10k(cpu_after.1 - cpu_before.1)
    );
    println!(
        "    {table}: {n} rows, leases taken alone {} / chained {} / found nothing {} (batch {})",
        leases.0, leases.1, leases.2, args.batch
    );
    n as f64 / elapsed.as_secs_f64()
}

/// The plain-SQL floor: claim-and-delete 100 at a time, `workers` sessions,
/// no payload decoding, no handler, no cursor.
fn raw_drain(db: &TestDb, workers: usize, n: u64) -> f64 {
    let mut conn = db.conn();
    exec(&mut conn, "ALTER TABLE noop_rows DISABLE TRIGGER USER");
    exec(
        &mut conn,
        &format!("INSERT INTO pgpubsub_notification (channel, payload) SELECT 'raw', jsonb_build_object('id', i, 'v', i) FROM generate_series(1, {n}) i"),
    );
    exec(&mut conn, "ALTER TABLE noop_rows ENABLE TRIGGER USER");
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut conn = db.conn();
                // The plan pgpubsub pins too: an ordered index scan that stops
                // at the batch, whatever the statistics.
                exec(
                    &mut conn,
                    "SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off",
                );
                loop {
                    let claimed = count(&mut conn, "WITH c AS (DELETE FROM pgpubsub_notification WHERE id IN (SELECT id FROM pgpubsub_notification WHERE channel = 'raw' AND NOT broadcast ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING payload) SELECT count(*) AS n FROM c");
                    if claimed == 0 {
                        break;
                    }
                }
            });
        }
    });
    n as f64 / start.elapsed().as_secs_f64()
}

/// Single-row INSERT transactions/s from 4 clients for `seconds`.
fn writer_tps(db: &TestDb, table: &str, seconds: u64) -> f64 {
    let total = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let mut conn = db.conn();
                let sql = format!("INSERT INTO {table} (v) VALUES (1)");
                let mut done = 0;
                while Instant::now() < deadline {
                    exec(&mut conn, &sql);
                    done += 1;
                }
                total.fetch_add(done, Ordering::Relaxed);
            });
        }
    });
    total.load(Ordering::Relaxed) as f64 / seconds as f64
}

fn bulk_seconds(db: &TestDb, table: &str, n: u64) -> f64 {
    let mut conn = db.conn();
    let start = Instant::now();
    exec(
        &mut conn,
        &format!("INSERT INTO {table} (v) SELECT i FROM generate_series(1, {n}) i"),
    );
    start.elapsed().as_secs_f64()
}

/// A listener of `channel` with `workers` (and `batch`, when given),
/// subscribed.
fn listening(
    url: &str,
    channel: &str,
    workers: usize,
    batch: Option<i64>,
) -> pgpubsub::ListenerHandle {
    let mut listener = pgpubsub::Listener::new(url)
        .channels([channel])
        .workers(workers);
    if let Some(batch) = batch {
        listener = listener.batch_size(batch);
    }
    let handle = listener
        .spawn()
        .unwrap_or_else(|err| panic!("listener: {err}"));
    assert!(
        handle.wait_listening(Duration::from_secs(10)),
        "listener did not start"
    );
    handle
}

/// Routes the latency handler's start times to the returned receiver.
fn latency_receiver() -> mpsc::Receiver<Instant> {
    let (sender, receiver) = mpsc::channel();
    if let Ok(mut guard) = LATENCY.lock() {
        *guard = Some(sender);
    }
    receiver
}

/// Single-row insert transactions into `steady_rows` from 4 writers, each
/// `v` a fresh sequence number, paced to `rate` per second in all (as fast
/// as they go when `None`), for `seconds`; returns how many were written.
/// With `at_10s`, calls it once 10 s in.
fn steady_writers(
    db: &TestDb,
    rate: Option<f64>,
    seconds: u64,
    at_10s: Option<&(dyn Fn() + Sync)>,
) -> u64 {
    let next = AtomicU64::new(1);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    std::thread::scope(|scope| {
        for writer in 0..4u64 {
            let next = &next;
            scope.spawn(move || {
                let mut conn = db.conn();
                let interval = rate.map(|rate| Duration::from_secs_f64(4.0 / rate));
                // Writers start spread over one interval.
                let mut due = start + interval.map_or(Duration::ZERO, |i| i * writer as u32 / 4);
                while Instant::now() < deadline {
                    if let Some(interval) = interval {
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        due += interval;
                    }
                    let v = next.fetch_add(1, Ordering::Relaxed) as i64;
                    if let Err(err) = diesel::sql_query("INSERT INTO steady_rows (v) VALUES ($1)")
                        .bind::<BigInt, _>(v)
                        .execute(&mut conn)
                    {
                        panic!("steady write: {err}");
                    }
                    steady_mark(|steady| &steady.committed, v);
                }
            });
        }
        if let Some(at_10s) = at_10s {
            let ten = start + Duration::from_secs(10);
            scope.spawn(move || {
                let now = Instant::now();
                if ten < deadline {
                    std::thread::sleep(ten.saturating_duration_since(now));
                    at_10s();
                }
            });
        }
    });
    next.load(Ordering::Relaxed) - 1
}

#[derive(QueryableByName, Debug, Default, Clone, Copy)]
struct TableSize {
    #[diesel(sql_type = BigInt)]
    table_bytes: i64,
    #[diesel(sql_type = BigInt)]
    index_bytes: i64,
    #[diesel(sql_type = BigInt)]
    dead: i64,
    #[diesel(sql_type = BigInt)]
    live: i64,
}

/// The notification table's and its claim index's size, and its dead and
/// live tuples (exact: `pgstattuple`).
fn table_size(conn: &mut PgConnection) -> TableSize {
    diesel::sql_query(
        "SELECT pg_relation_size('pgpubsub_notification') AS table_bytes, \
                pg_relation_size('pgpubsub_notification_live_idx') AS index_bytes, \
                s.dead_tuple_count AS dead, s.tuple_count AS live \
         FROM pgstattuple('pgpubsub_notification') AS s",
    )
    .get_result(conn)
    .unwrap_or_else(|err| panic!("table size: {err}"))
}

fn describe(size: TableSize) -> String {
    format!(
        "table {:.1} MiB ({} live, {} dead tuples), index {:.1} MiB",
        size.table_bytes as f64 / 1048576.0,
        size.live,
        size.dead,
        size.index_bytes as f64 / 1048576.0
    )
}

/// DESIGN's steady load: writers and a listener together for
/// `steady_seconds` at 50% and 90% of the writers' maximum rate.
fn steady_load(db: &TestDb, args: &Args) {
    let mut conn = db.conn();
    exec(&mut conn, "CREATE EXTENSION IF NOT EXISTS pgstattuple");
    let seconds = args.steady_seconds;
    println!(
        "\n8. steady load: 4 writers of single-row transactions and a listener ({} workers), {seconds} s per run",
        args.workers
    );
    let listener = || listening(db.url(), "steady_channel", args.workers, Some(args.batch));
    let install = |capacity: usize| {
        if let Ok(mut guard) = STEADY.write() {
            *guard = Some(Steady {
                epoch: Instant::now(),
                committed: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
                started: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            });
        }
    };
    // The writers' maximum, with the listener serving.
    install(4_000_000);
    let handle = listener();
    let probe = 5;
    let max = steady_writers(db, None, probe, None) as f64 / probe as f64;
    if let Err(err) = handle.shutdown() {
        panic!("listener failed: {err}");
    }
    println!("  writers' maximum with the listener running: {max:.0}/s");
    for share in [0.5, 0.9] {
        exec(&mut conn, "TRUNCATE steady_rows, pgpubsub_notification");
        exec(&mut conn, "VACUUM pgpubsub_notification");
        let rate = max * share;
        install((rate * seconds as f64 * 1.2) as usize + 1000);
        let handle = listener();
        let early = Mutex::new(TableSize::default());
        let at_10s = || {
            let mut conn = db.conn();
            if let Ok(mut early) = early.lock() {
                *early = table_size(&mut conn);
            }
        };
        let written = steady_writers(db, Some(rate), seconds, Some(&at_10s));
        let backlog = pgpubsub_tests::count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification WHERE channel = 'steady_channel' AND dead_at IS NULL",
        );
        let end = table_size(&mut conn);
        if let Err(err) = handle.shutdown() {
            panic!("listener failed: {err}");
        }
        let mut lags = Vec::new();
        let mut unhandled = 0u64;
        if let Ok(guard) = STEADY.read() {
            if let Some(steady) = guard.as_ref() {
                for v in 1..=written as usize {
                    let committed = steady.committed[v].load(Ordering::Relaxed);
                    let started = steady.started[v].load(Ordering::Relaxed);
                    if committed == 0 || started == 0 {
                        unhandled += 1;
                        continue;
                    }
                    lags.push(Duration::from_nanos(started.saturating_sub(committed)));
                }
            }
        }
        lags.sort();
        let early = early.lock().map(|early| *early).unwrap_or_default();
        println!(
            "  {:.0}% ({rate:.0}/s asked, {:.0}/s written): lag commit -> handler start p50 {:?} | p99 {:?} | max {:?}; backlog at the end {backlog} ({unhandled} not handled when the writers stopped)",
            share * 100.0,
            written as f64 / seconds as f64,
            lags.get(lags.len() / 2).copied().unwrap_or_default(),
            if lags.is_empty() { Duration::ZERO } else { percentile(&lags, 0.99) },
            lags.last().copied().unwrap_or_default(),
        );
        println!("      after 10 s: {}", describe(early));
        println!("      at the end: {}", describe(end));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    let db = TestDb::new(SCHEMA);
    println!(
        "pgpubsub-bench on {} ({} workers, batch {})",
        db.name(),
        args.workers,
        args.batch
    );

    if args.runs(1) {
        println!("\n1. drain: N rows inserted by one statement, then a listener drains them");
        for &n in &args.sizes {
            let raw = raw_drain(&db, args.workers, n);
            let noop = drain(&db, &args, "noop_rows", "noop_channel", n);
            let write = drain(&db, &args, "write_rows", "write_channel", n);
            println!("  N={n:>8}: raw SQL floor {raw:>9.0}/s | no-op handler {noop:>9.0}/s ({:.2}x floor) | one INSERT per event {write:>9.0}/s", noop / raw);
        }
    }
    if args.runs(2) {
        println!(
            "\n2. writer overhead: single-row INSERT transactions/s, 4 clients, {}s each",
            args.seconds
        );
        let mut conn = db.conn();
        let plain = writer_tps(&db, "plain_rows", args.seconds);
        let triggered = writer_tps(&db, "noop_rows", args.seconds);
        println!(
            "  without trigger {plain:>8.0}/s | with lockable trigger {triggered:>8.0}/s | ratio {:.2}",
            triggered / plain
        );
        exec(&mut conn, "TRUNCATE pgpubsub_notification");
    }
    if args.runs(3) {
        let mut conn = db.conn();
        println!("\n3. bulk write: one INSERT of 100000 rows");
        let plain = bulk_seconds(&db, "plain_rows", 100_000);
        let triggered = bulk_seconds(&db, "noop_rows", 100_000);
        println!(
            "  without trigger {:.3}s | with trigger {:.3}s | ratio {:.2}",
            plain,
            triggered,
            triggered / plain
        );
        exec(&mut conn, "TRUNCATE pgpubsub_notification");
    }
    if args.runs(4) {
        let mut conn = db.conn();
        println!("\n4. latency: idle listener, single insert committed -> handler start");
        let receiver = latency_receiver();
        let handle = listening(db.url(), "latency_channel", args.workers, None);
        let mut samples = Vec::new();
        for _ in 0..300 {
            let before_commit = Instant::now();
            exec(&mut conn, "INSERT INTO latency_rows (v) VALUES (1)");
            match receiver.recv_timeout(Duration::from_secs(10)) {
                Ok(at) => samples.push(at.saturating_duration_since(before_commit)),
                Err(_) => panic!("a latency sample timed out"),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Err(err) = handle.shutdown() {
            panic!("listener failed: {err}");
        }
        samples.sort();
        println!(
            "  p50 {:?} | p90 {:?} | p99 {:?} | max {:?} ({} samples)",
            percentile(&samples, 0.5),
            percentile(&samples, 0.9),
            percentile(&samples, 0.99),
            samples[samples.len() - 1],
            samples.len()
        );
    }
    if args.runs(5) {
        println!("\n5. recovery: every listener session terminated -> next handler start");
        let receiver = latency_receiver();
        let mut conn = db.conn();
        let handle = listening(db.url(), "latency_channel", args.workers, None);
        let mut samples = Vec::new();
        for _ in 0..50 {
            // Warm: the listener serves, then loses every session at once.
            exec(&mut conn, "INSERT INTO latency_rows (v) VALUES (1)");
            if receiver.recv_timeout(Duration::from_secs(30)).is_err() {
                panic!("the listener did not serve before the kill");
            }
            let killed = Instant::now();
            exec(
                &mut conn,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            );
            exec(&mut conn, "INSERT INTO latency_rows (v) VALUES (1)");
            match receiver.recv_timeout(Duration::from_secs(60)) {
                Ok(at) => samples.push(at.saturating_duration_since(killed)),
                Err(_) => panic!("no notification handled within 60 s of the kill"),
            }
        }
        let restarts = handle.stats().restarts.load(Ordering::Relaxed);
        if let Err(err) = handle.shutdown() {
            panic!("listener failed: {err}");
        }
        samples.sort();
        println!(
            "  p50 {:?} | p90 {:?} | p99 {:?} | max {:?} ({} kills, {restarts} worker restarts)",
            percentile(&samples, 0.5),
            percentile(&samples, 0.9),
            percentile(&samples, 0.99),
            samples[samples.len() - 1],
            samples.len()
        );
    }
    if args.runs(6) {
        println!("\n6. producer: 10000 messages sent in one transaction");
        let messages: Vec<BenchMessage> = (0..10_000).map(|n| BenchMessage { n }).collect();
        let mut conn = db.conn();
        let start = Instant::now();
        conn.transaction::<_, pgpubsub::Error, _>(|conn| {
            for message in &messages {
                pgpubsub::notify(conn, message)?;
            }
            Ok(())
        })
        .unwrap_or_else(|err| panic!("notify: {err}"));
        let one_by_one = messages.len() as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        conn.transaction::<_, pgpubsub::Error, _>(|conn| pgpubsub::notify_all(conn, &messages))
            .unwrap_or_else(|err| panic!("notify_all: {err}"));
        let all = messages.len() as f64 / start.elapsed().as_secs_f64();
        println!(
            "  notify one by one {one_by_one:>9.0}/s | notify_all {all:>9.0}/s | ratio {:.1}",
            all / one_by_one
        );
        exec(&mut conn, "DELETE FROM pgpubsub_notification");
    }
    if args.runs(8) {
        steady_load(&db, &args);
    }
    let (_, hwm) = rss_kib();
    println!("\n7. memory: bench process peak RSS {} MiB", hwm / 1024);
}
