//! Hardening, against the real server: TLS for the `LISTEN` session, forged
//! and replayed broadcast NOTIFYs, the bounded broadcast queue, the
//! privileges a listener and a writer need (the grants below are the
//! documented ones), and the listeners' registration.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::net::ToSocketAddrs;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Text, Timestamptz};
use pgpubsub::{Channel, Error, Listener, ListenerHandle, TriggerChannel};
use pgpubsub_tests::{count, names, spawn_listening, wait_until, TestDb, WAIT};
use serde::{Deserialize, Serialize};
use serde_json::json;

// ---------------------------------------------------------------------------
// The grants a listener and a writer need, as documentation: copy them,
// replacing `app_listener` / `app_writer` with the roles' names (and
// `public` with the schema that holds pgpubsub's objects). The tests run
// them in a database where PUBLIC has no USAGE on the schema and no EXECUTE
// on its functions, so nothing here leans on PostgreSQL's defaults.

/// What a role that runs `Listener` needs for pgpubsub itself. Its handlers
/// need, on top, whatever they read and write (see `APP_GRANTS`); a handler
/// that sends messages (`pgpubsub::notify`) needs `WRITER_GRANTS` too.
/// Decoding a trigger channel's rows reads neither the channel's table nor
/// the migrations table. (`CONNECT` on the database is PUBLIC's by default.)
const LISTENER_GRANTS: &str = "
GRANT USAGE ON SCHEMA public TO app_listener;
GRANT SELECT, UPDATE, DELETE ON pgpubsub_notification TO app_listener;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgpubsub_listener TO app_listener;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgpubsub_notification_leases TO app_listener;
GRANT EXECUTE ON FUNCTION
    pgpubsub_notification_lease_batch(bigint[], bigint, boolean, text, text, bigint, bigint, double precision, integer),
    pgpubsub_row_check(anyelement, jsonb)
    TO app_listener;
";

/// What a role that writes notifications needs: rows of a trigger channel's
/// table (the trigger runs as the writer) and `pgpubsub::notify`. The
/// identity column needs no sequence grant. `SELECT (id)` is for broadcast
/// channels only: `pgpubsub_notification_send` stores a broadcast with
/// `INSERT ... RETURNING id`. The migrations table is read by
/// `pgpubsub_db_version()`, the default of every stored notification's
/// `db_version`.
const WRITER_GRANTS: &str = "
GRANT USAGE ON SCHEMA public TO app_writer;
GRANT INSERT ON pgpubsub_notification TO app_writer;
GRANT SELECT (id) ON pgpubsub_notification TO app_writer;
GRANT SELECT ON __diesel_schema_migrations TO app_writer;
GRANT EXECUTE ON FUNCTION
    pgpubsub_notification_send(text, boolean, jsonb),
    pgpubsub_context(),
    pgpubsub_db_version()
    TO app_writer;
";

/// The application's own grants in these tests: the writer writes the
/// channels' tables, the listener's handlers write `effects`.
const APP_GRANTS: &str = "
GRANT INSERT ON hardening_posts, hardening_orders TO app_writer;
GRANT USAGE ON SEQUENCE hardening_posts_id_seq, hardening_orders_id_seq TO app_writer;
GRANT INSERT ON effects TO app_listener;
GRANT USAGE ON SEQUENCE effects_id_seq TO app_listener;
";

/// Takes PostgreSQL's defaults away, so the grants above are all there is.
const LOCK_DOWN: &str = "
REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
";

// ---------------------------------------------------------------------------
// The application.

const SCHEMA: &str = "
CREATE TABLE effects (id bigserial PRIMARY KEY, tag text NOT NULL, key text NOT NULL);
CREATE TABLE hardening_posts (id bigserial PRIMARY KEY, body text NOT NULL);
CREATE TABLE hardening_orders (id bigserial PRIMARY KEY, item text NOT NULL);
";

diesel::table! {
    hardening_posts (id) {
        id -> BigInt,
        body -> Text,
    }
}

diesel::table! {
    hardening_orders (id) {
        id -> BigInt,
        item -> Text,
    }
}

#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = hardening_posts)]
pub struct Post {
    pub id: i64,
    pub body: String,
}

#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = hardening_orders)]
pub struct Order {
    pub id: i64,
    pub item: String,
}

/// A broadcast trigger channel.
#[pgpubsub::trigger_channel(model = Post)]
pub struct PostChannel;

/// A lockable trigger channel.
#[pgpubsub::trigger_channel(model = Order, lock_notifications)]
pub struct OrderChannel;

/// A broadcast message channel.
#[pgpubsub::channel]
#[derive(Serialize, Deserialize)]
struct Notice {
    text: String,
}

/// A lockable message channel.
#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct Invoice {
    number: i64,
}

/// A broadcast message channel whose handler blocks until released (only
/// the bounded-queue test serves it).
#[pgpubsub::channel]
#[derive(Serialize, Deserialize)]
struct Flood {
    n: i64,
}

