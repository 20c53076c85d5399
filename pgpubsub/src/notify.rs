//! Sending application messages.

use diesel::sql_types::{Array, Bool, Text};
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
    let payload = payload_text(message)?;
    diesel::sql_query(sql::NOTIFICATION_SEND)
        .bind::<Text, _>(C::NAME)
        .bind::<Bool, _>(C::LOCK_NOTIFICATIONS)
        .bind::<Text, _>(payload)
        .execute(conn)
        .map_err(Error::query("sending a notification"))?;
    Ok(())
}

/// Sends every message of `messages` on their channel in one statement
/// (one round trip), in order, inside the caller's transaction when one is
/// open; returns how many were sent. For bulk producers: 10,000 messages
/// cost one statement, not 10,000.
///
/// Each message is sent exactly as [`notify`] sends it (the same context,
/// the same storage and wake-up); a lockable channel's listeners are woken
/// once for the lot. Nothing is sent when a message cannot be serialized
/// (the error names the channel), nor for an empty list.
///
/// ```no_run
/// # use diesel::prelude::*;
/// #[pgpubsub::channel(lock_notifications)]
/// #[derive(serde::Serialize, serde::Deserialize)]
/// pub struct PostReads { pub post_id: i64, pub reads: i32 }
///
/// # fn demo(conn: &mut PgConnection) -> pgpubsub::Result<()> {
/// let reads: Vec<PostReads> = (1..=1000).map(|post_id| PostReads { post_id, reads: 1 }).collect();
/// let sent = pgpubsub::notify_all(conn, &reads)?;
/// assert_eq!(sent, 1000);
/// # Ok(()) }
/// ```
pub fn notify_all<'a, C, I>(conn: &mut PgConnection, messages: I) -> Result<usize>
where
    C: Channel + 'a,
    I: IntoIterator<Item = &'a C>,
{
    let payloads = messages
        .into_iter()
        .map(payload_text)
        .collect::<Result<Vec<String>>>()?;
    if payloads.is_empty() {
        return Ok(0);
    }
    diesel::sql_query(sql::NOTIFICATION_SEND_ALL)
        .bind::<Text, _>(C::NAME)
        .bind::<Bool, _>(C::LOCK_NOTIFICATIONS)
        .bind::<Array<Text>, _>(&payloads)
        .execute(conn)
        .map_err(Error::query("sending notifications"))?;
    Ok(payloads.len())
}

/// The stored payload of `message`, as JSON text.
fn payload_text<C: Channel>(message: &C) -> Result<String> {
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
    serde_json::to_string(&payload).map_err(|source| Error::Serialize {
        channel: C::NAME,
        source,
    })
}
