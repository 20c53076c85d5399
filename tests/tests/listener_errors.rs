//! A listener that cannot run fails at `spawn()` with an error that says why:
//! an unknown channel, an unreachable database, an invalid configuration.

use diesel::PgConnection;
use pgpubsub::{Error, Listener, ListenerHandle};
use pgpubsub_tests::TestDb;
use serde::{Deserialize, Serialize};

#[pgpubsub::channel(lock_notifications)]
#[derive(Serialize, Deserialize)]
struct Heartbeat {
    at: i64,
}

#[pgpubsub::listener(Heartbeat)]
fn beat(msg: Heartbeat, _conn: &mut PgConnection) {
    let _ = msg.at;
}

/// Declared, but nothing in this binary handles (or sends) it.
#[pgpubsub::channel]
#[derive(Serialize, Deserialize)]
#[allow(dead_code)]
struct Unheard {
    at: i64,
}

const SCHEMA: &str = "SELECT 1;";

const UNREACHABLE: &str = "postgres://postgres@127.0.0.1:1/x";

fn spawn_error(listener: Listener) -> Error {
    match listener.spawn() {
        Ok(handle) => {
            let _ = handle.shutdown();
            panic!("the listener started");
        }
        Err(err) => err,
    }
}

#[test]
fn an_unknown_channel_is_rejected_naming_it_and_the_known_ones() {
    let db = TestDb::new(SCHEMA);
    let err = spawn_error(Listener::new(db.url()).channels(["no_such_channel"]));
    let message = err.to_string();
    match &err {
        Error::UnknownChannel { name, known } => {
            assert_eq!(name, "no_such_channel");
            assert!(known.iter().any(|k| k == "heartbeat"), "{known:?}");
            assert!(known.iter().any(|k| k == "unheard"), "{known:?}");
        }
        other => panic!("expected UnknownChannel, got {other:?}"),
    }
    assert!(message.contains("no_such_channel"), "{message}");
    assert!(
        message.contains("known channels") && message.contains("heartbeat"),
        "{message}"
    );
}

#[test]
fn an_unreachable_database_is_a_connect_error_naming_the_url() {
    let err = spawn_error(Listener::new(UNREACHABLE));
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(UNREACHABLE_SHOWN), "{message}");
}

/// How [`UNREACHABLE`] is named in errors: host, port, user, database.
const UNREACHABLE_SHOWN: &str = "host=127.0.0.1 port=1 user=postgres dbname=x";

#[test]
fn a_connect_error_does_not_show_the_password() {
    for url in [
        "postgres://postgres:hunter2@127.0.0.1:1/x",
        "postgres://postgres@127.0.0.1:1/x?password=hunter2",
        "host=127.0.0.1 port=1 user=postgres password=hunter2 dbname=x",
        "host=127.0.0.1 port=1 user=postgres password='hunter2' dbname=x",
    ] {
        let listener = Listener::new(url);
        let err = spawn_error(listener.clone());
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
        let message = format!("{err} {err:?} {listener:?}");
        assert!(message.contains(UNREACHABLE_SHOWN), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}

#[test]
fn an_unreachable_listen_url_is_a_connect_error_naming_it() {
    let db = TestDb::new(SCHEMA);
    let err = spawn_error(Listener::new(db.url()).listen_url(UNREACHABLE));
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(UNREACHABLE_SHOWN), "{message}");
}

fn assert_config_error(listener: Listener, expected: &str) {
    let err = spawn_error(listener);
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(expected), "{message}");
}

#[test]
fn zero_workers_is_a_config_error() {
    assert_config_error(Listener::new(UNREACHABLE).workers(0), "`workers`");
}

#[test]
fn a_zero_batch_size_is_a_config_error() {
    assert_config_error(Listener::new(UNREACHABLE).batch_size(0), "`batch_size`");
}

#[test]
fn a_zero_poll_interval_is_a_config_error() {
    assert_config_error(
        Listener::new(UNREACHABLE).poll_interval(std::time::Duration::ZERO),
        "`poll_interval`",
    );
}

#[test]
fn an_empty_channel_list_is_a_config_error() {
    assert_config_error(
        Listener::new(UNREACHABLE).channels(Vec::<String>::new()),
        "channel list is empty",
    );
}

#[test]
fn an_empty_database_url_is_a_config_error() {
    assert_config_error(Listener::new("  "), "database URL is empty");
}

#[test]
fn selecting_a_channel_without_handlers_is_a_config_error() {
    let db = TestDb::new(SCHEMA);
    assert_config_error(
        Listener::new(db.url()).channels(["unheard"]),
        "`unheard` has no handlers",
    );
}

#[test]
fn a_valid_listener_starts_and_stops() {
    let db = TestDb::new(SCHEMA);
    let handle: ListenerHandle = Listener::new(db.url())
        .channels(["heartbeat"])
        .spawn()
        .unwrap();
    assert!(handle.wait_listening(pgpubsub_tests::WAIT));
    handle.shutdown().unwrap();
}

#[test]
fn a_database_without_pgpubsub_schema_is_an_error_saying_how_to_install_it() {
    let db = TestDb::empty();
    let err = pgpubsub::Listener::new(db.url()).spawn().err().unwrap();
    assert!(matches!(err, pgpubsub::Error::SchemaMissing), "{err}");
    assert!(err.to_string().contains("pgpubsub-gen"), "{err}");
}

#[test]
fn a_database_lacking_a_newer_schema_step_is_an_error_naming_it() {
    let db = TestDb::new(SCHEMA);
    let mut conn = db.conn();
    // As if pgpubsub was upgraded without regenerating the migrations.
    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        pgpubsub_diesel::schema::STEPS[1].down,
    )
    .unwrap();
    let err = pgpubsub::Listener::new(db.url()).spawn().err().unwrap();
    assert!(
        matches!(&err, pgpubsub::Error::SchemaOutdated { step } if step == "schema/0002"),
        "{err}"
    );
    assert!(err.to_string().contains("pgpubsub-gen"), "{err}");
}