fn record(conn: &mut PgConnection, tag: &str, key: &str) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO effects (tag, key) VALUES ($1, $2)")
        .bind::<Text, _>(tag)
        .bind::<Text, _>(key)
        .execute(conn)
        .map(drop)
}

#[pgpubsub::post_insert_listener(PostChannel)]
fn post_inserted(new: Post, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, "post", &new.body)
}

#[pgpubsub::post_insert_listener(OrderChannel)]
fn order_placed(new: Order, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, "order", &new.item)
}

#[pgpubsub::listener(Notice)]
fn noticed(msg: Notice, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, "notice", &msg.text)
}

#[pgpubsub::listener(Invoice)]
fn invoiced(msg: Invoice, conn: &mut PgConnection) -> QueryResult<()> {
    record(conn, "invoice", &msg.number.to_string())
}

static FLOOD_RUNS: AtomicU64 = AtomicU64::new(0);
static FLOOD_RELEASED: AtomicBool = AtomicBool::new(false);

#[pgpubsub::listener(Flood)]
fn flooded(msg: Flood) {
    let _ = msg.n;
    FLOOD_RUNS.fetch_add(1, Ordering::SeqCst);
    while !FLOOD_RELEASED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// The bounded-queue test measures this process's memory: it runs alone.
static GATE: RwLock<()> = RwLock::new(());

fn shared_gate() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(PoisonError::into_inner)
}

fn exclusive_gate() -> RwLockWriteGuard<'static, ()> {
    GATE.write().unwrap_or_else(PoisonError::into_inner)
}

fn effects(conn: &mut PgConnection, tag: &str) -> i64 {
    count(
        conn,
        &format!("SELECT count(*) AS n FROM effects WHERE tag = '{tag}'"),
    )
}

fn keys(conn: &mut PgConnection, tag: &str) -> Vec<String> {
    names(
        conn,
        &format!("SELECT key AS name FROM effects WHERE tag = '{tag}' ORDER BY id"),
    )
}

fn stat(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::SeqCst)
}

/// An error and its causes, `: `-separated.
fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn spawn_error(listener: Listener) -> Error {
    match listener.spawn() {
        Ok(handle) => {
            let _ = handle.shutdown();
            panic!("the listener started");
        }
        Err(err) => err,
    }
}

/// `url` (a `postgres://` URL) connecting as `user`, without a password.
fn url_as(url: &str, user: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let host_start = url[start..authority_end]
        .rfind('@')
        .map_or(start, |i| start + i + 1);
    format!("{}{user}@{}", &url[..start], &url[host_start..])
}

/// `url` with `query` (`key=value&...`) appended.
fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

/// A login role of its own (roles are cluster-wide), dropped with the value.
struct Role {
    name: String,
    /// The test database, as the superuser: where the role's grants are.
    db_url: String,
}

static ROLES: AtomicU64 = AtomicU64::new(0);

impl Role {
    fn create(db: &TestDb, kind: &str) -> Role {
        let name = format!(
            "pgpubsub_{kind}_{}_{}",
            std::process::id(),
            ROLES.fetch_add(1, Ordering::SeqCst)
        );
        let role = Role {
            name,
            db_url: db.url().to_owned(),
        };
        db.conn()
            .batch_execute(&format!(
                "CREATE ROLE {} LOGIN",
                pgpubsub::quote_ident(&role.name)
            ))
            .unwrap();
        role
    }

    fn url(&self) -> String {
        url_as(&self.db_url, &self.name)
    }

    fn conn(&self) -> PgConnection {
        PgConnection::establish(&self.url()).unwrap()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let role = pgpubsub::quote_ident(&self.name);
        if let Ok(mut conn) = PgConnection::establish(&self.db_url) {
            let _ = conn.batch_execute(&format!("DROP OWNED BY {role}"));
        }
        match PgConnection::establish(&pgpubsub_tests::admin_url()) {
            Ok(mut admin) => {
                let _ = diesel::sql_query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                )
                .bind::<Text, _>(&self.name)
                .execute(&mut admin);
                if let Err(err) = admin.batch_execute(&format!("DROP ROLE IF EXISTS {role}")) {
                    eprintln!("cannot drop role {}: {err}", self.name);
                }
            }
            Err(err) => eprintln!("cannot drop role {}: {err}", self.name),
        }
    }
}

/// The ids of the stored broadcasts of `channel`, oldest first.
fn stored_broadcasts(conn: &mut PgConnection, channel: &str) -> Vec<i64> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    diesel::sql_query(
        "SELECT id FROM pgpubsub_notification WHERE broadcast AND channel = $1 ORDER BY id",
    )
    .bind::<Text, _>(channel)
    .load::<Id>(conn)
    .unwrap()
    .into_iter()
    .map(|row| row.id)
    .collect()
}

// ---------------------------------------------------------------------------
// 1. TLS for the LISTEN session.

