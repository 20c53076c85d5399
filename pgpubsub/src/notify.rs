//! Sending application messages.

use diesel::sql_types::{Bool, Text};
use diesel::{PgConnection, RunQueryDsl};
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::contract::payload::Payload;
use crate::contract::queries as sql;
use crate::error::{Error, Result};

/// Sends `message` on its channel, inside the caller's transaction when one
/// is open: it is delivered only if that transaction commits.
///
/// A lockable channel (`#[channel(lock_notifications)]`) stores the message,
/// so it survives a listener being down and is handled exactly once; a
/// broadcast channel reaches every listener running at commit.
///
/// ```no_run
/// # use diesel::prelude::*;
/// #[pgpubsub::channel(lock_notifications)]
/// #[derive(serde::Serialize, serde::Deserialize)]
/// pub struct PostReads { pub post_id: i64, pub reads: i32 }
///
/// # fn demo(conn: &mut PgConnection) -> pgpubsub::Result<()> {
/// pgpubsub::notify(conn, &PostReads { post_id: 1, reads: 3 })?;
/// # Ok(()) }
/// ```
pub fn notify<C: Channel>(conn: &mut PgConnection, message: &C) -> Result<()> {
    // Serialized straight to text and stored as jsonb, which keeps numbers
    // exact (u64, i128, f64 extremes); the listener deserializes the text
    // straight into the message type.
    let text = serde_json::to_string(message).map_err(|source| Error::Serialize {
        channel: C::NAME,
        source,
    })?;
    let message = RawValue::from_string(text).map_err(|source| Error::Serialize {
        channel: C::NAME,
        source,
    })?;
    let payload = Payload {
        app: crate::registry::CHANNELS
            .iter()
            .find(|def| def.name == C::NAME)
            .map(|def| def.app.to_owned()),
        message: Some(&message),
        ..Payload::default()
    };
    let payload = serde_json::to_string(&payload).map_err(|source| Error::Serialize {
        channel: C::NAME,
        source,
    })?;
    diesel::sql_query(sql::NOTIFICATION_SEND)
        .bind::<Text, _>(C::NAME)
        .bind::<Bool, _>(C::LOCK_NOTIFICATIONS)
        .bind::<Text, _>(payload)
        .execute(conn)
        .map_err(Error::query("sending a notification"))?;
    Ok(())
}
