//! pgpubsub's fault run: drains a lockable channel through several listener
//! processes while they are killed, their database sessions terminated and
//! the server restarted, then checks that every notification was handled
//! exactly once (or ended dead). See docs/fault-run.md.
//!
//! `cargo run --release -p pgpubsub-tests --bin pgpubsub-chaos -- [--notifications 100000] [--listeners 3] [--duration-limit 600]`
//!
//! The run creates a PostgreSQL 15 cluster of its own (`pg_createcluster`,
//! so it needs root and the Debian PostgreSQL tools), on a free port, and
//! drops it at the end. It never touches any other cluster.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Text};
use pgpubsub_tests::{url_with_database, TestDb};

// ---------------------------------------------------------------------------
// The channel and its handler: what every listener process runs.

diesel::table! {
    chaos_job (id) {
        id -> BigInt,
        key -> BigInt,
        kill -> Bool,
    }
}

/// One unit of work: `key` is what the handler records; `kill` rows are
/// poison that kills the listener process handling them.
#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = chaos_job)]
struct ChaosJob {
    id: i64,
    key: i64,
    kill: bool,
}

#[pgpubsub::trigger_channel(model = ChaosJob, lock_notifications)]
struct ChaosChannel;

/// The channel's name as the listener and the notification table spell it.
const CHANNEL: &str = "chaos_channel";

/// Records the key in the claiming transaction (so it commits together with
/// the notification's removal), or kills the process on a poison row.
#[pgpubsub::post_insert_listener(ChaosChannel)]
fn handle_job(new: ChaosJob, conn: &mut PgConnection) -> QueryResult<()> {
    if new.kill {
        eprintln!(
            "pgpubsub-chaos: poison row {} (key {}): aborting the process",
            new.id, new.key
        );
        std::process::abort();
    }
    diesel::sql_query("INSERT INTO chaos_handled (key) VALUES ($1)")
        .bind::<BigInt, _>(new.key)
        .execute(conn)
        .map(drop)
}

/// `chaos_handled` has no unique constraint: a key handled twice shows up
/// as two rows.
const SCHEMA: &str = "
CREATE TABLE chaos_job (id bigserial PRIMARY KEY, key bigint NOT NULL, kill boolean NOT NULL DEFAULT false);
CREATE INDEX chaos_job_key_idx ON chaos_job (key);
CREATE TABLE chaos_handled (key bigint NOT NULL);
";

/// `application_name` of the controller's own sessions (producer, fault
/// injector, checks): the backend kills spare them.
const CONTROLLER_APP: &str = "pgpubsub-chaos-controller";
/// `application_name` of the listener processes' sessions.
const LISTENER_APP: &str = "pgpubsub-chaos-listener";
/// The PostgreSQL major version of the run's cluster.
const PG_VERSION: &str = "15";
/// How long a listener process stays down before the supervisor restarts it
/// (systemd's `RestartSec` default is 100 ms).
const RESTART_DELAY: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------
// Command line.

/// Fault run for pgpubsub: produce notifications while listener processes
/// are killed, their sessions terminated and the server restarted; then
/// check that nothing was lost or handled twice.
#[derive(Parser, Debug)]
#[command(name = "pgpubsub-chaos", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Internal>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Internal {
    /// One listener process (started by the run itself).
    #[command(hide = true)]
    Listen(ListenArgs),
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Notifications to produce (rows inserted into the channel's table).
    #[arg(long, default_value_t = 100_000)]
    notifications: u64,
    /// Of those, poison rows whose handler aborts the listener process; they
    /// are expected to end dead.
    #[arg(long, default_value_t = 5)]
    kill_rows: u64,
    /// Listener processes, each restarted whenever it exits.
    #[arg(long, default_value_t = 3)]
    listeners: usize,
    /// Worker threads per listener process.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Notifications a listener claims per transaction.
    #[arg(long, default_value_t = 100)]
    claim_batch: i64,
    /// Seconds a claimed notification stays reserved before another
    /// listener may claim it again (`Listener::lease`).
    #[arg(long, default_value = "2", value_parser = parse_secs, value_name = "SECS")]
    lease: Duration,
    /// Attempts before a notification is dead (`Listener::max_attempts`).
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Rows produced per second (0: as fast as possible); faults run while
    /// rows are produced.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// Rows per producer INSERT (one transaction each).
    #[arg(long, default_value_t = 500)]
    insert_batch: u64,
    /// Mean seconds between `kill -9`s of a random listener process (each
    /// interval is drawn from 2/3 to 4/3 of it; 0: none).
    #[arg(long, default_value = "1.5", value_parser = parse_secs, value_name = "SECS")]
    kill9_every: Duration,
    /// Mean seconds between rounds of `pg_terminate_backend` on a random
    /// half of the listeners' sessions (0: none).
    #[arg(long, default_value = "3", value_parser = parse_secs, value_name = "SECS")]
    backend_kill_every: Duration,
    /// Fast restarts of the server, spread evenly over the production.
    #[arg(long, default_value_t = 1)]
    server_restarts: u64,
    /// Seconds the whole run may take; work left after it is a failure.
    #[arg(long, default_value = "600", value_parser = parse_secs, value_name = "SECS")]
    duration_limit: Duration,
    /// Seed of the fault schedule (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args, Debug, Clone)]
struct ListenArgs {
    /// The database to listen on.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value_t = 100)]
    batch_size: i64,
    #[arg(long, default_value = "2", value_parser = parse_secs, value_name = "SECS")]
    lease: Duration,
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|err| format!("`{text}` is not a number of seconds: {err}"))?;
    Duration::try_from_secs_f64(secs).map_err(|err| format!("`{text}` seconds: {err}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Internal::Listen(args)) => listen(&args),
        None => match controller(&cli.run) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(err) => {
                eprintln!("pgpubsub-chaos: error: {err:#}");
                ExitCode::from(2)
            }
        },
    }
}

