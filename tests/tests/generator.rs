//! `pgpubsub-gen`: one migration per change, `--check`, and down.sql that
//! restores the previous state on a real server.

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use pgpubsub::__private::{ChannelDef, ChannelSource, HandlerError, Invocation};
use pgpubsub::{HandlerDef, HandlerKind, Ops, Registry};
use pgpubsub_diesel::{generate, generate_with, Outcome};
use pgpubsub_tests::TestDb;
use serde::Deserialize;

diesel::table! {
    media (id) {
        id -> BigInt,
        name -> Text,
    }
}

#[derive(Queryable, Selectable, Identifiable, Deserialize, Debug)]
#[diesel(table_name = media)]
pub struct Media {
    pub id: i64,
    pub name: String,
}

fn noop(_: Invocation<'_>) -> Result<(), HandlerError> {
    Ok(())
}

fn channel(name: &'static str, lock: bool) -> ChannelDef {
    ChannelDef {
        name,
        type_path: "generator::MediaChannel",
        app: "generator",
        lock_notifications: lock,
        max_attempts: None,
        source: ChannelSource::Trigger(pgpubsub::__private::trigger_source::<Media>("Media", None)),
    }
}

fn handler(
    channel: &'static str,
    name: &'static str,
    kind: HandlerKind,
    ops: Ops,
    when: Option<&'static str>,
) -> HandlerDef {
    HandlerDef {
        channel,
        name,
        kind,
        ops,
        when,
        uses_conn: false,
        takes_old: false,
        takes_new: true,
        call: noop,
    }
}

fn dirs(path: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn second_run_without_changes_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::from_parts(
        &[channel("media_channel", true)],
        &[handler(
            "media_channel",
            "scan",
            HandlerKind::Post,
            Ops::SAVE,
            None,
        )],
    )
    .unwrap();
    let first = generate(&registry, dir.path(), false, None).unwrap();
    assert!(matches!(first, Outcome::Written { .. }));
    let second = generate(&registry, dir.path(), false, None).unwrap();
    assert!(matches!(second, Outcome::UpToDate), "{second:?}");
    assert_eq!(dirs(dir.path()).len(), 1);
    assert!(matches!(
        generate(&registry, dir.path(), true, None).unwrap(),
        Outcome::UpToDate
    ));
}

#[test]
fn a_generator_that_links_no_channel_refuses_to_drop_the_installed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::from_parts(
        &[channel("media_channel", true)],
        &[handler(
            "media_channel",
            "scan",
            HandlerKind::Post,
            Ops::SAVE,
            None,
        )],
    )
    .unwrap();
    generate(&registry, dir.path(), false, Some("2000-01-01-000001")).unwrap();
    let nothing_linked = Registry::from_parts(&[], &[]).unwrap();
    for check in [false, true] {
        let err = generate(
            &nothing_linked,
            dir.path(),
            check,
            Some("2000-01-01-000002"),
        )
        .expect_err("a registry without channels dropped the installed triggers");
        let message = err.to_string();
        assert!(message.contains("links no pgpubsub channel"), "{message}");
        assert!(message.contains("channel/media_channel"), "{message}");
        assert!(message.contains("--drop-all-channels"), "{message}");
    }
    assert_eq!(dirs(dir.path()).len(), 1, "a migration was written");
    let dropped = generate_with(
        &nothing_linked,
        dir.path(),
        false,
        Some("2000-01-01-000002"),
        true,
    )
    .unwrap();
    let Outcome::Written { diff, .. } = dropped else {
        panic!("no migration dropping the channels: {dropped:?}");
    };
    assert_eq!(diff.summary, vec!["- channel/media_channel".to_string()]);
}

#[test]
fn check_fails_when_a_listener_is_added_without_regenerating() {
    let dir = tempfile::tempdir().unwrap();
    let before = Registry::from_parts(
        &[channel("media_channel", true)],
        &[handler(
            "media_channel",
            "scan",
            HandlerKind::Post,
            Ops::INSERT,
            None,
        )],
    )
    .unwrap();
    generate(&before, dir.path(), false, None).unwrap();
    let after = Registry::from_parts(
        &[channel("media_channel", true)],
        &[
            handler(
                "media_channel",
                "scan",
                HandlerKind::Post,
                Ops::INSERT,
                None,
            ),
            handler(
                "media_channel",
                "forget",
                HandlerKind::Post,
                Ops::DELETE,
                None,
            ),
        ],
    )
    .unwrap();
    match generate(&after, dir.path(), true, None).unwrap() {
        Outcome::Behind { diff } => assert_eq!(diff.summary, vec!["~ channel/media_channel"]),
        other => panic!("expected the check to fail, got {other:?}"),
    }
    // --check wrote nothing.
    assert_eq!(dirs(dir.path()).len(), 1);
}

