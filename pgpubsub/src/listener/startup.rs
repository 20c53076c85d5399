//! What a listener checks and records before it serves: pgpubsub's schema,
//! the role's privileges, the channels' triggers, its own registration, and
//! stored notifications no listener serves.

use diesel::sql_types::{Array, BigInt, Double, Integer, Text};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};

use crate::config::ListenerConfig;
use crate::connection::{self, ConnInfo};
use crate::contract::{names, queries as sql, schema};
use crate::error::{Error, Result};
use crate::registry::ChannelEntry;

/// What start-up found.
pub(crate) struct Started {
    /// The transactions committed at start: broadcasts they wrote are not
    /// this listener's (a NOTIFY naming one is a replay).
    pub(crate) start_snapshot: String,
    pub(crate) skip_committed_before: Option<String>,
    pub(crate) registration: Option<i64>,
    /// The connection the checks ran on, for a worker.
    pub(crate) conn: PgConnection,
}

/// How recent a listener's heartbeat must be for it to count as running.
pub(crate) const ALIVE_WITHIN_SECS: f64 = 60.0;

/// Connects once (an unreachable database fails here, not in a thread),
/// checks the schema and privileges, registers the listener and reports
/// stored notifications no running listener serves.
pub(crate) fn check(
    config: &ListenerConfig,
    database: &ConnInfo,
    served: &[ChannelEntry],
) -> Result<Started> {
    let mut conn = connection::worker(database)?;
    check_schema(&mut conn, served)?;
    check_privileges(&mut conn)?;
    let start_snapshot = current_snapshot(&mut conn)?;
    let skip_committed_before = (!config.recover).then(|| start_snapshot.clone());
    let channels: Vec<&str> = served.iter().map(|entry| entry.def.name).collect();
    let registration = register(&mut conn, &channels, config.workers)?;
    report_unserved(&mut conn, &channels)?;
    Ok(Started {
        start_snapshot,
        skip_committed_before,
        registration: Some(registration),
        conn,
    })
}

#[derive(QueryableByName)]
struct Installed {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    ok: bool,
}

