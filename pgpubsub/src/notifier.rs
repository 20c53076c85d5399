//! The one `LISTEN` session and its fan-out: wake-ups for stored
//! notifications, stored-broadcast ids for broadcast ones. The session also
//! beats the listener's heartbeat, which doubles as its ping: a silent
//! session that no longer answers is replaced.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use crate::connection::{self, PING_AFTER, PING_TIMEOUT};
use crate::contract::payload::Payload;
use crate::contract::{queries as sql, quote_ident};
use crate::error::{Error, Result};
use crate::shared::{Broadcast, Shared};

/// How long a stopping listener waits for its session to answer before it
/// removes its registration.
const UNREGISTER_WAIT: Duration = Duration::from_secs(1);

/// How long one wait for notifications lasts before the stop flag is checked.
const WAIT_SLICE: Duration = Duration::from_millis(200);

/// Opens the `LISTEN` session for every served channel.
pub(crate) fn connect(shared: &Shared) -> Result<Client> {
    subscribe(shared, connection::listen(&shared.listen)?)
}

/// Subscribes an open session to every served channel.
pub(crate) fn subscribe(shared: &Shared, mut client: Client) -> Result<Client> {
    let statement: String = shared
        .served
        .iter()
        .map(|entry| format!("LISTEN {};", quote_ident(entry.def.name)))
        .collect();
    client.batch_execute(&statement).map_err(Error::Listen)?;
    for entry in &shared.served {
        tracing::info!(channel = entry.def.name, "listening");
    }
    Ok(client)
}

/// Serves the session until stopped, reconnecting with backoff when it
/// drops; removes the listener's registration on the way out.
pub(crate) fn run(shared: &Shared, client: Client) {
    let mut client = Some(client);
    let mut backoff = Duration::from_millis(100);
    while !shared.stopping() {
        let mut session = match client.take() {
            Some(session) => session,
            None => match connect(shared) {
                Ok(session) => {
                    tracing::info!("listen session re-established");
                    backoff = Duration::from_millis(100);
                    session
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?backoff, "cannot re-establish the listen session");
                    sleep_unless_stopped(shared, backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        shared.set_listening(true);
        // Catch up on whatever was stored while nobody listened.
        shared.wake_all_workers();
        match serve(shared, &mut session) {
            Ok(()) => {
                // A session that does not answer at once is not waited for:
                // the registration's heartbeat stops, and it reads as gone.
                let answered = session.is_valid(UNREGISTER_WAIT);
                let removed = answered.and_then(|()| match shared.registration {
                    Some(registration) => session
                        .execute(sql::LISTENER_UNREGISTER, &[&registration])
                        .map(drop),
                    None => Ok(()),
                });
                match removed {
                    Ok(()) => drop(session),
                    Err(err) => {
                        tracing::debug!(error = %err, "cannot remove the listener's registration");
                        discard(session);
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "listen session lost");
                discard(session);
            }
        }
        shared.set_listening(false);
    }
}

/// Lets go of a session that failed or stopped answering. Dropping a
/// `postgres::Client` waits until its connection ends, which on a half-open
/// one lasts until TCP gives up (or forever, when a middlebox acknowledges
/// everything): that wait happens on a thread of its own, so the listener
/// replaces the session, or stops, at once.
fn discard(session: Client) {
    let spawned = std::thread::Builder::new()
        .name("pgpubsub-discard".into())
        .spawn(move || drop(session));
    if let Err(err) = spawned {
        // The session was dropped with the thread that could not start.
        tracing::warn!(error = %err, "no thread to close a failed listen session: it was closed in place");
    }
}

fn serve(shared: &Shared, client: &mut Client) -> Result<(), postgres::Error> {
    let mut last_beat = Instant::now();
    while !shared.stopping() {
        let mut notifications = client.notifications();
        let mut iter = notifications.timeout_iter(WAIT_SLICE);
        while let Some(notification) = iter.next()? {
            route(shared, notification.channel(), notification.payload());
            if shared.stopping() {
                break;
            }
        }
        drop(iter);
        drop(notifications);
        if client.is_closed() {
            // The iterator ends quietly on a closed socket; force the error.
            client.simple_query("SELECT 1")?;
        }
        if last_beat.elapsed() >= PING_AFTER {
            // The ping: a half-open session (the peer gone, or a middlebox
            // that acknowledges and swallows traffic) does not answer within
            // PING_TIMEOUT, and the session is replaced. The heartbeat
            // follows on the session that answered.
            client.is_valid(PING_TIMEOUT)?;
            match shared.registration {
                Some(registration) => {
                    client.execute(sql::LISTENER_HEARTBEAT, &[&registration])?;
                }
                None => {
                    client.simple_query("SELECT 1")?;
                }
            }
            last_beat = Instant::now();
        }
    }
    Ok(())
}

/// Routes one notification: a wake-up for a lockable channel, a stored
/// broadcast's id for a broadcast one. A broadcast payload that is not a
/// stored-broadcast reference was not sent by pgpubsub (whose broadcasts
/// are all stored): it is ignored and counted.
fn route(shared: &Shared, channel: &str, payload: &str) {
    let Some(entry) = shared.entry(channel) else {
        tracing::debug!(channel, "notification for a channel not served");
        return;
    };
    if entry.def.lock_notifications {
        shared.wake_workers();
        return;
    }
    let id = serde_json::from_str::<Payload<'_>>(payload)
        .ok()
        .and_then(|payload| payload.pgpubsub_stored);
    match id {
        Some(id) => {
            if !shared.push_broadcast(Broadcast {
                channel: channel.to_owned(),
                id,
            }) {
                warn_every(
                    shared.stats.broadcasts_dropped.load(Ordering::Relaxed),
                    "broadcast queue full: broadcast dropped",
                    channel,
                );
            }
        }
        None => {
            let rejected = shared
                .stats
                .broadcasts_rejected
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            warn_every(
                rejected,
                "NOTIFY payload on a broadcast channel that is not a stored broadcast: ignored (pgpubsub sends only stored-broadcast ids; this came from elsewhere)",
                channel,
            );
        }
    }
}

/// Logs the 1st, 10th, 100th, … occurrence: a flood does not flood the log.
fn warn_every(count: u64, message: &str, channel: &str) {
    if count.max(1).ilog10() != count.saturating_sub(1).max(1).ilog10() || count == 1 {
        tracing::warn!(channel, count, "{message}");
    }
}

fn sleep_unless_stopped(shared: &Shared, total: Duration) {
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while waited < total && !shared.stopping() {
        std::thread::sleep(step);
        waited += step;
    }
}