/// The server's certificate file, when it has TLS on and the file is
/// readable here.
fn server_certificate(conn: &mut PgConnection) -> Option<String> {
    let ssl = names(conn, "SELECT current_setting('ssl') AS name");
    if ssl.first().map(String::as_str) != Some("on") {
        return None;
    }
    let file = names(conn, "SELECT current_setting('ssl_cert_file') AS name")
        .pop()
        .filter(|file| !file.is_empty())?;
    let path = if file.starts_with('/') {
        file
    } else {
        let dir = names(conn, "SELECT current_setting('data_directory') AS name").pop()?;
        format!("{dir}/{file}")
    };
    std::fs::read(&path).ok().map(|_| path)
}

/// The host and port the test server answers on, as seen by the server.
fn server_address(conn: &mut PgConnection) -> (String, u16) {
    #[derive(QueryableByName)]
    struct Address {
        #[diesel(sql_type = Text)]
        host: String,
        #[diesel(sql_type = Integer)]
        port: i32,
    }
    let address =
        diesel::sql_query("SELECT host(inet_server_addr()) AS host, inet_server_port() AS port")
            .get_result::<Address>(conn)
            .unwrap();
    (address.host, u16::try_from(address.port).unwrap())
}

/// The certificate's subject common name.
fn common_name(certificate: &str) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(certificate)
        .output()
        .expect("cannot run openssl");
    assert!(out.status.success(), "{out:?}");
    let subject = String::from_utf8(out.stdout).unwrap();
    subject
        .trim()
        .trim_start_matches("subject=")
        .split(',')
        .find_map(|part| part.trim().strip_prefix("CN="))
        .unwrap_or_else(|| panic!("no CN in `{subject}`"))
        .to_owned()
}

/// Whether `name` resolves to `address`.
fn resolves_to(name: &str, address: &str, port: u16) -> bool {
    (name, port)
        .to_socket_addrs()
        .map(|mut addrs| addrs.any(|addr| addr.ip().to_string() == address))
        .unwrap_or(false)
}