// ---------------------------------------------------------------------------
// A listener process.

/// The listener one chaos listener process runs.
fn listener(args: &ListenArgs) -> pgpubsub::Listener {
    pgpubsub::Listener::new(&args.url)
        .workers(args.workers)
        .batch_size(args.batch_size)
        // Dead notifications: a notification whose listener died is claimable
        // again after its lease, and dead after `max_attempts` claims.
        .lease(args.lease)
        .max_attempts(args.max_attempts)
}

fn listen(args: &ListenArgs) -> ExitCode {
    pgpubsub::cli::init_logging(&args.log_level, pgpubsub::cli::LogFormat::Text);
    eprintln!(
        "pgpubsub-chaos listener pid {}: {} workers, batch {}, lease {:?}, max attempts {}",
        std::process::id(),
        args.workers,
        args.batch_size,
        args.lease,
        args.max_attempts
    );
    // An orphan (the controller was killed) must not keep serving.
    let parent = std::os::unix::process::parent_id();
    let watchdog = std::thread::Builder::new()
        .name("chaos-parent-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            if std::os::unix::process::parent_id() != parent {
                eprintln!("pgpubsub-chaos listener: the controller is gone; exiting");
                std::process::exit(3);
            }
        });
    if let Err(err) = watchdog {
        eprintln!("pgpubsub-chaos listener: cannot start the parent watchdog: {err}");
        return ExitCode::FAILURE;
    }
    match listener(args).run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pgpubsub-chaos listener: {err}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// The run's own PostgreSQL cluster.

/// A `pg_createcluster` cluster, stopped and dropped with the value.
struct Cluster {
    name: String,
    port: u16,
}

impl Cluster {
    fn create(port: u16) -> Result<Cluster> {
        // Made before the tools run, so a half-created cluster is dropped too.
        let cluster = Cluster {
            name: format!("pgpubsub_chaos_{}", std::process::id()),
            port,
        };
        let port = port.to_string();
        run_tool(
            "pg_createcluster",
            &[
                PG_VERSION,
                &cluster.name,
                "--port",
                &port,
                "--",
                "-A",
                "trust",
            ],
        )?;
        run_tool(
            "pg_ctlcluster",
            &[
                "--skip-systemctl-redirect",
                PG_VERSION,
                &cluster.name,
                "start",
            ],
        )?;
        Ok(cluster)
    }

    /// A fast restart, in a thread of its own: faults go on meanwhile.
    fn restart(&self) -> std::thread::JoinHandle<Result<()>> {
        let name = self.name.clone();
        std::thread::spawn(move || {
            run_tool(
                "pg_ctlcluster",
                &[
                    "--skip-systemctl-redirect",
                    PG_VERSION,
                    &name,
                    "restart",
                    "-m",
                    "fast",
                ],
            )
        })
    }

    /// The `postgres` database, as the controller connects.
    fn admin_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?application_name={CONTROLLER_APP}",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.name.starts_with("pgpubsub_chaos_") {
            return;
        }
        match run_tool("pg_dropcluster", &["--stop", PG_VERSION, &self.name]) {
            Ok(()) => eprintln!("removed cluster {PG_VERSION}/{}", self.name),
            Err(err) => eprintln!(
                "pgpubsub-chaos: could not remove cluster {PG_VERSION}/{}: {err:#}\n  remove it with: pg_dropcluster --stop {PG_VERSION} {}",
                self.name, self.name
            ),
        }
    }
}

/// Runs a PostgreSQL cluster tool in its own process group (a ctrl-c in the
/// terminal must not reach the server it starts), failing with its output.
fn run_tool(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot bind a TCP port to find a free one")?;
    Ok(socket
        .local_addr()
        .context("reading the bound port")?
        .port())
}

/// Clusters left behind by runs that were killed (the name carries the pid).
fn warn_about_stale_clusters() {
    let Ok(output) = Command::new("pg_lsclusters").arg("-h").output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut fields = line.split_whitespace();
        let (Some(version), Some(name)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(pid) = name.strip_prefix("pgpubsub_chaos_") else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("warning: cluster {version}/{name} is left over from an earlier run; remove it with `pg_dropcluster --stop {version} {name}`");
        }
    }
}

