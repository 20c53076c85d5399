//! Dead notifications: those out of attempts, or with a permanent error (a
//! payload this code cannot decode). A listener never claims nor deletes
//! them; they keep their last error until you retry or purge them.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use diesel::Connection;
//! let mut conn = diesel::PgConnection::establish("postgres://localhost/app")?;
//! for dead in pgpubsub::dead::list(&mut conn, Some("media_channel"))? {
//!     println!("{} {}: {:?}", dead.id, dead.channel, dead.last_error);
//! }
//! pgpubsub::dead::retry(&mut conn, &pgpubsub::dead::Selection::Channel("media_channel".into()))?;
//! # Ok(())
//! # }
//! ```
//!
//! The same from the command line: `dead list`, `dead retry`, `dead purge`
//! (see [`crate::cli::DeadArgs`]).

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};

use crate::contract::queries as sql;
use crate::error::{Error, Result};

/// One dead notification.
#[derive(Debug, Clone, QueryableByName)]
#[non_exhaustive]
pub struct DeadNotification {
    /// Its id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Its channel.
    #[diesel(sql_type = Text)]
    pub channel: String,
    /// When it was written.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// When it died.
    #[diesel(sql_type = Timestamptz)]
    pub dead_at: DateTime<Utc>,
    /// Its attempts.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// The last attempt's error (cut at a few kB, with its length noted).
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
}

/// Which dead notifications an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every dead notification.
    All,
    /// The dead notifications of one channel.
    Channel(String),
    /// These ids (ids that are not dead notifications are left alone).
    Ids(Vec<i64>),
}

impl Selection {
    fn binds(&self) -> (bool, Option<&str>, &[i64]) {
        match self {
            Selection::All => (true, None, &[]),
            Selection::Channel(channel) => (false, Some(channel), &[]),
            Selection::Ids(ids) => (false, None, ids),
        }
    }
}

/// The dead notifications, of `channel` when given, oldest first.
pub fn list(conn: &mut PgConnection, channel: Option<&str>) -> Result<Vec<DeadNotification>> {
    diesel::sql_query(sql::DEAD_LIST)
        .bind::<Nullable<Text>, _>(channel)
        .load(conn)
        .map_err(Error::query("listing dead notifications"))
}

#[derive(QueryableByName)]
struct RetriedChannel {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Makes the selected dead notifications available again, with a fresh
/// count of attempts (their last error is kept until they run), and wakes
/// the listeners of their channels. Returns how many were retried.
pub fn retry(conn: &mut PgConnection, selection: &Selection) -> Result<usize> {
    let (all, channel, ids) = selection.binds();
    let mut channels: Vec<String> = diesel::sql_query(sql::DEAD_RETRY.as_str())
        .bind::<Bool, _>(all)
        .bind::<Nullable<Text>, _>(channel)
        .bind::<Array<BigInt>, _>(ids)
        .load::<RetriedChannel>(conn)
        .map_err(Error::query("retrying dead notifications"))?
        .into_iter()
        .map(|row| row.name)
        .collect();
    let retried = channels.len();
    channels.sort();
    channels.dedup();
    for channel in channels {
        diesel::sql_query(sql::WAKE)
            .bind::<Text, _>(&channel)
            .execute(conn)
            .map_err(Error::query("waking the listeners"))?;
    }
    Ok(retried)
}

/// Deletes the selected dead notifications. Returns how many.
pub fn purge(conn: &mut PgConnection, selection: &Selection) -> Result<usize> {
    let (all, channel, ids) = selection.binds();
    diesel::sql_query(sql::DEAD_PURGE.as_str())
        .bind::<Bool, _>(all)
        .bind::<Nullable<Text>, _>(channel)
        .bind::<Array<BigInt>, _>(ids)
        .execute(conn)
        .map_err(Error::query("purging dead notifications"))
}