#[derive(QueryableByName, Debug)]
struct Session {
    #[diesel(sql_type = Text)]
    query: String,
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

impl Session {
    /// The listener's `LISTEN` session: its last query is the `LISTEN`
    /// batch or, after ~10 s, the heartbeat.
    fn is_listen(&self) -> bool {
        self.query.starts_with("LISTEN ")
            || self
                .query
                .starts_with("UPDATE pgpubsub_listener SET heartbeat_at")
    }
}

/// The client sessions of the test database other than `conn`'s own.
fn sessions(conn: &mut PgConnection) -> Vec<Session> {
    diesel::sql_query(
        "SELECT a.query, COALESCE(s.ssl, false) AS ssl \
         FROM pg_stat_activity AS a LEFT JOIN pg_stat_ssl AS s ON s.pid = a.pid \
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
           AND a.backend_type = 'client backend'",
    )
    .load(conn)
    .unwrap()
}

/// Waits for the listener's sessions (the `LISTEN` session and one
/// worker's) and checks that they are encrypted, or not.
fn assert_listener_sessions(db: &TestDb, encrypted: bool) {
    let mut conn = db.conn();
    let mut seen = Vec::new();
    let settled = wait_until(WAIT, || {
        seen = sessions(&mut conn);
        seen.len() == 2 && seen.iter().filter(|session| session.is_listen()).count() == 1
    });
    assert!(
        settled,
        "expected the LISTEN session and one worker's: {seen:?}"
    );
    assert!(
        seen.iter().all(|session| session.ssl == encrypted),
        "every session of the listener should have ssl = {encrypted}: {seen:?}"
    );
}

/// A broadcast and a lockable notification, both handled.
fn assert_round_trip(db: &TestDb, handle: &ListenerHandle) {
    let mut conn = db.conn();
    pgpubsub::notify(
        &mut conn,
        &Notice {
            text: "over tls".into(),
        },
    )
    .unwrap();
    pgpubsub::notify(&mut conn, &Invoice { number: 7 }).unwrap();
    assert!(
        wait_until(WAIT, || effects(&mut conn, "notice") == 1
            && effects(&mut conn, "invoice") == 1),
        "the handlers did not run"
    );
    assert!(wait_until(WAIT, || stat(&handle.stats().broadcasts) == 1
        && stat(&handle.stats().completed) == 1));
    assert_eq!(keys(&mut conn, "notice"), ["over tls"]);
    assert_eq!(keys(&mut conn, "invoice"), ["7"]);
}

fn tls_listener(url: &str) -> Listener {
    Listener::new(url).channels([Notice::NAME, Invoice::NAME])
}

#[test]
fn a_listener_with_sslmode_require_serves_broadcasts_and_stored_notifications_over_tls() {
    let _gate = shared_gate();
    let db = TestDb::new(SCHEMA);
    if server_certificate(&mut db.conn()).is_none() {
        eprintln!("skipped: the server has TLS off");
        return;
    }
    let handle = spawn_listening(tls_listener(&with_query(db.url(), "sslmode=require")));
    assert_listener_sessions(&db, true);
    assert_round_trip(&db, &handle);
    handle.shutdown().unwrap();
}

#[test]
fn a_listener_with_sslmode_disable_serves_without_tls() {
    let _gate = shared_gate();
    let db = TestDb::new(SCHEMA);
    let handle = spawn_listening(tls_listener(&with_query(db.url(), "sslmode=disable")));
    assert_listener_sessions(&db, false);
    assert_round_trip(&db, &handle);
    handle.shutdown().unwrap();
}

/// The server's certificate as the root, and the host name it is issued to
/// (`verify-full`); `verify-ca` on the server's address when that name does
/// not lead to this server.
#[test]
fn a_listener_verifying_the_server_certificate_serves_over_tls() {
    let _gate = shared_gate();
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    let Some(certificate) = server_certificate(&mut conn) else {
        eprintln!("skipped: the server has TLS off (or its certificate is not readable here)");
        return;
    };
    let (address, port) = server_address(&mut conn);
    let name = common_name(&certificate);
    let (host, mode) = if resolves_to(&name, &address, port) {
        (name, "verify-full")
    } else {
        eprintln!("the certificate's name `{name}` does not resolve to {address}: verify-ca only");
        (address, "verify-ca")
    };
    let url = format!(
        "postgres://postgres@{host}:{port}/{}?sslmode={mode}&sslrootcert={certificate}",
        db.name()
    );
    // Only the listener's sessions are counted.
    drop(conn);
    let handle = spawn_listening(tls_listener(&url));
    assert_listener_sessions(&db, true);
    assert_round_trip(&db, &handle);
    handle.shutdown().unwrap();
}

/// Generates a throwaway self-signed certificate for `name` in `dir`.
fn throwaway_certificate(dir: &std::path::Path, name: &str) -> String {
    let cert = dir.join("wrong-root.pem");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(dir.join("wrong-root.key"))
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("cannot run openssl");
    assert!(out.status.success(), "openssl req failed: {out:?}");
    cert.to_str().unwrap().to_owned()
}

fn assert_certificate_rejected(err: &Error, target: &str) {
    let message = chain(err);
    eprintln!("refused as expected: {message}");
    assert!(matches!(err, Error::Connect { .. }), "{message}");
    assert!(message.contains(target), "{message}");
    assert!(
        // libpq (OpenSSL) for the workers, rustls for the LISTEN session.
        message.contains("certificate verify failed")
            || message.contains("invalid peer certificate"),
        "the error should say the certificate was not trusted: {message}"
    );
}

#[test]
fn verify_full_with_a_wrong_root_certificate_fails_at_start_saying_so() {
    let _gate = shared_gate();
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    let Some(certificate) = server_certificate(&mut conn) else {
        eprintln!("skipped: the server has TLS off");
        return;
    };
    let (address, port) = server_address(&mut conn);
    let name = common_name(&certificate);
    let host = if resolves_to(&name, &address, port) {
        name.clone()
    } else {
        address.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = throwaway_certificate(dir.path(), &name);
    let url = format!(
        "postgres://postgres@{host}:{port}/{}?sslmode=verify-full&sslrootcert={wrong}",
        db.name()
    );
    let target = format!("host={host} port={port}");
    // Workers' and LISTEN session's URL alike: the start-up connection fails.
    assert_certificate_rejected(&spawn_error(tls_listener(&url)), &target);
    // The LISTEN session alone (its own TLS client) refuses it too.
    assert_certificate_rejected(
        &spawn_error(tls_listener(db.url()).listen_url(&url)),
        &target,
    );
}

/// `Listener::spawn` registers the listener in `pgpubsub_listener` during
/// its start-up checks, before it opens the `LISTEN` session; when that
/// session cannot be opened (an unreachable `listen_url`, a refused
/// certificate) the registration is removed again, so no row looks like a
/// listener that died.
#[test]
fn a_listener_that_fails_to_start_leaves_no_registration() {
    let _gate = shared_gate();
    let db = TestDb::new(SCHEMA);
    let err = spawn_error(tls_listener(db.url()).listen_url("postgres://postgres@127.0.0.1:1/x"));
    assert!(matches!(err, Error::Connect { .. }), "{}", chain(&err));
    let rows = registrations(&mut db.conn());
    assert!(
        rows.is_empty(),
        "a listener that failed to start must not stay registered: {rows:?}"
    );
}

/// verify-full checks the host name: the right root, the wrong name (the
/// server's address, which the certificate does not name).
#[test]
fn verify_full_on_a_host_the_certificate_does_not_name_fails_for_the_listen_session() {
    let _gate = shared_gate();
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    let Some(certificate) = server_certificate(&mut conn) else {
        eprintln!("skipped: the server has TLS off");
        return;
    };
    let (address, port) = server_address(&mut conn);
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", &certificate])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    if text.contains(&format!("IP Address:{address}")) || common_name(&certificate) == address {
        eprintln!("skipped: the certificate names {address}");
        return;
    }
    let url = |mode: &str| {
        format!(
            "postgres://postgres@{address}:{port}/{}?sslmode={mode}&sslrootcert={certificate}",
            db.name()
        )
    };
    let err = spawn_error(tls_listener(db.url()).listen_url(url("verify-full")));
    let message = chain(&err);
    assert!(matches!(err, Error::Connect { .. }), "{message}");
    assert!(message.contains("not valid for name"), "{message}");
    // The same chain without the name check is fine.
    let handle = spawn_listening(tls_listener(db.url()).listen_url(url("verify-ca")));
    handle.shutdown().unwrap();
}

// ---------------------------------------------------------------------------
// 2. Forged broadcasts.

#[test]
fn forged_and_replayed_broadcast_notifies_run_no_handler_and_are_counted() {
    let _gate = shared_gate();
    let db = TestDb::new(SCHEMA);
    let forger = Role::create(&db, "forger");
    let handle = spawn_listening(Listener::new(db.url()).channels([PostChannel::NAME]));
    let stats = handle.stats();
    let mut conn = db.conn();

    // A stored broadcast of another channel (no listener serves it).
    pgpubsub::notify(
        &mut conn,
        &Notice {
            text: "elsewhere".into(),
        },
    )
    .unwrap();
    let other = stored_broadcasts(&mut conn, Notice::NAME);
    assert_eq!(other.len(), 1);
    // A genuine broadcast, handled once.
    conn.batch_execute("INSERT INTO hardening_posts (body) VALUES ('genuine 1')")
        .unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn, "post") == 1
        && stat(&stats.broadcasts) == 1));
    let handled = stored_broadcasts(&mut conn, PostChannel::NAME);
    assert_eq!(handled.len(), 1);

    // The forger can connect and NOTIFY, nothing more.
    let mut forger_conn = forger.conn();
    let insert = format!(
        "INSERT INTO pgpubsub_notification (channel, payload, broadcast) VALUES ('{}', '{{}}', true)",
        PostChannel::NAME
    );
    assert!(
        forger_conn.batch_execute(&insert).is_err(),
        "the forger must not be able to store a broadcast"
    );
    let send = format!(
        "SELECT pgpubsub_notification_send('{}', false, '{{\"op\": \"INSERT\", \"new\": {{\"id\": 1, \"body\": \"x\"}}}}')",
        PostChannel::NAME
    );
    assert!(
        forger_conn.batch_execute(&send).is_err(),
        "the forger must not be able to store a broadcast"
    );

    let forged: Vec<String> = vec![
        // What a broadcast looked like before broadcasts were stored.
        json!({
            "app": "pgpubsub_tests",
            "model": "Post",
            "op": "INSERT",
            "old": null,
            "new": {"id": 999, "body": "forged old-style"},
            "context": {},
        })
        .to_string(),
        // A stored broadcast, of another channel.
        json!({ "pgpubsub_stored": other[0] }).to_string(),
        // A replay of the one handled.
        json!({ "pgpubsub_stored": handled[0] }).to_string(),
        // No such broadcast.
        json!({ "pgpubsub_stored": 9_000_000_000_i64 }).to_string(),
        String::new(),
        "not json".to_owned(),
    ];
    for payload in &forged {
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<Text, _>(PostChannel::NAME)
            .bind::<Text, _>(payload)
            .execute(&mut forger_conn)
            .unwrap();
    }
    let expected = forged.len() as u64;
    assert!(
        wait_until(WAIT, || stat(&stats.broadcasts_rejected) == expected),
        "rejected {} of {expected}",
        stat(&stats.broadcasts_rejected)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stat(&stats.broadcasts_rejected), expected);
    assert_eq!(
        effects(&mut conn, "post"),
        1,
        "a forged NOTIFY ran a handler"
    );
    assert_eq!(stat(&stats.broadcasts), 1);
    assert_eq!(stat(&stats.failed), 0);

    // A genuine broadcast afterwards runs, exactly once.
    conn.batch_execute("INSERT INTO hardening_posts (body) VALUES ('genuine 2')")
        .unwrap();
    assert!(wait_until(WAIT, || effects(&mut conn, "post") == 2));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(keys(&mut conn, "post"), ["genuine 1", "genuine 2"]);
    assert_eq!(stat(&stats.broadcasts), 2);
    assert_eq!(stat(&stats.broadcasts_rejected), expected);
    assert_eq!(stat(&stats.broadcasts_dropped), 0);
    handle.shutdown().unwrap();
}

