//! A small fault run (`pgpubsub-chaos`, see docs/fault-run.md): listener
//! processes killed with `kill -9`, their sessions terminated, the server
//! restarted once and a poison row, and still nothing lost or handled twice.

use std::process::Command;

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[test]
fn a_small_fault_run_loses_and_duplicates_nothing() {
    if !on_path("pg_createcluster") {
        eprintln!("skipped: pg_createcluster is not on PATH (the fault run needs its own PostgreSQL 15 cluster)");
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_pgpubsub-chaos"))
        .args([
            "--notifications",
            "3000",
            "--kill-rows",
            "1",
            "--rate",
            "500",
            "--kill9-every",
            "0.5",
            "--backend-kill-every",
            "0.5",
            "--server-restarts",
            "1",
            "--duration-limit",
            "180",
        ])
        .output()
        .expect("cannot run pgpubsub-chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!(
        "status {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(output.status.success(), "{report}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"lost 0"), "{report}");
    assert!(lines.contains(&"duplicated 0"), "{report}");
    assert!(
        lines.iter().any(
            |line| line.starts_with("faults injected ") && line.ends_with("server_restarts 1)")
        ),
        "{report}"
    );
}
