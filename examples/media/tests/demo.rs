//! The example's binaries, run as a user runs them, against the local server.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// How long one run of a binary may take before the test kills it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A database the demo creates; dropped when the test ends, passed or not.
struct DemoDb {
    name: String,
    url: String,
}

impl DemoDb {
    fn new() -> DemoDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("pgpubsub_example_demo_{}_{nanos}", std::process::id());
        let url = pgpubsub_tests::url_with_database(&pgpubsub_tests::admin_url(), &name);
        DemoDb { name, url }
    }
}

impl Drop for DemoDb {
    fn drop(&mut self) {
        match PgConnection::establish(&pgpubsub_tests::admin_url()) {
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

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `program` with `args`, killing it after [`RUN_TIMEOUT`].
fn run(program: &str, args: &[&str]) -> Run {
    let mut child = Command::new(program)
        .args(args)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{program} {args:?} still ran after {RUN_TIMEOUT:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn demo(db: &DemoDb) -> Run {
    run(
        env!("CARGO_BIN_EXE_media-example"),
        &["demo", "--database-url", &db.url, "--timeout", "60"],
    )
}

#[test]
fn demo_creates_its_database_and_scans_media_on_insert_and_update() {
    let db = DemoDb::new();
    let first = demo(&db);
    assert!(first.status.success(), "the demo failed: {first}");
    assert!(
        first
            .stdout
            .contains(&format!("Created database {}.", db.name)),
        "{first}"
    );
    assert!(
        first
            .stdout
            .contains("Perform virus scan on the new media Media { id: 1, name: \"holiday.mp4\", size: 1048576,"),
        "{first}"
    );
    assert!(
        first
            .stdout
            .contains("Media updated; scan Media { id: 1, name: \"holiday.mp4\", size: 2097152,"),
        "{first}"
    );
    assert_eq!(
        first.stdout.matches("Perform virus scan").count(),
        1,
        "{first}"
    );
    assert_eq!(
        first.stdout.matches("all over again.").count(),
        1,
        "{first}"
    );

    // Again on the same database: nothing to create or migrate, a new row.
    let second = demo(&db);
    assert!(second.status.success(), "the second demo failed: {second}");
    assert!(!second.stdout.contains("Created database"), "{second}");
    assert!(!second.stdout.contains("Applied migration"), "{second}");
    assert!(
        second
            .stdout
            .contains("Perform virus scan on the new media Media { id: 2,"),
        "{second}"
    );
    assert!(
        second.stdout.contains("Media updated; scan Media { id: 2,"),
        "{second}"
    );
}

#[test]
fn demo_fails_with_a_clear_message_when_the_server_is_unreachable() {
    let out = run(
        env!("CARGO_BIN_EXE_media-example"),
        &[
            "demo",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/pgpubsub_unreachable",
        ],
    );
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("demo failed: cannot connect to the PostgreSQL server"),
        "{out}"
    );
}

#[test]
fn committed_migrations_match_the_code() {
    let out = run(env!("CARGO_BIN_EXE_pgpubsub-gen"), &["--check"]);
    assert!(
        out.status.success(),
        "the migrations in examples/media/migrations are behind the code; \
         run `cargo run -p media-example --bin pgpubsub-gen`: {out}"
    );
    assert!(out.stdout.contains("up to date"), "{out}");
}

/// Lines of a child's pipe, as they come.
fn lines(pipe: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Waits for a line containing `needle`; returns every line read so far.
fn wait_for_line(
    receiver: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    seen: &mut Vec<String>,
) -> bool {
    let deadline = Instant::now() + RUN_TIMEOUT;
    while Instant::now() < deadline {
        match receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
        }
    }
    false
}

/// A running `media-example listen` on `db`, with its output as lines.
struct Listening {
    child: std::process::Child,
    stdout: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
    /// The stderr lines read while waiting for `listening`.
    log: Vec<String>,
}

/// Starts `listen` with `extra` arguments and waits for its `listening` log line.
fn start_listen(db: &DemoDb, extra: &[&str]) -> Listening {
    let mut child = Command::new(env!("CARGO_BIN_EXE_media-example"))
        .args(["listen", "--database-url", &db.url])
        .args(extra)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    let mut log = Vec::new();
    assert!(
        wait_for_line(&stderr, "listening", &mut log),
        "no `listening` log line: {log:?}"
    );
    Listening {
        child,
        stdout,
        stderr,
        log,
    }
}

#[test]
fn listen_serves_new_rows_and_exits_zero_on_sigterm() {
    let db = DemoDb::new();
    let setup = demo(&db);
    assert!(setup.status.success(), "the demo failed: {setup}");

    let Listening {
        mut child,
        stdout,
        stderr,
        log: mut err_lines,
    } = start_listen(&db, &["--workers", "2"]);
    let mut out_lines = Vec::new();

    let mut conn = PgConnection::establish(&db.url).unwrap();
    conn.batch_execute("INSERT INTO media (name, size) VALUES ('sigterm.mov', 7)")
        .unwrap();
    assert!(
        wait_for_line(
            &stdout,
            "Perform virus scan on the new media",
            &mut out_lines
        ),
        "the handler did not run: {out_lines:?} {err_lines:?}"
    );
    assert!(out_lines.iter().any(|line| line.contains("sigterm.mov")));

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "listen did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    err_lines.extend(stderr.try_iter());
    assert!(
        status.success(),
        "listen exited with {status}: {err_lines:?}"
    );
    assert!(
        err_lines.iter().any(|line| line.contains("stopping")),
        "{err_lines:?}"
    );
}

#[test]
fn generator_writes_one_migration_and_check_reports_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().to_str().unwrap();
    let gen = env!("CARGO_BIN_EXE_pgpubsub-gen");

    // Code ahead of (empty) migrations: --check fails and says what differs.
    let behind = run(gen, &["--check", "--migrations-dir", migrations]);
    assert_eq!(behind.status.code(), Some(1), "{behind}");
    assert!(behind.stderr.contains("behind the code"), "{behind}");
    assert!(
        behind.stderr.contains("+ channel/media_channel"),
        "{behind}"
    );
    assert!(behind.stderr.contains("+ schema/0001"), "{behind}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let first = run(gen, &["--migrations-dir", migrations]);
    assert!(first.status.success(), "{first}");
    assert!(first.stdout.contains("wrote"), "{first}");
    let second = run(gen, &["--migrations-dir", migrations]);
    assert!(second.status.success(), "{second}");
    assert!(second.stdout.contains("up to date"), "{second}");
    let written: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(written.len(), 1, "a second run must write nothing");
    let check = run(gen, &["--check", "--migrations-dir", migrations]);
    assert!(check.status.success(), "{check}");
}

/// Generation as a subcommand of the application's own binary (no library
/// crate, no second binary) checks and writes exactly what `pgpubsub-gen`
/// does.
#[test]
fn generate_subcommand_of_the_app_binary_writes_what_pgpubsub_gen_writes() {
    let app = env!("CARGO_BIN_EXE_media-example");
    let committed = run(app, &["generate", "--check"]);
    assert!(committed.status.success(), "{committed}");
    assert!(committed.stdout.contains("up to date"), "{committed}");

    let by_app = tempfile::tempdir().unwrap();
    let by_gen = tempfile::tempdir().unwrap();
    let app_dir = by_app.path().to_str().unwrap();
    let gen_dir = by_gen.path().to_str().unwrap();
    let version = "2026-01-01-000000";
    let behind = run(app, &["generate", "--check", "--migrations-dir", app_dir]);
    assert_eq!(behind.status.code(), Some(1), "{behind}");
    assert!(
        behind.stderr.contains("+ channel/media_channel"),
        "{behind}"
    );
    let written = run(
        app,
        &[
            "generate",
            "--migrations-dir",
            app_dir,
            "--version",
            version,
        ],
    );
    assert!(written.status.success(), "{written}");
    let reference = run(
        env!("CARGO_BIN_EXE_pgpubsub-gen"),
        &["--migrations-dir", gen_dir, "--version", version],
    );
    assert!(reference.status.success(), "{reference}");
    for file in ["up.sql", "down.sql"] {
        let path = |dir: &std::path::Path| dir.join(format!("{version}_pgpubsub")).join(file);
        let ours = std::fs::read_to_string(path(by_app.path())).unwrap();
        let theirs = std::fs::read_to_string(path(by_gen.path())).unwrap();
        assert!(ours.contains("media_channel"), "{file}: {ours}");
        assert_eq!(
            ours, theirs,
            "{file} differs between `generate` and pgpubsub-gen"
        );
    }
    let again = run(app, &["generate", "--migrations-dir", app_dir]);
    assert!(again.stdout.contains("up to date"), "{again}");
}

#[test]
fn listen_with_an_unknown_channel_fails_naming_it_and_the_known_ones() {
    let db = DemoDb::new();
    let setup = demo(&db);
    assert!(setup.status.success(), "the demo failed: {setup}");
    let out = run(
        env!("CARGO_BIN_EXE_media-example"),
        &[
            "listen",
            "--database-url",
            &db.url,
            "--channels",
            "medai_channel",
        ],
    );
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("unknown channel `medai_channel`; known channels: media_channel"),
        "{out}"
    );
}

#[test]
fn listen_on_an_unreachable_database_fails_naming_it() {
    let out = run(
        env!("CARGO_BIN_EXE_media-example"),
        &[
            "listen",
            "--database-url",
            "postgres://postgres:secret@127.0.0.1:1/nowhere",
        ],
    );
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains(
            "cannot connect to PostgreSQL at host=127.0.0.1 port=1 user=postgres dbname=nowhere"
        ),
        "{out}"
    );
    assert!(!out.stderr.contains("secret"), "{out}");
}

/// The ids in "Perform virus scan on the new media Media { id: N, ..." lines.
fn scanned_ids(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix("Perform virus scan on the new media Media { id: "))
        .filter_map(|rest| rest.split(',').next())
        .map(|id| id.parse().unwrap())
        .collect()
}

#[test]
fn two_listen_processes_scan_each_of_10000_rows_exactly_once() {
    let db = DemoDb::new();
    let setup = demo(&db);
    assert!(setup.status.success(), "the demo failed: {setup}");

    let mut children = Vec::new();
    for _ in 0..2 {
        let Listening {
            child,
            stdout,
            stderr,
            ..
        } = start_listen(&db, &["--workers", "2", "--batch-size", "10"]);
        children.push((child, stdout, stderr));
    }

    let mut conn = PgConnection::establish(&db.url).unwrap();
    conn.batch_execute(
        "INSERT INTO media (name, size) SELECT 'bulk-' || i, i FROM generate_series(1, 10000) i",
    )
    .unwrap();

    let mut outputs: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    let deadline = Instant::now() + RUN_TIMEOUT;
    while outputs
        .iter()
        .map(|out| scanned_ids(out).len())
        .sum::<usize>()
        < 10_000
    {
        assert!(
            Instant::now() < deadline,
            "not every row was scanned in time"
        );
        for ((_, stdout, _), output) in children.iter().zip(outputs.iter_mut()) {
            output.extend(stdout.try_iter());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (child, stdout, stderr) in &mut children {
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let status = child.wait().unwrap();
        let errors: Vec<String> = stderr.try_iter().collect();
        assert!(status.success(), "listen exited with {status}: {errors:?}");
        let late: Vec<String> = stdout.try_iter().collect();
        assert!(
            scanned_ids(&late).is_empty(),
            "scanned after the count was reached: {late:?}"
        );
    }

    let per_process: Vec<Vec<i64>> = outputs.iter().map(|out| scanned_ids(out)).collect();
    let mut all: Vec<i64> = per_process.concat();
    all.sort_unstable();
    let total = all.len();
    all.dedup();
    assert_eq!(total, 10_000, "some rows were scanned twice");
    assert_eq!(all.len(), 10_000);
    assert!(
        per_process.iter().all(|ids| !ids.is_empty()),
        "both processes should have claimed work: {} and {}",
        per_process[0].len(),
        per_process[1].len()
    );
    let left = conn
        .batch_execute("DO $$ BEGIN IF EXISTS (SELECT 1 FROM pgpubsub_notification) THEN RAISE EXCEPTION 'notifications left'; END IF; END $$");
    assert!(left.is_ok(), "{left:?}");
}