// ---------------------------------------------------------------------------
// 3. The bounded broadcast queue.

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Lets the blocked `Flood` handler go however the test ends.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        FLOOD_RELEASED.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_notify_flood_does_not_grow_memory_and_broadcasts_beyond_the_queue_are_dropped_and_counted() {
    let _gate = exclusive_gate();
    let db = TestDb::new(SCHEMA);
    FLOOD_RELEASED.store(false, Ordering::SeqCst);
    FLOOD_RUNS.store(0, Ordering::SeqCst);
    let release = Release;
    let handle = spawn_listening(
        Listener::new(db.url())
            .channels([Flood::NAME])
            .workers(1)
            .broadcast_queue(10),
    );
    let stats = handle.stats();
    let mut conn = db.conn();

    // The one worker blocks in a handler.
    pgpubsub::notify(&mut conn, &Flood { n: 0 }).unwrap();
    assert!(wait_until(WAIT, || FLOOD_RUNS.load(Ordering::SeqCst) == 1));

    // 50,000 distinct forged 1 kB NOTIFYs, in five transactions.
    let before = rss_kib();
    for chunk in 0..5 {
        let (first, last) = (chunk * 10_000 + 1, (chunk + 1) * 10_000);
        conn.batch_execute(&format!(
            "SELECT pg_notify('{}', jsonb_build_object('op', 'INSERT', 'new', \
                 jsonb_build_object('n', i), 'pad', repeat('x', 1000))::text) \
             FROM generate_series({first}, {last}) AS i",
            Flood::NAME
        ))
        .unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(120), || stat(
            &stats.broadcasts_rejected
        ) == 50_000),
        "rejected {} of 50000",
        stat(&stats.broadcasts_rejected)
    );
    let grown_kib = rss_kib().saturating_sub(before);
    eprintln!("memory grew by {grown_kib} KiB during the flood");
    assert!(
        grown_kib < 20 * 1024,
        "50 MB of forged NOTIFYs grew the listener's memory by {grown_kib} KiB"
    );
    // Rejected before queueing: none took a place in the queue.
    assert_eq!(stat(&stats.broadcasts_dropped), 0);

    // 100 genuine broadcasts while the worker is blocked: 10 wait, 90 are
    // dropped.
    conn.transaction(|conn| {
        for n in 1..=100 {
            pgpubsub::notify(conn, &Flood { n })?;
        }
        Ok::<_, pgpubsub::Error>(())
    })
    .unwrap();
    assert!(
        wait_until(WAIT, || stat(&stats.broadcasts_dropped) == 90),
        "dropped {}",
        stat(&stats.broadcasts_dropped)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stat(&stats.broadcasts_dropped), 90);
    assert_eq!(FLOOD_RUNS.load(Ordering::SeqCst), 1);

    drop(release);
    assert!(
        wait_until(WAIT, || FLOOD_RUNS.load(Ordering::SeqCst) == 11
            && stat(&stats.broadcasts) == 11),
        "ran {} broadcasts",
        FLOOD_RUNS.load(Ordering::SeqCst)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(FLOOD_RUNS.load(Ordering::SeqCst), 11);
    assert_eq!(stat(&stats.broadcasts_dropped), 90);
    assert_eq!(stat(&stats.broadcasts_rejected), 50_000);
    handle.shutdown().unwrap();
}