// ---------------------------------------------------------------------------
// Small database helpers: every error names the statement.

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn connect(url: &str) -> Result<PgConnection> {
    PgConnection::establish(url).with_context(|| format!("cannot connect to {url}"))
}

fn count(conn: &mut PgConnection, sql: &str) -> Result<i64> {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .map(|row| row.n)
        .with_context(|| format!("`{sql}` failed"))
}

/// Waits until `url` accepts connections.
fn wait_for_server(url: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match PgConnection::establish(url) {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                bail!("the server at {url} did not accept connections within {timeout:?}: {err}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// How a dead notification is recognized: the library's `dead_at` column
/// when the schema has it, else the parking it does for permanent errors.
fn dead_condition(conn: &mut PgConnection) -> Result<&'static str> {
    let has_dead_at = count(
        conn,
        "SELECT count(*) AS n FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = 'pgpubsub_notification' \
         AND column_name = 'dead_at'",
    )? > 0;
    Ok(if has_dead_at {
        "dead_at IS NOT NULL"
    } else {
        "available_at = 'infinity'"
    })
}

// ---------------------------------------------------------------------------
// Randomness for the fault schedule (SplitMix64: no dependency, seedable).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `mean` scaled by a factor drawn from [2/3, 4/3).
    fn around(&mut self, mean: Duration) -> Duration {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        mean.mul_f64(2.0 / 3.0 + unit * 2.0 / 3.0)
    }
}

// ---------------------------------------------------------------------------
// The supervisor: keeps `n` listener processes running, like systemd's
// `Restart=always`.

#[derive(Default)]
struct Exits {
    killed: u64,
    aborted: u64,
    other: u64,
}

struct Slot {
    child: Option<Child>,
    down_since: Option<Instant>,
    starts: u64,
    log: PathBuf,
}

struct Supervisor {
    exe: PathBuf,
    args: Vec<String>,
    slots: Vec<Slot>,
    exits: Exits,
    started: Instant,
}

impl Supervisor {
    fn new(exe: PathBuf, args: Vec<String>, n: usize, log_dir: &Path, started: Instant) -> Self {
        let slots = (0..n)
            .map(|i| Slot {
                child: None,
                down_since: None,
                starts: 0,
                log: log_dir.join(format!("listener-{i}.log")),
            })
            .collect();
        Supervisor {
            exe,
            args,
            slots,
            exits: Exits::default(),
            started,
        }
    }

    /// Records exited listeners and starts the ones due.
    fn tick(&mut self) -> Result<()> {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            let Some(status) = child
                .try_wait()
                .with_context(|| format!("waiting for listener {i}"))?
            else {
                continue;
            };
            match status.signal() {
                Some(9) => self.exits.killed += 1,
                Some(6) => {
                    self.exits.aborted += 1;
                    eprintln!(
                        "[{:6.1}s] listener {i} (pid {}) aborted (poison row)",
                        self.started.elapsed().as_secs_f64(),
                        child.id()
                    );
                }
                _ => {
                    self.exits.other += 1;
                    eprintln!(
                        "[{:6.1}s] listener {i} (pid {}) exited: {status} (see {})",
                        self.started.elapsed().as_secs_f64(),
                        child.id(),
                        slot.log.display()
                    );
                }
            }
            slot.child = None;
            slot.down_since = Some(Instant::now());
        }
        for i in 0..self.slots.len() {
            let due = match (&self.slots[i].child, self.slots[i].down_since) {
                (Some(_), _) => false,
                (None, None) => true,
                (None, Some(since)) => since.elapsed() >= RESTART_DELAY,
            };
            if due {
                self.start(i)?;
            }
        }
        Ok(())
    }

    fn start(&mut self, i: usize) -> Result<()> {
        let slot = &mut self.slots[i];
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slot.log)
            .with_context(|| format!("opening {}", slot.log.display()))?;
        slot.starts += 1;
        writeln!(
            log,
            "--- start {} at {:.1}s",
            slot.starts,
            self.started.elapsed().as_secs_f64()
        )
        .with_context(|| format!("writing {}", slot.log.display()))?;
        let stdout = log
            .try_clone()
            .with_context(|| format!("opening {}", slot.log.display()))?;
        let child = Command::new(&self.exe)
            .arg("listen")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting listener {i} ({})", self.exe.display()))?;
        slot.child = Some(child);
        slot.down_since = None;
        Ok(())
    }

    /// `kill -9` of a random running listener; its pid.
    fn kill_random(&mut self, rng: &mut Rng) -> Option<u32> {
        let running: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].child.is_some())
            .collect();
        if running.is_empty() {
            return None;
        }
        let child = self.slots[running[rng.below(running.len())]]
            .child
            .as_mut()?;
        child.kill().ok().map(|()| child.id())
    }

    fn restarts(&self) -> u64 {
        self.slots
            .iter()
            .map(|slot| slot.starts.saturating_sub(1))
            .sum()
    }

    /// SIGTERM to every listener, then waits for them (SIGKILL after
    /// `timeout`). Returns how many had to be killed.
    fn stop(&mut self, timeout: Duration) -> u64 {
        for slot in &self.slots {
            if let Some(child) = &slot.child {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + timeout;
        let mut forced = 0;
        for slot in &mut self.slots {
            let Some(mut child) = slot.child.take() else {
                continue;
            };
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        forced += 1;
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        forced
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The producer: inserts the keys 1..=N in batches at the requested rate,
// surviving server restarts. A batch is one statement, so after an error it
// either committed entirely or not at all; the table says which.

#[derive(Default)]
struct Progress {
    produced: AtomicU64,
    retries: AtomicU64,
    done: AtomicBool,
    stop: AtomicBool,
}

struct Production<'a> {
    url: &'a str,
    notifications: u64,
    kill_keys: &'a [i64],
    insert_batch: u64,
    rate: f64,
    deadline: Instant,
}

fn produce(plan: &Production<'_>, progress: &Progress) -> Result<()> {
    let mut conn: Option<PgConnection> = None;
    let mut due = Instant::now();
    let mut first = 1u64;
    while first <= plan.notifications {
        let last = (first + plan.insert_batch - 1).min(plan.notifications);
        while Instant::now() < due && !progress.stop.load(Ordering::Relaxed) {
            std::thread::sleep((due - Instant::now()).min(Duration::from_millis(50)));
        }
        insert_batch(plan, progress, &mut conn, first, last)?;
        progress.produced.store(last, Ordering::Relaxed);
        if plan.rate > 0.0 {
            // Paced from the later of the schedule and now: time lost to a
            // server restart stretches the production instead of ending it
            // in one burst.
            let pause = Duration::from_secs_f64((last - first + 1) as f64 / plan.rate);
            due = due.max(Instant::now()) + pause;
        }
        first = last + 1;
    }
    progress.done.store(true, Ordering::Relaxed);
    Ok(())
}

/// What the database holds of a batch after an attempt.
enum Batch {
    Committed,
    /// Part of one INSERT committed: impossible, and a failure.
    Partial(i64),
}

/// Inserts keys `first..=last`, retrying across lost connections and server
/// restarts until the batch is known to be committed.
fn insert_batch(
    plan: &Production<'_>,
    progress: &Progress,
    conn: &mut Option<PgConnection>,
    first: u64,
    last: u64,
) -> Result<()> {
    let mut uncertain = false;
    let mut reported = false;
    loop {
        if progress.stop.load(Ordering::Relaxed) {
            bail!("the producer was stopped at keys {first}..={last}");
        }
        if Instant::now() >= plan.deadline {
            bail!("the producer ran out of time at keys {first}..={last}");
        }
        match try_insert(plan, conn, first as i64, last as i64, uncertain) {
            Ok(Batch::Committed) => return Ok(()),
            Ok(Batch::Partial(present)) => {
                bail!("keys {first}..={last}: {present} rows of one INSERT committed")
            }
            Err(err) => {
                if !reported {
                    eprintln!("producer: {err:#}; retrying");
                    reported = true;
                }
                progress.retries.fetch_add(1, Ordering::Relaxed);
                *conn = None;
                uncertain = true;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// One attempt; after a failed one (`uncertain`), first asks whether it
/// committed after all (the connection can drop after the commit).
fn try_insert(
    plan: &Production<'_>,
    conn: &mut Option<PgConnection>,
    first: i64,
    last: i64,
    uncertain: bool,
) -> Result<Batch> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(connect(plan.url)?),
    };
    if uncertain {
        let present =
            diesel::sql_query("SELECT count(*) AS n FROM chaos_job WHERE key BETWEEN $1 AND $2")
                .bind::<BigInt, _>(first)
                .bind::<BigInt, _>(last)
                .get_result::<Count>(conn)
                .context("checking whether a failed batch committed")?
                .n;
        if present == last - first + 1 {
            return Ok(Batch::Committed);
        }
        if present != 0 {
            return Ok(Batch::Partial(present));
        }
    }
    diesel::sql_query(
        "INSERT INTO chaos_job (key, kill) \
         SELECT k, k = ANY($3) FROM generate_series($1::bigint, $2::bigint) AS k",
    )
    .bind::<BigInt, _>(first)
    .bind::<BigInt, _>(last)
    .bind::<Array<BigInt>, _>(plan.kill_keys)
    .execute(conn)
    .with_context(|| format!("inserting keys {first}..={last}"))?;
    Ok(Batch::Committed)
}

/// The kill rows' keys, spread evenly over 1..=n.
fn kill_keys(n: u64, kills: u64) -> Vec<i64> {
    (1..=kills)
        .map(|i| (i * (n + 1) / (kills + 1)) as i64)
        .collect()
}

// ---------------------------------------------------------------------------
// Faults.

#[derive(Default)]
struct Faults {
    kill9: u64,
    backend_kills: u64,
    server_restarts: u64,
}

/// The controller's session for faults and progress, reopened after the
/// server drops it.
struct Probe {
    url: String,
    conn: Option<PgConnection>,
}

impl Probe {
    fn with<T>(&mut self, f: impl FnOnce(&mut PgConnection) -> Result<T>) -> Result<T> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.url)?);
        }
        let conn = self.conn.as_mut().ok_or_else(|| anyhow!("no connection"))?;
        let result = f(conn);
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// The listeners' sessions: every client session of the database but the
/// controller's.
fn listener_sessions(conn: &mut PgConnection) -> Result<Vec<i32>> {
    Ok(diesel::sql_query(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND backend_type = 'client backend' AND application_name IS DISTINCT FROM $1",
    )
    .bind::<Text, _>(CONTROLLER_APP)
    .load::<Pid>(conn)
    .context("listing the listeners' sessions")?
    .into_iter()
    .map(|row| row.pid)
    .collect())
}

/// Terminates a random half (at least one) of the listeners' sessions;
/// returns how many ended.
fn terminate_backends(conn: &mut PgConnection, rng: &mut Rng) -> Result<u64> {
    let sessions = listener_sessions(conn)?;
    if sessions.is_empty() {
        return Ok(0);
    }
    let mut chosen: Vec<i32> = sessions
        .iter()
        .copied()
        .filter(|_| rng.next() & 1 == 0)
        .collect();
    if chosen.is_empty() {
        chosen.push(sessions[rng.below(sessions.len())]);
    }
    let ended = diesel::sql_query(
        "SELECT count(*) AS n FROM unnest($1::int4[]) AS s(pid) WHERE pg_terminate_backend(s.pid)",
    )
    .bind::<Array<Integer>, _>(&chosen)
    .get_result::<Count>(conn)
    .context("pg_terminate_backend")?
    .n;
    Ok(ended as u64)
}

// ---------------------------------------------------------------------------
// The run.

/// Why the control loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Drained,
    TimedOut,
    ProducerFailed,
    Interrupted,
}

#[derive(QueryableByName)]
struct Snapshot {
    #[diesel(sql_type = BigInt)]
    handled: i64,
    #[diesel(sql_type = BigInt)]
    queued: i64,
}

/// The control loop's state: supervises the listeners and injects faults
/// while the producer runs, then waits for the queue to drain.
struct Control<'a> {
    args: &'a RunArgs,
    cluster: &'a Cluster,
    supervisor: &'a mut Supervisor,
    probe: Probe,
    rng: Rng,
    faults: Faults,
    progress: &'a Progress,
    dead: &'static str,
    started: Instant,
    deadline: Instant,
    interrupted: &'a AtomicBool,
    /// When the last notification was produced (since the start).
    produced_at: Option<Duration>,
    /// Server restarts begun (the finished ones are in `faults`).
    restarts_begun: u64,
    /// The restart under way: its thread, when it began, rows produced then.
    restarting: Option<(std::thread::JoinHandle<Result<()>>, Instant, u64)>,
}

impl Control<'_> {
    /// Seconds since the start, for log lines.
    fn t(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn run(&mut self, producer_finished: impl Fn() -> bool) -> Result<End> {
        let end = self.run_loop(producer_finished);
        // Never leave a restart running behind the results (or the drop).
        let restart = self.finish_restart(true);
        let end = end?;
        restart?;
        Ok(end)
    }

    fn run_loop(&mut self, producer_finished: impl Fn() -> bool) -> Result<End> {
        let args = self.args;
        let first = Instant::now();
        let mut next_kill9 =
            (!args.kill9_every.is_zero()).then(|| first + self.rng.around(args.kill9_every));
        let mut next_backend_kill = (!args.backend_kill_every.is_zero())
            .then(|| first + self.rng.around(args.backend_kill_every));
        let mut next_report = first + Duration::from_secs(2);
        let mut next_drain_check = first;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            if self.interrupted.load(Ordering::Relaxed) {
                eprintln!("[{:6.1}s] interrupted: stopping", self.t());
                return Ok(End::Interrupted);
            }
            let now = Instant::now();
            if now >= self.deadline {
                eprintln!("[{:6.1}s] time limit reached", self.t());
                return Ok(End::TimedOut);
            }
            self.supervisor.tick()?;
            let produced = self.progress.produced.load(Ordering::Relaxed);
            let done = self.progress.done.load(Ordering::Relaxed);
            if !done && producer_finished() {
                return Ok(End::ProducerFailed);
            }
            // Server restarts at evenly spaced points of the production.
            let restarts = args.server_restarts;
            if self.restarting.is_some() {
                self.finish_restart(false)?;
            } else if self.restarts_begun < restarts
                && produced >= (self.restarts_begun + 1) * args.notifications / (restarts + 1)
            {
                self.restarts_begun += 1;
                self.restarting = Some((self.cluster.restart(), Instant::now(), produced));
                eprintln!(
                    "[{:6.1}s] restarting the server (-m fast) at {produced} produced",
                    self.t()
                );
            }
            if !done {
                if next_kill9.is_some_and(|at| now >= at) {
                    self.kill9();
                    next_kill9 = Some(now + self.rng.around(args.kill9_every));
                }
                if next_backend_kill.is_some_and(|at| now >= at) {
                    self.kill_backends();
                    next_backend_kill = Some(now + self.rng.around(args.backend_kill_every));
                }
            } else {
                if self.produced_at.is_none() {
                    self.produced_at = Some(self.started.elapsed());
                    eprintln!(
                        "[{:6.1}s] all {produced} notifications produced; faults stop, draining",
                        self.t()
                    );
                }
                if self.faults.server_restarts >= restarts
                    && self.restarting.is_none()
                    && now >= next_drain_check
                {
                    next_drain_check = now + Duration::from_millis(250);
                    if let Ok(snapshot) = self.snapshot() {
                        if snapshot.queued == 0 {
                            eprintln!(
                                "[{:6.1}s] queue drained ({} handled rows)",
                                self.t(),
                                snapshot.handled
                            );
                            return Ok(End::Drained);
                        }
                    }
                }
            }
            if now >= next_report {
                next_report = now + Duration::from_secs(2);
                self.report(produced);
            }
        }
    }

    /// Counts the restart under way once it has finished (or, with `wait`,
    /// waits for it).
    fn finish_restart(&mut self, wait: bool) -> Result<()> {
        match &self.restarting {
            Some((thread, _, _)) if wait || thread.is_finished() => {}
            _ => return Ok(()),
        }
        let Some((thread, began, produced)) = self.restarting.take() else {
            return Ok(());
        };
        thread
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the restart thread panicked")))
            .context("restarting the server")?;
        self.faults.server_restarts += 1;
        self.probe.conn = None;
        eprintln!(
            "[{:6.1}s] server restarted in {:.1}s (begun at {produced} produced)",
            self.t(),
            began.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn kill9(&mut self) {
        if let Some(pid) = self.supervisor.kill_random(&mut self.rng) {
            self.faults.kill9 += 1;
            eprintln!("[{:6.1}s] kill -9 listener pid {pid}", self.t());
        }
    }

    fn kill_backends(&mut self) {
        let rng = &mut self.rng;
        match self.probe.with(|conn| terminate_backends(conn, rng)) {
            Ok(ended) => {
                self.faults.backend_kills += ended;
                eprintln!(
                    "[{:6.1}s] pg_terminate_backend: {ended} listener sessions",
                    self.t()
                );
            }
            Err(err) => eprintln!("[{:6.1}s] backend kill skipped: {err:#}", self.t()),
        }
    }

    /// Handled rows and notifications still alive.
    fn snapshot(&mut self) -> Result<Snapshot> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM chaos_handled) AS handled, \
             (SELECT count(*) FROM pgpubsub_notification \
              WHERE channel = $1 AND NOT broadcast AND NOT ({})) AS queued",
            self.dead
        );
        self.probe.with(|conn| {
            diesel::sql_query(&sql)
                .bind::<Text, _>(CHANNEL)
                .get_result::<Snapshot>(conn)
                .context("reading the progress")
        })
    }

    fn report(&mut self, produced: u64) {
        let Ok(snapshot) = self.snapshot() else {
            return;
        };
        eprintln!(
            "[{:6.1}s] produced {produced}, handled {}, queued {}; faults: kill9 {}, backend kills {}, server restarts {}; listener restarts {}",
            self.t(),
            snapshot.handled,
            snapshot.queued,
            self.faults.kill9,
            self.faults.backend_kills,
            self.faults.server_restarts,
            self.supervisor.restarts()
        );
    }
}

