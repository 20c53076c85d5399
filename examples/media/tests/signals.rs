//! SIGTERM for `media-example listen`, run as a child process: graceful at
//! any moment once the process can catch it (start-up included, exit 0); a
//! second one exits at once with 143; `--shutdown-timeout` bounds a stop
//! that cannot finish (a slow handler, a hung server).
//!
//! The hung server is a PostgreSQL cluster of the test's own
//! (`pg_createcluster`), whose processes are SIGSTOPped; the shared server
//! is never stopped.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::io::BufRead;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

const BIN: &str = env!("CARGO_BIN_EXE_media-example");

/// How long any wait of these tests lasts before it fails.
const PATIENCE: Duration = Duration::from_secs(90);

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A database on the server of `admin_url`, created and migrated by the
/// example's `demo`; dropped with the value.
struct DemoDb {
    name: String,
    url: String,
    admin_url: String,
}

impl DemoDb {
    fn new(admin_url: &str) -> DemoDb {
        let name = unique("pgpubsub_signals");
        let db = DemoDb {
            url: pgpubsub_tests::url_with_database(admin_url, &name),
            name,
            admin_url: admin_url.to_owned(),
        };
        run_demo(&db.url);
        db
    }
}

/// Runs the example's `demo` on `url`: creates and migrates the database.
fn run_demo(url: &str) {
    let out = Command::new(BIN)
        .args(["demo", "--database-url", url, "--timeout", "60"])
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the demo failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for DemoDb {
    fn drop(&mut self) {
        match PgConnection::establish(&self.admin_url) {
            Ok(mut admin) => {
                if let Err(err) = admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    pgpubsub::quote_ident(&self.name)
                )) {
                    eprintln!("cannot drop test database {}: {err}", self.name);
                }
            }
            Err(err) => eprintln!("cannot drop test database {}: {err}", self.name),
        }
    }
}

/// A running `media-example listen`, killed when dropped.
struct Listen {
    child: Child,
    /// Held, never read when the test wants the handler to block on a full
    /// pipe (dropping it would make the handler's writes fail instead).
    _stdout: Option<ChildStdout>,
    stderr: Receiver<String>,
    log: Vec<String>,
}

