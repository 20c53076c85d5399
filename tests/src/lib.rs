//! Test support for pgpubsub's integration suite: a fresh PostgreSQL
//! database per test, with the application schema and the generated pgpubsub
//! migrations applied through Diesel.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};

/// The server tests create their databases on: `DATABASE_URL`, else the
/// local server.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database replaced by `database`.
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// A throwaway database, dropped with the value.
pub struct TestDb {
    name: String,
    url: String,
    /// The server's admin URL the database was created (and is dropped) on.
    admin: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    /// Creates a database, applies `app_schema` as the application's first
    /// Diesel migration, then the pgpubsub migration generated from this
    /// test binary's registry.
    pub fn new(app_schema: &str) -> TestDb {
        TestDb::new_on(&admin_url(), app_schema)
    }

    /// [`TestDb::new`] on the server of `admin_url` (a URL of a database
    /// there that accepts `CREATE DATABASE`) instead of [`admin_url()`].
    pub fn new_on(admin_url: &str, app_schema: &str) -> TestDb {
        let db = TestDb::empty_on(admin_url);
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("2000-01-01-000000_app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("up.sql"), app_schema).unwrap();
        std::fs::write(app.join("down.sql"), "SELECT 1;").unwrap();
        let registry = pgpubsub::Registry::load().unwrap();
        pgpubsub_diesel::generate(&registry, dir.path(), false, Some("2000-01-01-000001")).unwrap();
        db.migrate(dir.path());
        db
    }

    /// Creates an empty database.
    pub fn empty() -> TestDb {
        TestDb::empty_on(&admin_url())
    }

    /// Creates an empty database on the server of `admin_url`.
    pub fn empty_on(admin_url: &str) -> TestDb {
        let name = format!(
            "pgpubsub_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut admin = PgConnection::establish(admin_url).unwrap_or_else(|err| {
            panic!("cannot connect to PostgreSQL at {admin_url} (set DATABASE_URL): {err}")
        });
        admin
            .batch_execute(&format!("CREATE DATABASE {}", pgpubsub::quote_ident(&name)))
            .unwrap();
        let url = url_with_database(admin_url, &name);
        TestDb {
            name,
            url,
            admin: admin_url.to_owned(),
        }
    }

    /// Applies the Diesel migrations in `dir`.
    pub fn migrate(&self, dir: &Path) {
        let mut conn = self.conn();
        let migrations = FileBasedMigrations::from_path(dir).unwrap();
        conn.run_pending_migrations(migrations).unwrap();
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new connection.
    pub fn conn(&self) -> PgConnection {
        PgConnection::establish(&self.url).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.admin) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                pgpubsub::quote_ident(&self.name)
            ));
        }
    }
}

/// Polls `condition` every 10 ms until it holds; false after `timeout`.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long tests wait for handlers before failing.
pub const WAIT: Duration = Duration::from_secs(20);

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Runs `sql`, a query returning one `bigint` column named `n`
/// (`SELECT count(*) AS n FROM ...`), and returns it.
pub fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    use diesel::RunQueryDsl;
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .unwrap_or_else(|err| panic!("`{sql}` failed: {err}"))
        .n
}

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// Runs `sql`, a query returning one `text` column named `name`, and returns
/// its rows.
pub fn names(conn: &mut PgConnection, sql: &str) -> Vec<String> {
    use diesel::RunQueryDsl;
    diesel::sql_query(sql)
        .load::<Name>(conn)
        .unwrap_or_else(|err| panic!("`{sql}` failed: {err}"))
        .into_iter()
        .map(|row| row.name)
        .collect()
}

/// Spawns `listener` and waits until its `LISTEN` session is up.
pub fn spawn_listening(listener: pgpubsub::Listener) -> pgpubsub::ListenerHandle {
    let handle = listener.spawn().unwrap();
    assert!(
        handle.wait_listening(WAIT),
        "the listener did not start listening"
    );
    handle
}