#[test]
fn output_is_deterministic() {
    let make = || {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::from_parts(
            &[channel("b_channel", false), channel("a_channel", true)],
            &[
                handler("b_channel", "y", HandlerKind::Post, Ops::DELETE, None),
                handler(
                    "a_channel",
                    "x",
                    HandlerKind::Custom,
                    Ops::SAVE,
                    Some("NEW.name <> ''"),
                ),
                handler("a_channel", "w", HandlerKind::Pre, Ops::INSERT, None),
            ],
        )
        .unwrap();
        generate(&registry, dir.path(), false, Some("2024-05-06-070809")).unwrap();
        let path = dir.path().join("2024-05-06-070809_pgpubsub");
        (
            std::fs::read_to_string(path.join("up.sql")).unwrap(),
            std::fs::read_to_string(path.join("down.sql")).unwrap(),
        )
    };
    assert_eq!(make(), make());
}

#[derive(QueryableByName, Debug, PartialEq)]
struct TriggerDef {
    #[diesel(sql_type = Text)]
    def: String,
}

fn trigger_defs(conn: &mut PgConnection) -> Vec<String> {
    diesel::sql_query(
        "SELECT pg_get_triggerdef(oid) AS def FROM pg_trigger WHERE NOT tgisinternal ORDER BY tgname",
    )
    .load::<TriggerDef>(conn)
    .unwrap()
    .into_iter()
    .map(|t| t.def)
    .collect()
}

#[test]
fn down_sql_restores_the_previous_triggers() {
    let db = TestDb::empty();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("2000-01-01-000000_app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("up.sql"),
        "CREATE TABLE media (id bigserial PRIMARY KEY, name text NOT NULL);",
    )
    .unwrap();
    std::fs::write(app.join("down.sql"), "DROP TABLE media;").unwrap();

    let v1 = Registry::from_parts(
        &[channel("media_channel", true)],
        &[handler(
            "media_channel",
            "scan",
            HandlerKind::Post,
            Ops::INSERT,
            None,
        )],
    )
    .unwrap();
    generate(&v1, dir.path(), false, Some("2000-01-01-000001")).unwrap();
    db.migrate(dir.path());
    let mut conn = db.conn();
    let v1_defs = trigger_defs(&mut conn);
    assert_eq!(v1_defs.len(), 1);
    assert!(
        v1_defs[0].contains("AFTER INSERT ON public.media"),
        "{v1_defs:?}"
    );

    // v2: a delete listener on the same channel and a second channel.
    let v2 = Registry::from_parts(
        &[
            channel("media_channel", true),
            channel("media_audit", false),
        ],
        &[
            handler(
                "media_channel",
                "scan",
                HandlerKind::Post,
                Ops::INSERT,
                None,
            ),
            handler(
                "media_channel",
                "forget",
                HandlerKind::Post,
                Ops::DELETE,
                None,
            ),
            handler("media_audit", "audit", HandlerKind::Post, Ops::ALL, None),
        ],
    )
    .unwrap();
    generate(&v2, dir.path(), false, Some("2000-01-01-000002")).unwrap();
    db.migrate(dir.path());
    let v2_defs = trigger_defs(&mut conn);
    assert_eq!(v2_defs.len(), 2, "{v2_defs:?}");
    assert!(
        v2_defs
            .iter()
            .any(|d| d.contains("AFTER INSERT OR DELETE ON public.media")),
        "{v2_defs:?}"
    );

    // Reverting v2 brings back exactly v1's triggers.
    let migrations = FileBasedMigrations::from_path(dir.path()).unwrap();
    conn.revert_last_migration(migrations).unwrap();
    assert_eq!(trigger_defs(&mut conn), v1_defs);

    // v3 removes the channel's last listener: its trigger goes away.
    db.migrate(dir.path());
    let v3 = Registry::from_parts(&[channel("media_channel", true)], &[]).unwrap();
    generate(&v3, dir.path(), false, Some("2000-01-01-000003")).unwrap();
    db.migrate(dir.path());
    assert!(trigger_defs(&mut conn).is_empty());
    let migrations = FileBasedMigrations::from_path(dir.path()).unwrap();
    conn.revert_last_migration(migrations).unwrap();
    assert_eq!(trigger_defs(&mut conn).len(), 2);
}

