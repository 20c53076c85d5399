//! README.md's "Quick start from zero", followed literally: its dependency
//! list and its code blocks become a fresh `cargo new --bin` crate outside
//! this workspace, whose own binary generates the trigger migration and
//! listens; a row inserted and updated runs the README's handler twice.
//!
//! Only what the quick start leaves to Diesel is added: the imports, the
//! `table!` of `media` and the migration that creates it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pgpubsub_tests::TestDb;

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The fenced blocks of README.md's quick start, as `(language, text)`.
fn quick_start_blocks() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(Path::new(WORKSPACE).join("README.md")).unwrap();
    let start = readme
        .find("## Quick start from zero")
        .expect("README.md has a \"Quick start from zero\" section");
    let section = &readme[start..];
    let section = match section[3..].find("\n## ") {
        Some(end) => &section[..end + 3],
        None => section,
    };
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(language) = line.strip_prefix("```") {
            let text: Vec<&str> = lines.by_ref().take_while(|line| *line != "```").collect();
            blocks.push((language.to_owned(), text.join("\n") + "\n"));
        }
    }
    blocks
}

/// The one block of `language` that contains `marker`.
fn block(blocks: &[(String, String)], language: &str, marker: &str) -> String {
    let found: Vec<&String> = blocks
        .iter()
        .filter(|(lang, text)| lang == language && text.contains(marker))
        .map(|(_, text)| text)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "README.md's quick start should have exactly one {language} block with `{marker}`"
    );
    found[0].clone()
}

/// Writes the crate; returns its directory's path.
fn write_app(root: &Path) -> PathBuf {
    let blocks = quick_start_blocks();
    let workspace = Path::new(WORKSPACE).canonicalize().unwrap();
    let dependencies = block(&blocks, "toml", "[dependencies]")
        .replace("\"../pgpubsub/", &format!("\"{}/", workspace.display()));
    let app = root.join("quickstart-app");
    std::fs::create_dir_all(app.join("src")).unwrap();
    std::fs::write(
        app.join("Cargo.toml"),
        format!(
            "[package]\nname = \"quickstart-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             {dependencies}\n[workspace]\n"
        ),
    )
    .unwrap();
    // The versions this workspace is tested with.
    std::fs::copy(workspace.join("Cargo.lock"), app.join("Cargo.lock")).unwrap();
    let main = [
        "// Left to Diesel by the quick start: imports and the schema.\n\
         use chrono::{DateTime, Utc};\n\
         use diesel::prelude::*;\n\n\
         diesel::table! {\n    media (id) {\n        id -> Int8,\n        name -> Text,\n        \
         size -> Int8,\n        created_at -> Timestamptz,\n    }\n}\n"
            .to_owned(),
        block(&blocks, "rust", "pub struct Media {"),
        block(&blocks, "rust", "trigger_channel"),
        block(&blocks, "rust", "post_save_listener"),
        block(&blocks, "rust", "enum Command"),
    ]
    .join("\n");
    std::fs::write(app.join("src/main.rs"), main).unwrap();
    let create = app.join("migrations/2024-01-01-000000_create_media");
    std::fs::create_dir_all(&create).unwrap();
    std::fs::write(
        create.join("up.sql"),
        "CREATE TABLE media (id bigserial PRIMARY KEY, name text NOT NULL, \
         size bigint NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now());\n",
    )
    .unwrap();
    std::fs::write(create.join("down.sql"), "DROP TABLE media;\n").unwrap();
    app
}

/// Runs cargo in the app's crate; panics with its output when it fails.
fn cargo(app: &Path, args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // A target directory of its own (the suite's is locked while it runs),
    // kept between runs.
    let target = Path::new(WORKSPACE).join("target/quickstart-app");
    let out = Command::new(cargo)
        .args(args)
        .current_dir(app)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    let text = format!(
        "cargo {args:?} in {}: {}\n--- stdout\n{}\n--- stderr\n{}",
        app.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn readme_quick_start_builds_generates_and_runs_its_handler_in_a_fresh_bin_crate() {
    let root = tempfile::tempdir().unwrap();
    let app = write_app(root.path());
    cargo(&app, &["build", "--quiet"]);
    let binary = Path::new(WORKSPACE).join("target/quickstart-app/debug/quickstart-app");

    // `generate --check` says the migrations are behind; `generate` writes
    // them; a second `--check` is content.
    let behind = Command::new(&binary)
        .args(["generate", "--check"])
        .output()
        .unwrap();
    assert_eq!(behind.status.code(), Some(1), "{behind:?}");
    let written = Command::new(&binary).arg("generate").output().unwrap();
    assert!(written.status.success(), "{written:?}");
    let written_out = String::from_utf8_lossy(&written.stdout);
    assert!(written_out.contains("media_channel"), "{written_out}");
    let current = Command::new(&binary)
        .args(["generate", "--check"])
        .output()
        .unwrap();
    assert!(current.status.success(), "{current:?}");

    let db = TestDb::empty();
    db.migrate(&app.join("migrations"));
    let mut child = Command::new(&binary)
        .args(["listen", "--database-url", db.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut conn = db.conn();
    use diesel::connection::SimpleConnection;
    conn.batch_execute("INSERT INTO media (name, size) VALUES ('holiday.mp4', 1)")
        .unwrap();
    let first = lines.recv_timeout(Duration::from_secs(30));
    conn.batch_execute("UPDATE media SET size = 2").unwrap();
    let second = lines.recv_timeout(Duration::from_secs(30));
    // SIGTERM: the listener stops gracefully.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let first = first.expect("the handler ran for the inserted row");
    assert!(
        first.starts_with(
            "Perform virus scan on the new media Media { id: 1, name: \"holiday.mp4\", size: 1"
        ),
        "{first}"
    );
    let second = second.expect("the handler ran for the updated row");
    assert!(
        second.starts_with("Media updated; scan Media { id: 1, name: \"holiday.mp4\", size: 2"),
        "{second}"
    );
    assert!(status.success(), "listen exited with {status}");
    assert!(
        lines.recv_timeout(Duration::from_millis(200)).is_err(),
        "each change runs the handler once"
    );
}