// ---------------------------------------------------------------------------
// 4. Privileges.

/// A locked-down test database with a listener role and a writer role
/// holding exactly the documented grants (and the application's).
struct Roles {
    listener: Role,
    writer: Role,
    // Dropped after the roles (their grants live in it).
    db: TestDb,
}

impl Roles {
    fn new() -> Roles {
        let db = TestDb::new(SCHEMA);
        let listener = Role::create(&db, "listener");
        let writer = Role::create(&db, "writer");
        let roles = Roles {
            listener,
            writer,
            db,
        };
        roles.admin(LOCK_DOWN);
        roles.admin(LISTENER_GRANTS);
        roles.admin(WRITER_GRANTS);
        roles.admin(APP_GRANTS);
        roles
    }

    /// Runs `sql` as the superuser, with the roles' names in place of
    /// `app_listener` and `app_writer`.
    fn admin(&self, sql: &str) {
        let sql = sql
            .replace("app_listener", &pgpubsub::quote_ident(&self.listener.name))
            .replace("app_writer", &pgpubsub::quote_ident(&self.writer.name));
        self.db
            .conn()
            .batch_execute(&sql)
            .unwrap_or_else(|err| panic!("`{sql}` failed: {err}"));
    }

    fn listener(&self) -> Listener {
        Listener::new(self.listener.url()).channels([
            PostChannel::NAME,
            OrderChannel::NAME,
            Notice::NAME,
            Invoice::NAME,
        ])
    }
}

/// The writer's four kinds of writes: a row of a broadcast and of a
/// lockable trigger channel, a broadcast and a lockable message.
fn write_everything(conn: &mut PgConnection, key: &str) -> Result<(), String> {
    let step = |what: &str, err: &dyn std::fmt::Display| format!("{what}: {err}");
    diesel::sql_query("INSERT INTO hardening_posts (body) VALUES ($1)")
        .bind::<Text, _>(key)
        .execute(conn)
        .map_err(|err| step("a broadcast trigger channel's row", &err))?;
    diesel::sql_query("INSERT INTO hardening_orders (item) VALUES ($1)")
        .bind::<Text, _>(key)
        .execute(conn)
        .map_err(|err| step("a lockable trigger channel's row", &err))?;
    pgpubsub::notify(conn, &Notice { text: key.into() })
        .map_err(|err| step("a broadcast message", &chain(&err)))?;
    pgpubsub::notify(conn, &Invoice { number: 42 })
        .map_err(|err| step("a lockable message", &chain(&err)))?;
    Ok(())
}