#[test]
fn duplicate_channel_names_are_an_error_naming_both_types() {
    let mut other = channel("media_channel", true);
    other.type_path = "app::other::MediaChannel";
    let err = Registry::from_parts(&[channel("media_channel", true), other], &[]).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("`media_channel`"), "{message}");
    assert!(
        message.contains("app::other::MediaChannel") && message.contains("generator::MediaChannel"),
        "{message}"
    );
}

#[test]
fn trigger_sql_snapshot() {
    let registry = Registry::from_parts(
        &[channel("media_channel", true)],
        &[
            handler("media_channel", "scan", HandlerKind::Post, Ops::SAVE, None),
            handler(
                "media_channel",
                "big",
                HandlerKind::Custom,
                Ops::UPDATE.union(Ops::DELETE),
                Some("OLD.name = 'x'"),
            ),
        ],
    )
    .unwrap();
    let entry = registry.get("media_channel").unwrap();
    let sql = pgpubsub_diesel::trigger::render(entry).unwrap().unwrap();
    insta::assert_snapshot!(sql.create);
}

diesel::table! {
    /// A table whose name carries a newline and SQL, as a hostile schema
    /// could: the generated migration must keep it inside identifiers.
    #[sql_name = "evil\nDROP TABLE victims; --"]
    evil (id) {
        id -> BigInt,
    }
}

#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = evil)]
pub struct Evil {
    pub id: i64,
}

#[test]
fn a_table_name_with_a_newline_cannot_inject_sql_into_the_migration() {
    let def = ChannelDef {
        name: "evil_channel",
        type_path: "generator::Evil\nDROP TABLE victims; --",
        app: "generator",
        lock_notifications: true,
        max_attempts: None,
        source: ChannelSource::Trigger(pgpubsub::__private::trigger_source::<Evil>("Evil", None)),
    };
    let registry = Registry::from_parts(
        &[def],
        &[handler(
            "evil_channel",
            "generator::evil_saved",
            HandlerKind::Post,
            Ops::SAVE,
            None,
        )],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let Outcome::Written { path, .. } =
        generate(&registry, dir.path(), false, Some("2000-01-01-000001")).unwrap()
    else {
        panic!("nothing written");
    };
    let up = std::fs::read_to_string(path.join("up.sql")).unwrap();
    // The comment line keeps the name on one line, the newline escaped;
    // elsewhere the name only appears as a quoted identifier.
    let comment = up
        .lines()
        .find(|line| line.starts_with("-- Channel `evil_channel`"))
        .unwrap();
    assert!(
        comment.ends_with(r#"on "evil\nDROP TABLE victims; --"."#),
        "{comment}"
    );

    // Applied on the server: the victim survives and the trigger works.
    let db = TestDb::empty();
    let mut conn = db.conn();
    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        "CREATE TABLE victims (id int); CREATE TABLE \"evil\nDROP TABLE victims; --\" (id bigint PRIMARY KEY);",
    )
    .unwrap();
    db.migrate(dir.path());
    diesel::sql_query("INSERT INTO \"evil\nDROP TABLE victims; --\" (id) VALUES (1)")
        .execute(&mut conn)
        .unwrap();
    assert_eq!(
        pgpubsub_tests::count(&mut conn, "SELECT count(*) AS n FROM victims"),
        0
    );
    assert_eq!(
        pgpubsub_tests::count(&mut conn, "SELECT count(*) AS n FROM pgpubsub_notification"),
        1
    );
}

#[test]
fn a_changed_released_schema_step_is_refused_not_skipped() {
    let registry = Registry::from_parts(&[channel("media", true)], &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let Outcome::Written { path, .. } =
        generate(&registry, dir.path(), false, Some("2000-01-01-000001")).unwrap()
    else {
        panic!("nothing written");
    };
    // Someone edits the recorded copy of released step 0001.
    let up_path = path.join("up.sql");
    let up = std::fs::read_to_string(&up_path).unwrap();
    let edited = up.replacen("available_at timestamptz", "available_at timestamp", 1);
    assert_ne!(up, edited);
    std::fs::write(&up_path, edited).unwrap();

    let err = generate(&registry, dir.path(), false, Some("2000-01-01-000002")).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("schema/0001"), "{message}");
    assert!(message.contains("frozen"), "{message}");
    assert_eq!(dirs(dir.path()).len(), 1, "nothing new is written");
    let err = generate(&registry, dir.path(), true, None).unwrap_err();
    assert!(err.to_string().contains("schema/0001"));
}