impl Listen {
    /// Starts `listen --database-url url extra...`. `stdout_piped`: stdout
    /// is a pipe nobody reads (else /dev/null).
    fn start(url: &str, extra: &[&str], stdout_piped: bool) -> Listen {
        let mut child = Command::new(BIN)
            .args(["listen", "--database-url", url])
            .args(extra)
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(if stdout_piped {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take();
        let pipe = child.stderr.take().unwrap();
        let (sender, stderr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Listen {
            child,
            _stdout: stdout,
            stderr,
            log: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for_log(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.log.push(line);
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("no `{needle}` in the log: {:?}", self.log);
    }

    /// The exit status, when the process ends within `timeout`.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.log.extend(self.stderr.try_iter());
                // The reader thread sees the end of the pipe shortly after.
                std::thread::sleep(Duration::from_millis(50));
                self.log.extend(self.stderr.try_iter());
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits until the process catches SIGTERM (its handler is installed).
    fn wait_catching_sigterm(&self) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if catches_sigterm(self.pid()) {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        panic!("the process never installed a SIGTERM handler");
    }

    /// Waits until a thread of the process blocks writing to a pipe (the
    /// handler's `println!` on the full stdout pipe).
    fn wait_blocked_on_stdout(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            assert!(self.running(), "listen exited: {:?}", self.log);
            let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap();
            let blocked = tasks.filter_map(Result::ok).any(|task| {
                std::fs::read_to_string(task.path().join("wchan"))
                    .is_ok_and(|wchan| wchan.contains("pipe_write"))
            });
            if blocked {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no handler blocked on stdout: {:?}", self.log);
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` has a SIGTERM handler (`SigCgt` bit 15).
fn catches_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}

fn assert_graceful(listen: &Listen, status: ExitStatus, context: &str) {
    assert_eq!(
        status.signal(),
        None,
        "{context}: killed by signal {:?} instead of stopping: {:?}",
        status.signal(),
        listen.log
    );
    assert_eq!(
        status.code(),
        Some(0),
        "{context}: exited with {status}: {:?}",
        listen.log
    );
}

// ---------------------------------------------------------------------------
// On the shared server.

/// A SIGTERM at every moment of start-up, from the moment the process
/// catches it (before that the kernel's default action applies: the debug
/// binary takes ~8 ms of dynamic loading before `main`) until it serves:
/// each run stops gracefully, with status 0.
#[test]
fn sigterm_at_any_moment_of_start_up_exits_zero() {
    let db = DemoDb::new(&pgpubsub_tests::admin_url());
    for delay_ms in [0, 1, 2, 5, 10, 20, 40, 80, 160, 320] {
        let mut listen = Listen::start(&db.url, &["--workers", "2"], false);
        listen.wait_catching_sigterm();
        std::thread::sleep(Duration::from_millis(delay_ms));
        listen.sigterm();
        let status = listen
            .wait(Duration::from_secs(40))
            .unwrap_or_else(|| panic!("{delay_ms} ms: listen did not stop: {:?}", listen.log));
        assert_graceful(&listen, status, &format!("SIGTERM {delay_ms} ms in"));
    }
}

/// A SIGTERM once it serves: the notification in hand finishes, exit 0.
#[test]
fn sigterm_while_serving_exits_zero_after_the_rows_in_hand() {
    let db = DemoDb::new(&pgpubsub_tests::admin_url());
    let mut listen = Listen::start(&db.url, &[], false);
    listen.wait_for_log("listening");
    let mut conn = PgConnection::establish(&db.url).unwrap();
    conn.batch_execute(
        "INSERT INTO media (name, size) SELECT 'term-' || i, i FROM generate_series(1, 500) i",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    listen.sigterm();
    let status = listen.wait(Duration::from_secs(40)).unwrap();
    assert_graceful(&listen, status, "SIGTERM while serving");
    assert!(
        listen.log.iter().any(|line| line.contains("stopping")),
        "{:?}",
        listen.log
    );
}

/// Fills the stdout pipe: the example's handler (`println!`) then blocks.
fn start_with_a_blocked_handler(db: &DemoDb, extra: &[&str]) -> Listen {
    let mut listen = Listen::start(&db.url, extra, true);
    listen.wait_for_log("listening");
    let mut conn = PgConnection::establish(&db.url).unwrap();
    // ~110 bytes a line: far more than a 64 KiB pipe holds.
    conn.batch_execute(
        "INSERT INTO media (name, size) SELECT 'slow-' || i, i FROM generate_series(1, 5000) i",
    )
    .unwrap();
    listen.wait_blocked_on_stdout();
    listen
}

#[test]
fn a_second_sigterm_while_a_handler_is_slow_exits_at_once_with_143() {
    let db = DemoDb::new(&pgpubsub_tests::admin_url());
    let mut listen = start_with_a_blocked_handler(&db, &[]);
    listen.sigterm();
    // The graceful stop waits for the handler (for up to 30 s).
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        listen.running(),
        "the first SIGTERM must wait for the handler in hand: {:?}",
        listen.log
    );
    listen.sigterm();
    let sent = Instant::now();
    let status = listen
        .wait(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("the second SIGTERM did not exit at once: {:?}", listen.log));
    assert_eq!(status.code(), Some(143), "{status}: {:?}", listen.log);
    assert!(sent.elapsed() < Duration::from_secs(2));
}

#[test]
fn shutdown_timeout_bounds_the_wait_for_a_slow_handler() {
    let db = DemoDb::new(&pgpubsub_tests::admin_url());
    let mut listen = start_with_a_blocked_handler(&db, &["--shutdown-timeout", "2"]);
    listen.sigterm();
    let sent = Instant::now();
    let status = listen
        .wait(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("listen outlived its shutdown timeout: {:?}", listen.log));
    let took = sent.elapsed();
    eprintln!("exited with {status} {took:?} after the SIGTERM");
    assert_eq!(status.signal(), None, "{status}: {:?}", listen.log);
    assert_ne!(status.code(), Some(0), "{status}: {:?}", listen.log);
    assert!(
        took >= Duration::from_millis(1800) && took <= Duration::from_secs(6),
        "exited {took:?} after the SIGTERM: {:?}",
        listen.log
    );
    assert!(
        listen
            .log
            .iter()
            .any(|line| line.contains("did not stop within")),
        "{:?}",
        listen.log
    );
}

// ---------------------------------------------------------------------------
// On a cluster of the test's own, whose processes are SIGSTOPped.

/// A `pg_createcluster` cluster: its processes continued, then stopped and
/// dropped with the value.
struct Cluster {
    version: String,
    name: String,
    port: u16,
    /// The processes this test stopped.
    stopped: Vec<u32>,
}

/// Runs a cluster tool in its own process group, failing with its output.
fn run_tool(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .output()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ))
    }
}

fn installed_version() -> Option<String> {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|version: &u32| {
            std::path::Path::new(&format!("/usr/lib/postgresql/{version}/bin/postgres")).exists()
        })
        .collect();
    versions.sort_unstable();
    versions.pop().map(|version| version.to_string())
}

impl Cluster {
    /// None (the test is skipped) when `pg_createcluster` is not installed.
    fn create() -> Option<Cluster> {
        let tool = Command::new("pg_createcluster").arg("--help").output();
        if tool.is_err() {
            eprintln!("skipped: pg_createcluster is not installed");
            return None;
        }
        let Some(version) = installed_version() else {
            eprintln!("skipped: no PostgreSQL server under /usr/lib/postgresql");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Made before the tools run: a half-created cluster is dropped too.
        let cluster = Cluster {
            version,
            name: unique("pgpubsub_signals"),
            port,
            stopped: Vec::new(),
        };
        let port = port.to_string();
        run_tool(
            "pg_createcluster",
            &[
                &cluster.version,
                &cluster.name,
                "--port",
                &port,
                "--",
                "-A",
                "trust",
            ],
        )
        .unwrap();
        run_tool(
            "pg_ctlcluster",
            &[
                "--skip-systemctl-redirect",
                &cluster.version,
                &cluster.name,
                "start",
            ],
        )
        .unwrap();
        Some(cluster)
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn postmaster(&self) -> u32 {
        let pid_file = format!(
            "/var/lib/postgresql/{}/{}/postmaster.pid",
            self.version, self.name
        );
        let text = std::fs::read_to_string(&pid_file).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    fn children(pid: u32) -> Vec<u32> {
        let out = Command::new("pgrep")
            .args(["-P", &pid.to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// SIGSTOPs the postmaster (first: it forks no more), then every one of
    /// its processes: the server hangs, connections stay open.
    fn hang(&mut self) {
        let postmaster = self.postmaster();
        signal_pid("STOP", postmaster);
        self.stopped.push(postmaster);
        for child in Cluster::children(postmaster) {
            signal_pid("STOP", child);
            self.stopped.push(child);
        }
    }

    fn resume(&mut self) {
        for pid in self.stopped.drain(..).rev() {
            signal_pid("CONT", pid);
        }
    }
}

fn signal_pid(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.resume();
        if let Err(err) = run_tool("pg_dropcluster", &["--stop", &self.version, &self.name]) {
            eprintln!(
                "could not remove cluster {}/{}: {err}\n  remove it with: pg_dropcluster --stop {} {}",
                self.version, self.name, self.version, self.name
            );
        }
    }
}

/// Start-up stuck connecting to a hung server: a second SIGTERM exits at
/// once (143); with `--shutdown-timeout 2` one SIGTERM ends the process
/// within a few seconds, non-zero.
#[test]
fn a_start_up_stuck_on_a_hung_server_ends_on_a_second_sigterm_or_at_the_shutdown_timeout() {
    let Some(mut cluster) = Cluster::create() else {
        return;
    };
    cluster.hang();
    let url = cluster.admin_url();

    let mut listen = Listen::start(&url, &[], false);
    listen.wait_catching_sigterm();
    // Well inside the connection attempt (its own timeout is 10 s).
    std::thread::sleep(Duration::from_millis(300));
    listen.sigterm();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        listen.running(),
        "the first SIGTERM waits for the start-up: {:?}",
        listen.log
    );
    listen.sigterm();
    let sent = Instant::now();
    let status = listen
        .wait(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("the second SIGTERM did not exit at once: {:?}", listen.log));
    assert_eq!(status.code(), Some(143), "{status}: {:?}", listen.log);
    assert!(sent.elapsed() < Duration::from_secs(2));

    let mut listen = Listen::start(&url, &["--shutdown-timeout", "2"], false);
    listen.wait_catching_sigterm();
    std::thread::sleep(Duration::from_millis(300));
    listen.sigterm();
    let sent = Instant::now();
    let status = listen
        .wait(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("listen outlived its shutdown timeout: {:?}", listen.log));
    let took = sent.elapsed();
    eprintln!("exited with {status} {took:?} after the SIGTERM");
    assert_eq!(status.signal(), None, "{status}: {:?}", listen.log);
    assert_ne!(status.code(), Some(0), "{status}: {:?}", listen.log);
    assert!(
        took >= Duration::from_millis(1800) && took <= Duration::from_secs(6),
        "exited {took:?} after the SIGTERM: {:?}",
        listen.log
    );
    drop(listen);
    cluster.resume();
}

/// A serving listener whose server hangs: the graceful stop cannot finish
/// (its queries never return); `--shutdown-timeout 2` ends it within a few
/// seconds, non-zero, saying why.
#[test]
fn shutdown_timeout_bounds_a_stop_stuck_on_a_hung_server() {
    let Some(mut cluster) = Cluster::create() else {
        return;
    };
    // Dropped with the cluster: nothing may query the hung server.
    let url = pgpubsub_tests::url_with_database(&cluster.admin_url(), "media");
    run_demo(&url);
    // Idle workers poll every 0.2 s: a poll after the hang is a query the
    // server never answers, which the stop cannot finish. (An idle
    // listener whose only hung connection is its LISTEN session stops at
    // once: that session is let go.)
    let mut listen = Listen::start(
        &url,
        &["--shutdown-timeout", "2", "--poll-interval", "0.2"],
        false,
    );
    listen.wait_for_log("listening");
    cluster.hang();
    std::thread::sleep(Duration::from_millis(800));
    listen.sigterm();
    let sent = Instant::now();
    let status = listen
        .wait(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("listen outlived its shutdown timeout: {:?}", listen.log));
    let took = sent.elapsed();
    eprintln!("exited with {status} {took:?} after the SIGTERM");
    assert_eq!(status.signal(), None, "{status}: {:?}", listen.log);
    assert_ne!(status.code(), Some(0), "{status}: {:?}", listen.log);
    assert!(
        took >= Duration::from_millis(1800) && took <= Duration::from_secs(6),
        "exited {took:?} after the SIGTERM: {:?}",
        listen.log
    );
    assert!(
        listen
            .log
            .iter()
            .any(|line| line.contains("did not stop within")),
        "{:?}",
        listen.log
    );
    drop(listen);
    cluster.resume();
}

#[test]
fn stored_notifications_of_a_channel_no_listener_serves_are_reported_at_start() {
    let db = DemoDb::new(&pgpubsub_tests::admin_url());
    let mut conn = PgConnection::establish(&db.url).unwrap();
    // Left by code that no longer exists: a channel nothing in this binary
    // serves, nor any other running listener. A dead one is not counted.
    conn.batch_execute(
        "INSERT INTO pgpubsub_notification (channel, payload) \
         SELECT 'retired_channel', '{}' FROM generate_series(1, 3); \
         INSERT INTO pgpubsub_notification (channel, payload, dead_at) \
         VALUES ('retired_channel', '{}', now())",
    )
    .unwrap();
    let mut listen = Listen::start(&db.url, &[], false);
    listen.wait_for_log("no running listener serves");
    let line = listen
        .log
        .iter()
        .find(|line| line.contains("no running listener serves"))
        .unwrap()
        .clone();
    assert!(line.contains("retired_channel"), "{line}");
    assert!(line.contains("stored=3"), "{line}");
    listen.wait_for_log("listening");
    // The example's own channel is served: only the retired one is
    // reported.
    assert!(
        !listen
            .log
            .iter()
            .any(|line| line.contains("no running listener serves") && line.contains("media")),
        "{:?}",
        listen.log
    );
    listen.sigterm();
    let status = listen.wait(Duration::from_secs(40)).unwrap();
    assert_graceful(&listen, status, "SIGTERM after the report");
}