#[test]
fn a_listener_and_a_writer_with_only_the_documented_grants_work_together() {
    let _gate = shared_gate();
    let roles = Roles::new();
    let handle = spawn_listening(roles.listener());
    let mut writer = roles.writer.conn();
    write_everything(&mut writer, "granted").unwrap();
    let mut conn = roles.db.conn();
    assert!(
        wait_until(WAIT, || ["post", "order", "notice", "invoice"]
            .iter()
            .all(|tag| effects(&mut conn, tag) == 1)),
        "not every handler ran: failed = {}",
        stat(&handle.stats().failed)
    );
    assert_eq!(keys(&mut conn, "post"), ["granted"]);
    assert_eq!(keys(&mut conn, "order"), ["granted"]);
    assert_eq!(keys(&mut conn, "notice"), ["granted"]);
    assert_eq!(keys(&mut conn, "invoice"), ["42"]);
    assert_eq!(stat(&handle.stats().failed), 0);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_listener"),
        1,
        "the listener role registers itself"
    );
    handle.shutdown().unwrap();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pgpubsub_notification WHERE NOT broadcast"
        ),
        0
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_listener"),
        0
    );
}

fn assert_privilege_missing(err: &Error, role: &Role, expected: &[&str]) {
    let message = err.to_string();
    match err {
        Error::PrivilegeMissing {
            role: named,
            missing,
        } => {
            assert_eq!(named, &role.name, "{message}");
            assert_eq!(missing, expected, "{message}");
        }
        other => panic!(
            "expected PrivilegeMissing {expected:?}, got {}",
            chain(other)
        ),
    }
    for privilege in expected {
        assert!(message.contains(privilege), "{message}");
    }
}

#[test]
fn a_listener_role_without_delete_on_pgpubsub_notification_fails_at_start_naming_it() {
    let _gate = shared_gate();
    let roles = Roles::new();
    roles.admin("REVOKE DELETE ON pgpubsub_notification FROM app_listener");
    let err = spawn_error(roles.listener());
    assert_privilege_missing(
        &err,
        &roles.listener,
        &["DELETE on table pgpubsub_notification"],
    );
}

#[test]
fn a_listener_role_without_usage_on_the_schema_fails_at_start_naming_usage() {
    let _gate = shared_gate();
    let roles = Roles::new();
    roles.admin("REVOKE USAGE ON SCHEMA public FROM app_listener");
    let err = spawn_error(roles.listener());
    assert_privilege_missing(&err, &roles.listener, &["USAGE on schema public"]);
}

/// Each privilege of `LISTENER_GRANTS`, taken away alone, stops the
/// listener at start naming exactly it: none is superfluous, and the check
/// misses none.
#[test]
fn every_documented_listener_grant_is_checked_at_start() {
    let _gate = shared_gate();
    let roles = Roles::new();
    let cases = [
        ("SELECT", "TABLE pgpubsub_notification", "table pgpubsub_notification"),
        ("UPDATE", "TABLE pgpubsub_notification", "table pgpubsub_notification"),
        ("DELETE", "TABLE pgpubsub_notification", "table pgpubsub_notification"),
        ("SELECT", "TABLE pgpubsub_listener", "table pgpubsub_listener"),
        ("INSERT", "TABLE pgpubsub_listener", "table pgpubsub_listener"),
        ("UPDATE", "TABLE pgpubsub_listener", "table pgpubsub_listener"),
        ("DELETE", "TABLE pgpubsub_listener", "table pgpubsub_listener"),
        ("SELECT", "TABLE pgpubsub_notification_leases", "table pgpubsub_notification_leases"),
        ("INSERT", "TABLE pgpubsub_notification_leases", "table pgpubsub_notification_leases"),
        ("UPDATE", "TABLE pgpubsub_notification_leases", "table pgpubsub_notification_leases"),
        ("DELETE", "TABLE pgpubsub_notification_leases", "table pgpubsub_notification_leases"),
        (
            "EXECUTE",
            "FUNCTION pgpubsub_notification_lease_batch(bigint[], bigint, boolean, text, text, bigint, bigint, double precision, integer)",
            "function pgpubsub_notification_lease_batch",
        ),
        (
            "EXECUTE",
            "FUNCTION pgpubsub_row_check(anyelement, jsonb)",
            "function pgpubsub_row_check",
        ),
        ("USAGE", "SCHEMA public", "schema public"),
    ];
    for (privilege, object, named) in cases {
        roles.admin(&format!("REVOKE {privilege} ON {object} FROM app_listener"));
        let err = spawn_error(roles.listener());
        assert_privilege_missing(&err, &roles.listener, &[&format!("{privilege} on {named}")]);
        roles.admin(&format!("GRANT {privilege} ON {object} TO app_listener"));
    }
    // All granted again: it starts.
    spawn_listening(roles.listener()).shutdown().unwrap();
}