#[derive(QueryableByName, Debug)]
struct Tally {
    #[diesel(sql_type = BigInt)]
    produced: i64,
    #[diesel(sql_type = BigInt)]
    kill_rows: i64,
    #[diesel(sql_type = BigInt)]
    handled_rows: i64,
    #[diesel(sql_type = BigInt)]
    distinct_keys: i64,
    #[diesel(sql_type = BigInt)]
    dead: i64,
    #[diesel(sql_type = BigInt)]
    dead_kill_rows: i64,
    #[diesel(sql_type = BigInt)]
    lost: i64,
    #[diesel(sql_type = BigInt)]
    dead_and_handled: i64,
    #[diesel(sql_type = BigInt)]
    alive: i64,
    #[diesel(sql_type = BigInt)]
    unknown_keys: i64,
}

/// The final counts, read once every listener has stopped.
fn tally(conn: &mut PgConnection, dead: &str) -> Result<Tally> {
    let sql = format!(
        "WITH dead AS (
             SELECT (payload->'new'->>'key')::bigint AS key FROM pgpubsub_notification
             WHERE channel = $1 AND NOT broadcast AND {dead}
         ), handled AS (SELECT DISTINCT key FROM chaos_handled)
         SELECT
             (SELECT count(*) FROM chaos_job) AS produced,
             (SELECT count(*) FROM chaos_job WHERE kill) AS kill_rows,
             (SELECT count(*) FROM chaos_handled) AS handled_rows,
             (SELECT count(*) FROM handled) AS distinct_keys,
             (SELECT count(*) FROM dead) AS dead,
             (SELECT count(*) FROM chaos_job j
              WHERE j.kill AND EXISTS (SELECT FROM dead d WHERE d.key = j.key)) AS dead_kill_rows,
             (SELECT count(*) FROM chaos_job j
              WHERE NOT EXISTS (SELECT FROM handled h WHERE h.key = j.key)
                AND NOT EXISTS (SELECT FROM dead d WHERE d.key = j.key)) AS lost,
             (SELECT count(*) FROM handled h
              WHERE EXISTS (SELECT FROM dead d WHERE d.key = h.key)) AS dead_and_handled,
             (SELECT count(*) FROM pgpubsub_notification
              WHERE channel = $1 AND NOT broadcast AND NOT ({dead})) AS alive,
             (SELECT count(*) FROM handled h
              WHERE NOT EXISTS (SELECT FROM chaos_job j WHERE j.key = h.key)) AS unknown_keys"
    );
    diesel::sql_query(&sql)
        .bind::<Text, _>(CHANNEL)
        .get_result::<Tally>(conn)
        .context("counting the results")
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    row: String,
}

