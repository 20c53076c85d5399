//! The one `LISTEN` session and its fan-out: wake-ups for stored
//! notifications, payloads for broadcast ones.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

use crate::contract::quote_ident;
use crate::error::{redact_url, Error, Result};
use crate::listener::{Broadcast, Shared};

/// How long one wait for notifications lasts before the stop flag is checked.
const WAIT_SLICE: Duration = Duration::from_millis(200);

fn url(shared: &Shared) -> &str {
    shared
        .config
        .listen_url
        .as_deref()
        .unwrap_or(&shared.config.database_url)
}

/// Opens the `LISTEN` session for every served channel.
pub(crate) fn connect(shared: &Shared) -> Result<Client> {
    let url = url(shared);
    let mut client = Client::connect(url, NoTls).map_err(|source| Error::Connect {
        url: redact_url(url),
        source: Box::new(source),
    })?;
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

/// Serves the session until stopped, reconnecting with backoff when it drops.
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
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
        };
        shared.set_listening(true);
        // Catch up on whatever was stored while nobody listened.
        shared.wake_workers();
        if let Err(err) = serve(shared, &mut session) {
            tracing::warn!(error = %err, "listen session lost");
        }
        shared.set_listening(false);
    }
}

fn serve(shared: &Shared, client: &mut Client) -> Result<(), postgres::Error> {
    while !shared.stopping() {
        let mut notifications = client.notifications();
        let mut iter = notifications.timeout_iter(WAIT_SLICE);
        while let Some(notification) = iter.next()? {
            let channel = notification.channel();
            match shared.entry(channel) {
                Some(entry) if entry.def.lock_notifications => shared.wake_workers(),
                Some(_) => shared.push_broadcast(Broadcast {
                    channel: channel.to_owned(),
                    payload: notification.payload().to_owned(),
                }),
                None => tracing::debug!(channel, "notification for a channel not served"),
            }
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
    }
    Ok(())
}

fn sleep_unless_stopped(shared: &Shared, total: Duration) {
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while waited < total && !shared.stopping() {
        std::thread::sleep(step);
        waited += step;
    }
}
