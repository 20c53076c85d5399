//! Notification context: JSON attached to every notification a piece of code
//! causes (request id, tenant), and the metadata handlers see.

use chrono::{DateTime, Utc};
use diesel::connection::Connection;
use diesel::sql_types::{Bool, Nullable, Text};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use serde_json::Value;

use crate::contract::queries as sql;

/// What a handler learns about the notification it runs for.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) channel: String,
    pub(crate) data: Value,
    pub(crate) notification_id: Option<i64>,
    pub(crate) created_at: Option<DateTime<Utc>>,
    pub(crate) db_version: Option<String>,
    pub(crate) attempt: i32,
}

impl Context {
    /// The context JSON set with [`with_context`] or [`set_session_context`];
    /// an empty object when none was set.
    pub fn data(&self) -> &Value {
        &self.data
    }

    /// One key of the context JSON.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }

    /// The channel the notification came on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The stored notification's id; `None` for broadcast (non-lockable) channels,
    /// whose notifications are not stored.
    pub fn notification_id(&self) -> Option<i64> {
        self.notification_id
    }

    /// When the notification was written (the writing transaction's start),
    /// for stored and broadcast notifications alike.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    /// The latest applied Diesel migration version when the notification was
    /// written, for stored and broadcast notifications alike.
    pub fn db_version(&self) -> Option<&str> {
        self.db_version.as_deref()
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> i32 {
        self.attempt
    }
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

fn set(conn: &mut PgConnection, value: &str, local: bool) -> diesel::QueryResult<()> {
    diesel::sql_query(sql::CONTEXT_SET)
        .bind::<Text, _>(value)
        .bind::<Bool, _>(local)
        .execute(conn)
        .map(drop)
}

fn current(conn: &mut PgConnection) -> diesel::QueryResult<Option<String>> {
    diesel::sql_query(sql::CONTEXT_GET)
        .get_result::<Setting>(conn)
        .map(|setting| setting.value.filter(|value| !value.is_empty()))
}

/// Runs `f` in a transaction (a savepoint when one is open) where every
/// notification it causes carries `context`; the previous context is back
/// once `f` returns.
///
/// ```no_run
/// # use diesel::prelude::*;
/// # fn demo(conn: &mut PgConnection) -> diesel::QueryResult<()> {
/// pgpubsub::with_context(conn, &serde_json::json!({"request_id": "r-1"}), |conn| {
///     diesel::sql_query("UPDATE media SET size = 1").execute(conn)?;
///     Ok(())
/// })
/// # }
/// ```
pub fn with_context<T, E, F>(conn: &mut PgConnection, context: &Value, f: F) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    let text = context.to_string();
    conn.transaction(|conn| {
        let previous = current(conn)?;
        set(conn, &text, true)?;
        let result = f(conn)?;
        set(conn, previous.as_deref().unwrap_or(""), true)?;
        Ok(result)
    })
}

/// Sets the context for every later notification of this session (connection),
/// until [`clear_session_context`].
pub fn set_session_context(conn: &mut PgConnection, context: &Value) -> diesel::QueryResult<()> {
    set(conn, &context.to_string(), false)
}

/// Removes the session context set with [`set_session_context`].
pub fn clear_session_context(conn: &mut PgConnection) -> diesel::QueryResult<()> {
    set(conn, "", false)
}