/// Each privilege of `WRITER_GRANTS`, taken away alone, makes a write fail:
/// none is superfluous. `SELECT (id)` is needed for broadcasts only.
#[test]
fn every_documented_writer_grant_is_needed() {
    let _gate = shared_gate();
    let roles = Roles::new();
    // Each privilege with what the failed write says.
    let cases = [
        ("USAGE", "SCHEMA public", "hardening_posts\" does not exist"),
        (
            "INSERT",
            "TABLE pgpubsub_notification",
            "permission denied for table pgpubsub_notification",
        ),
        (
            "SELECT (id)",
            "TABLE pgpubsub_notification",
            "permission denied for table pgpubsub_notification",
        ),
        (
            "SELECT",
            "TABLE __diesel_schema_migrations",
            "permission denied for table __diesel_schema_migrations",
        ),
        (
            "EXECUTE",
            "FUNCTION pgpubsub_notification_send(text, boolean, jsonb)",
            "permission denied for function pgpubsub_notification_send",
        ),
        (
            "EXECUTE",
            "FUNCTION pgpubsub_context()",
            "permission denied for function pgpubsub_context",
        ),
        (
            "EXECUTE",
            "FUNCTION pgpubsub_db_version()",
            "permission denied for function pgpubsub_db_version",
        ),
    ];
    let mut writer = roles.writer.conn();
    write_everything(&mut writer, "all granted").unwrap();
    for (privilege, object, says) in cases {
        roles.admin(&format!("REVOKE {privilege} ON {object} FROM app_writer"));
        let mut writer = roles.writer.conn();
        match write_everything(&mut writer, "revoked") {
            Ok(()) => {
                panic!("writing works without {privilege} on {object}: the grant is superfluous")
            }
            Err(err) => assert!(
                err.contains(says),
                "without {privilege} on {object}: expected `{says}`, got: {err}"
            ),
        }
        roles.admin(&format!("GRANT {privilege} ON {object} TO app_writer"));
    }
    // Without SELECT (id), lockable notifications still work.
    roles.admin("REVOKE SELECT (id) ON pgpubsub_notification FROM app_writer");
    let mut writer = roles.writer.conn();
    writer
        .batch_execute("INSERT INTO hardening_orders (item) VALUES ('lockable')")
        .unwrap();
    pgpubsub::notify(&mut writer, &Invoice { number: 1 }).unwrap();
    let err = pgpubsub::notify(
        &mut writer,
        &Notice {
            text: "broadcast".into(),
        },
    )
    .unwrap_err();
    assert!(
        chain(&err).contains("permission denied for table pgpubsub_notification"),
        "{}",
        chain(&err)
    );
}

// ---------------------------------------------------------------------------
// 5. Registration.

#[derive(QueryableByName, Debug)]
struct Registration {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Integer)]
    pid: i32,
    #[diesel(sql_type = Array<Text>)]
    channels: Vec<String>,
    #[diesel(sql_type = Integer)]
    workers: i32,
    #[diesel(sql_type = Timestamptz)]
    started_at: chrono::DateTime<chrono::Utc>,
    #[diesel(sql_type = Timestamptz)]
    heartbeat_at: chrono::DateTime<chrono::Utc>,
}

fn registrations(conn: &mut PgConnection) -> Vec<Registration> {
    diesel::sql_query(
        "SELECT id, host, pid, channels::text[] AS channels, workers, started_at, heartbeat_at \
         FROM pgpubsub_listener ORDER BY id",
    )
    .load(conn)
    .unwrap()
}

#[test]
fn a_running_listener_is_registered_beats_its_heartbeat_and_is_unregistered_on_shutdown() {
    let _gate = shared_gate();
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    let first = spawn_listening(
        Listener::new(db.url())
            .channels([Invoice::NAME, Notice::NAME])
            .workers(2),
    );
    let second = spawn_listening(Listener::new(db.url()).channels([Invoice::NAME]));
    let rows = registrations(&mut conn);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let pid = i32::try_from(std::process::id()).unwrap();
    for row in &rows {
        assert_eq!(row.pid, pid, "{row:?}");
        assert_eq!(row.host, host, "{row:?}");
    }
    let mut channels = rows[0].channels.clone();
    channels.sort();
    assert_eq!(channels, [Invoice::NAME, Notice::NAME]);
    assert_eq!(rows[0].workers, 2);
    assert_eq!(rows[1].channels, [Invoice::NAME]);
    assert_eq!(rows[1].workers, 1);

    // The heartbeat beats (every ~10 s).
    let started = rows[0].started_at;
    let first_beat = rows[0].heartbeat_at;
    assert!(
        wait_until(Duration::from_secs(30), || {
            let rows = registrations(&mut conn);
            rows.len() == 2
                && rows.iter().all(|row| row.heartbeat_at > first_beat)
                && rows[0].started_at == started
        }),
        "no heartbeat within 30 s: {:?}",
        registrations(&mut conn)
    );

    first.shutdown().unwrap();
    let left = registrations(&mut conn);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].id, rows[1].id, "the other listener's row must stay");
    second.shutdown().unwrap();
    assert!(registrations(&mut conn).is_empty());
}
