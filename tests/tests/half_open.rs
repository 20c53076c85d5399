//! A half-open LISTEN session: the connection stays up, the peer's kernel
//! acknowledges every byte, but nothing answers (a frozen middlebox, a
//! server host that hangs). TCP never reports it; the session's ping does,
//! and the listener replaces the session within 30 s.
//!
//! The session goes through a TCP proxy of the test's own, which can freeze
//! the connections it carries without closing them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::Text;
use pgpubsub_tests::{count, spawn_listening, wait_until, TestDb};
use serde::{Deserialize, Serialize};

const SCHEMA: &str = "CREATE TABLE heard (id bigserial PRIMARY KEY, text text NOT NULL);";

/// A broadcast channel: its notifications reach a listener only through
/// its LISTEN session.
#[pgpubsub::channel]
#[derive(Serialize, Deserialize)]
struct Bulletin {
    text: String,
}

#[pgpubsub::listener(Bulletin)]
fn hear(message: Bulletin, conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO heard (text) VALUES ($1)")
        .bind::<Text, _>(&message.text)
        .execute(conn)
        .map(drop)
}

/// Forwards connections to `target`; [`Proxy::freeze`] stops every
/// connection open at that moment from carrying anything, in either
/// direction, while its sockets stay open. Later connections flow.
struct Proxy {
    port: u16,
    /// Connections numbered up to this are frozen.
    frozen_up_to: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen_up_to = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (frozen, count, stopping) = (frozen_up_to.clone(), accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let number = count.fetch_add(1, Ordering::SeqCst) + 1;
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let frozen = frozen.clone();
                    std::thread::spawn(move || pump(from, to, number, &frozen));
                }
            }
        });
        Proxy {
            port,
            frozen_up_to,
            accepted,
            stop,
        }
    }

    fn freeze(&self) {
        self.frozen_up_to
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, number: u64, frozen: &AtomicU64) {
    let mut buffer = [0u8; 16 * 1024];
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    loop {
        if frozen.load(Ordering::SeqCst) >= number {
            // Frozen: hold the sockets open, read nothing, send nothing.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                // Frozen during the read: what it read is swallowed.
                if frozen.load(Ordering::SeqCst) >= number {
                    continue;
                }
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

#[test]
fn a_half_open_listen_session_is_replaced_within_30_seconds() {
    let db = TestDb::new(SCHEMA);
    let mut direct = url::Url::parse(db.url()).unwrap();
    let target = format!(
        "{}:{}",
        direct.host_str().unwrap_or("127.0.0.1"),
        direct.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(target);
    direct.set_host(Some("127.0.0.1")).unwrap();
    direct.set_port(Some(proxy.port)).unwrap();
    let handle = spawn_listening(
        pgpubsub::Listener::new(db.url())
            .listen_url(direct.as_str())
            .channels(["bulletin"]),
    );
    let mut conn = db.conn();
    let heard = |conn: &mut PgConnection, text: &str| {
        count(
            conn,
            &format!("SELECT count(*) AS n FROM heard WHERE text = '{text}'"),
        )
    };
    pgpubsub::notify(
        &mut conn,
        &Bulletin {
            text: "before".into(),
        },
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || heard(
        &mut conn, "before"
    ) == 1));

    proxy.freeze();
    let frozen_at = Instant::now();
    // Broadcasts sent from now on reach the listener only once it has a
    // new session; the ones sent into the frozen one are lost with it.
    let mut sent = 0;
    let replaced = wait_until(Duration::from_secs(30), || {
        sent += 1;
        pgpubsub::notify(
            &mut conn,
            &Bulletin {
                text: format!("after {sent}"),
            },
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        count(
            &mut conn,
            "SELECT count(*) AS n FROM heard WHERE text LIKE 'after %'",
        ) > 0
    });
    let took = frozen_at.elapsed();
    handle.shutdown().unwrap();
    assert!(
        replaced,
        "no broadcast arrived within 30 s of the LISTEN session freezing ({sent} sent)"
    );
    assert!(
        proxy.accepted.load(Ordering::SeqCst) >= 2,
        "the session was not replaced"
    );
    eprintln!("half-open session replaced after {took:?}");
}