/// For a failed run: the first notifications still alive, as stored
/// (without the payload but with its key), on stderr.
fn print_alive(url: &str, dead: &str) {
    let sql = format!(
        "SELECT ((to_jsonb(n) - 'payload') || jsonb_build_object('key', n.payload->'new'->'key'))::text AS row \
         FROM pgpubsub_notification AS n \
         WHERE channel = $1 AND NOT broadcast AND NOT ({dead}) ORDER BY id LIMIT 10"
    );
    let rows = connect(url).and_then(|mut conn| {
        diesel::sql_query(&sql)
            .bind::<Text, _>(CHANNEL)
            .load::<Row>(&mut conn)
            .context("listing the notifications left")
    });
    match rows {
        Ok(rows) => {
            eprintln!("notifications still alive (first 10):");
            for row in rows {
                eprintln!("  {}", row.row);
            }
        }
        Err(err) => eprintln!("{err:#}"),
    }
}

fn validate(args: &RunArgs) -> Result<()> {
    if args.notifications == 0 || args.listeners == 0 || args.workers == 0 {
        bail!("--notifications, --listeners and --workers must be at least 1");
    }
    if args.kill_rows > args.notifications {
        bail!("--kill-rows cannot exceed --notifications");
    }
    if args.insert_batch == 0 || args.claim_batch < 1 || args.max_attempts == 0 {
        bail!("--insert-batch, --claim-batch and --max-attempts must be at least 1");
    }
    if args.lease < Duration::from_secs(1) {
        bail!("--lease must be at least 1 second (the library's minimum)");
    }
    if !args.rate.is_finite() || args.rate < 0.0 {
        bail!("--rate must be a number of rows per second, 0 or more");
    }
    Ok(())
}