#[derive(QueryableByName)]
struct Named {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct SchemaUsage {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    ok: bool,
}

#[derive(QueryableByName)]
struct Missing {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    privilege: String,
}

#[derive(QueryableByName)]
struct Role {
    #[diesel(sql_type = Text)]
    name: String,
}

fn role(conn: &mut PgConnection) -> Result<String> {
    diesel::sql_query("SELECT current_user::text AS name")
        .get_result::<Role>(conn)
        .map(|row| row.name)
        .map_err(Error::query("reading the current role"))
}

/// Fails when pgpubsub's schema is missing, out of reach (no USAGE on its
/// schema) or older than this version; warns about served trigger channels
/// whose trigger is not installed (they would never notify).
pub(crate) fn check_schema(conn: &mut PgConnection, served: &[ChannelEntry]) -> Result<()> {
    let table = diesel::sql_query(sql::SCHEMA_TABLE_PRESENT)
        .get_result::<Installed>(conn)
        .map_err(Error::query("checking pgpubsub's schema"))?;
    if !table.ok {
        // The table may exist where the role cannot reach it.
        let usage: Option<SchemaUsage> = diesel::sql_query(sql::SCHEMA_USAGE)
            .get_results::<SchemaUsage>(conn)
            .map_err(Error::query("checking pgpubsub's schema"))?
            .pop();
        if let Some(usage) = usage.filter(|usage| !usage.ok) {
            return Err(Error::PrivilegeMissing {
                role: role(conn)?,
                missing: vec![format!("USAGE on schema {}", usage.name)],
            });
        }
        return Err(Error::SchemaMissing);
    }
    let markers: Vec<&str> = schema::STEPS.iter().map(|step| step.marker).collect();
    let steps: Vec<bool> = diesel::sql_query(sql::SCHEMA_STEPS_PRESENT)
        .bind::<Array<Text>, _>(&markers)
        .load::<Installed>(conn)
        .map_err(Error::query("checking pgpubsub's schema"))?
        .into_iter()
        .map(|row| row.ok)
        .collect();
    if !steps.first().copied().unwrap_or(false) {
        return Err(Error::SchemaMissing);
    }
    if let Some(missing) = steps.iter().position(|present| !present) {
        return Err(Error::SchemaOutdated {
            step: schema::STEPS
                .get(missing)
                .map_or("?", |step| step.key)
                .to_owned(),
        });
    }
    let expected: Vec<String> = served
        .iter()
        .filter(|entry| entry.def.is_trigger())
        .map(|entry| names::channel_object(entry.def.name))
        .collect();
    let present: Vec<String> = diesel::sql_query(sql::TRIGGERS_PRESENT)
        .bind::<Array<Text>, _>(&expected)
        .load::<Named>(conn)
        .map_err(Error::query("checking the channels' triggers"))?
        .into_iter()
        .map(|row| row.name)
        .collect();
    for name in expected.iter().filter(|name| !present.contains(name)) {
        tracing::warn!(
            trigger = %name,
            "trigger missing: this channel's rows will not notify until the migrations written by pgpubsub-gen are applied"
        );
    }
    Ok(())
}

/// Fails naming every privilege a listener needs that the role lacks.
fn check_privileges(conn: &mut PgConnection) -> Result<()> {
    let missing: Vec<String> = diesel::sql_query(sql::LISTENER_PRIVILEGES_MISSING)
        .load::<Missing>(conn)
        .map_err(Error::query("checking the listener's privileges"))?
        .into_iter()
        .map(|row| format!("{} on {}", row.privilege, row.name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::PrivilegeMissing {
        role: role(conn)?,
        missing,
    })
}

#[derive(QueryableByName)]
struct Snapshot {
    #[diesel(sql_type = Text)]
    snapshot: String,
}

/// The current snapshot: which transactions have committed now.
fn current_snapshot(conn: &mut PgConnection) -> Result<String> {
    diesel::sql_query(sql::SNAPSHOT_CURRENT)
        .get_result::<Snapshot>(conn)
        .map(|row| row.snapshot)
        .map_err(Error::query("reading the current snapshot"))
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn register(conn: &mut PgConnection, channels: &[&str], workers: usize) -> Result<i64> {
    diesel::sql_query(sql::LISTENER_REGISTER)
        .bind::<Text, _>(host_name())
        .bind::<Integer, _>(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
        .bind::<Array<Text>, _>(channels)
        .bind::<Integer, _>(i32::try_from(workers).unwrap_or(i32::MAX))
        .get_result::<Id>(conn)
        .map(|row| row.id)
        .map_err(Error::query("registering the listener"))
}

#[derive(QueryableByName)]
struct Unserved {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Removes the registration of a listener whose start failed after it
/// registered.
pub(crate) fn unregister(database: &ConnInfo, registration: i64) {
    let removed = connection::worker(database).and_then(|mut conn| {
        diesel::sql_query(sql::LISTENER_UNREGISTER)
            .bind::<BigInt, _>(registration)
            .execute(&mut conn)
            .map_err(Error::query("removing the listener's registration"))
    });
    if let Err(err) = removed {
        tracing::debug!(error = %err, "cannot remove the listener's registration");
    }
}

/// Warns about channels with stored notifications that neither this
/// listener nor any other running one serves: nothing will handle them.
fn report_unserved(conn: &mut PgConnection, channels: &[&str]) -> Result<()> {
    let unserved = diesel::sql_query(sql::UNSERVED_CHANNELS)
        .bind::<Array<Text>, _>(channels)
        .bind::<Double, _>(ALIVE_WITHIN_SECS)
        .load::<Unserved>(conn)
        .map_err(Error::query("looking for notifications no listener serves"))?;
    for channel in unserved {
        let stored = if channel.n >= sql::UNSERVED_COUNT_CAP {
            format!("at least {}", channel.n)
        } else {
            channel.n.to_string()
        };
        tracing::warn!(
            channel = %channel.name,
            %stored,
            "stored notifications of a channel no running listener serves: they wait until one does"
        );
    }
    Ok(())
}