/// The whole fault run; `Ok(true)` when nothing was lost or duplicated and
/// the queue drained in time.
fn controller(args: &RunArgs) -> Result<bool> {
    let started = Instant::now();
    validate(args)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .context("installing the signal handler")?;
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos() as u64)
            ^ u64::from(std::process::id())
    });
    let deadline = started + args.duration_limit;

    // Declared first, dropped last: the cluster outlives the database, the
    // listeners and every connection.
    warn_about_stale_clusters();
    let port = free_port()?;
    let cluster = Cluster::create(port)?;
    eprintln!(
        "cluster {PG_VERSION}/{} on port {port}; seed {seed}",
        cluster.name
    );
    let admin = cluster.admin_url();
    wait_for_server(&admin, Duration::from_secs(30))?;
    let db = TestDb::new_on(&admin, SCHEMA);
    let url = db.url().to_owned();
    let listener_url = url_with_database(
        &format!("postgres://postgres@127.0.0.1:{port}/postgres?application_name={LISTENER_APP}"),
        db.name(),
    );
    let dead = dead_condition(&mut connect(&url)?)?;
    eprintln!(
        "database {}; a notification is dead when {dead}{}",
        db.name(),
        if dead.starts_with("dead_at") {
            ""
        } else {
            " (the schema has no dead_at column)"
        }
    );

    let log_dir = tempfile::Builder::new()
        .prefix("pgpubsub-chaos-")
        .tempdir()
        .context("creating the log directory")?;
    let exe = std::env::current_exe().context("locating this binary")?;
    let listen_args = vec![
        "--url".to_owned(),
        listener_url,
        "--workers".to_owned(),
        args.workers.to_string(),
        "--batch-size".to_owned(),
        args.claim_batch.to_string(),
        "--lease".to_owned(),
        args.lease.as_secs_f64().to_string(),
        "--max-attempts".to_owned(),
        args.max_attempts.to_string(),
    ];
    let mut supervisor = Supervisor::new(exe, listen_args, args.listeners, log_dir.path(), started);
    let mut probe = Probe {
        url: url.clone(),
        conn: None,
    };
    // Every listener has a session before the faults begin.
    loop {
        supervisor.tick()?;
        let sessions = probe.with(|conn| Ok(listener_sessions(conn)?.len()))?;
        if sessions >= args.listeners {
            break;
        }
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if started.elapsed() > Duration::from_secs(60) || Instant::now() >= deadline {
            bail!(
                "the listeners did not connect (their logs are in {})",
                log_dir.keep().display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let setup = started.elapsed();
    eprintln!(
        "{} listeners x {} workers up after {:.1}s; producing {} notifications ({} kill rows) at {}",
        args.listeners,
        args.workers,
        setup.as_secs_f64(),
        args.notifications,
        args.kill_rows,
        if args.rate > 0.0 {
            format!("{} rows/s", args.rate)
        } else {
            "full speed".to_owned()
        }
    );

    let kill_keys = kill_keys(args.notifications, args.kill_rows);
    let progress = Progress::default();
    let production = Production {
        url: &url,
        notifications: args.notifications,
        kill_keys: &kill_keys,
        insert_batch: args.insert_batch,
        rate: args.rate,
        deadline,
    };
    let mut control = Control {
        args,
        cluster: &cluster,
        supervisor: &mut supervisor,
        probe,
        rng: Rng(seed),
        faults: Faults::default(),
        progress: &progress,
        dead,
        started,
        deadline,
        interrupted: &interrupted,
        produced_at: None,
        restarts_begun: 0,
        restarting: None,
    };
    let (end, producer) = std::thread::scope(|scope| {
        let producer = scope.spawn(|| produce(&production, &progress));
        let end = control.run(|| producer.is_finished());
        progress.stop.store(true, Ordering::Relaxed);
        let producer = producer
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the producer panicked")));
        (end, producer)
    });
    let end = end?;
    let (faults, produced_at) = (control.faults, control.produced_at);
    let finished_at = started.elapsed();
    let forced = supervisor.stop(Duration::from_secs(15));

    let tally = tally(&mut connect(&url)?, dead)?;
    let duplicated = tally.handled_rows - tally.distinct_keys;
    let total = faults.kill9 + faults.backend_kills + faults.server_restarts;
    println!("processed {}", tally.distinct_keys);
    println!("lost {}", tally.lost);
    println!("duplicated {duplicated}");
    println!("dead {}", tally.dead);
    println!(
        "faults injected {total} (kill9 {}, backend_kills {}, server_restarts {})",
        faults.kill9, faults.backend_kills, faults.server_restarts
    );
    let phases = match produced_at {
        Some(at) => format!(
            "setup {:.1}s, producing {:.1}s, draining after it {:.1}s",
            setup.as_secs_f64(),
            (at - setup).as_secs_f64(),
            (finished_at - at).as_secs_f64()
        ),
        None => format!("setup {:.1}s, production unfinished", setup.as_secs_f64()),
    };
    println!("elapsed {:.1}s ({phases})", started.elapsed().as_secs_f64());
    println!(
        "produced {} of {} (kill rows {}); dead kill rows {} of {}, dead other rows {}; alive left {}",
        tally.produced,
        args.notifications,
        tally.kill_rows,
        tally.dead_kill_rows,
        tally.kill_rows,
        tally.dead - tally.dead_kill_rows,
        tally.alive
    );
    println!(
        "listener restarts {} (after our kill -9 {}, poison-row aborts {}, other exits {}); producer retries {}; listeners killed at the end for ignoring SIGTERM {forced}",
        supervisor.restarts(),
        supervisor.exits.killed,
        supervisor.exits.aborted,
        supervisor.exits.other,
        progress.retries.load(Ordering::Relaxed),
    );

    let mut failures = Vec::new();
    if tally.lost > 0 {
        failures.push(format!("{} keys lost", tally.lost));
    }
    if duplicated > 0 {
        failures.push(format!("{duplicated} duplicate handler runs"));
    }
    if tally.dead_and_handled > 0 {
        failures.push(format!(
            "{} keys both handled and dead",
            tally.dead_and_handled
        ));
    }
    if tally.unknown_keys > 0 {
        failures.push(format!(
            "{} handled keys were never produced",
            tally.unknown_keys
        ));
    }
    if tally.produced != args.notifications as i64 {
        failures.push(format!(
            "produced {} of {} notifications",
            tally.produced, args.notifications
        ));
    }
    if let Err(err) = producer {
        failures.push(format!("the producer failed: {err:#}"));
    }
    match end {
        End::Drained | End::ProducerFailed => {}
        End::TimedOut => failures.push(format!(
            "timed out after {:?} with {} notifications alive",
            args.duration_limit, tally.alive
        )),
        End::Interrupted => failures.push("interrupted".to_owned()),
    }
    if failures.is_empty() {
        println!("result ok");
        Ok(true)
    } else {
        println!("result FAILED: {}", failures.join("; "));
        if tally.alive > 0 {
            print_alive(&url, dead);
        }
        eprintln!("listener logs kept in {}", log_dir.keep().display());
        Ok(false)
    }
}
