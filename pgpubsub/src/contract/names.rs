//! Every name pgpubsub gives a PostgreSQL object or setting.
//!
//! A channel's own trigger and function are `pgpubsub_<channel>`, so a
//! channel may not be named after one of pgpubsub's objects: [`reserved`]
//! is checked at compile time by the channel attributes.

/// The prefix of every object pgpubsub creates.
pub const PREFIX: &str = "pgpubsub_";

/// The stored notifications.
pub const NOTIFICATION_TABLE: &str = "pgpubsub_notification";
/// Its claim index (schema steps 0001–0002).
pub const NOTIFICATION_CLAIM_INDEX: &str = "pgpubsub_notification_claim_idx";
/// Its index of live (not dead) notifications, which claims scan (step 0003).
pub const NOTIFICATION_LIVE_INDEX: &str = "pgpubsub_notification_live_idx";
/// The latest applied Diesel migration (a notification's `db_version`).
pub const DB_VERSION_FN: &str = "pgpubsub_db_version";
/// The notification context as jsonb.
pub const CONTEXT_FN: &str = "pgpubsub_context";
/// Writes one notification (triggers and `notify`).
pub const NOTIFICATION_SEND_FN: &str = "pgpubsub_notification_send";
/// Claims a batch of stored notifications (steps 0001–0002; unused since
/// leases).
pub const NOTIFICATION_CLAIM_FN: &str = "pgpubsub_notification_claim";
/// Leased a batch by updating each notification (step 0003; replaced by
/// [`NOTIFICATION_LEASE_TAKE_FN`] in step 0004).
pub const NOTIFICATION_LEASE_FN: &str = "pgpubsub_notification_lease";
/// Locked leased notifications (step 0003; dropped by step 0004, whose
/// lease row the claim query locks instead).
pub const NOTIFICATION_LEASED_FN: &str = "pgpubsub_notification_leased";
/// Leases, one row per leased batch (step 0004).
pub const NOTIFICATION_LEASES_TABLE: &str = "pgpubsub_notification_leases";
/// Its index by channel (step 0004).
pub const NOTIFICATION_LEASES_CHANNEL_INDEX: &str = "pgpubsub_notification_leases_channel_idx";
/// Leased a batch of stored notifications in one lease row (step 0004;
/// unused since step 0005).
pub const NOTIFICATION_LEASE_TAKE_FN: &str = "pgpubsub_notification_lease_take";
/// Ended a settled lease and took the next (step 0004; unused since step
/// 0005).
pub const NOTIFICATION_LEASE_NEXT_FN: &str = "pgpubsub_notification_lease_next";
/// Ends a settled lease (when given one), reaps the channel's leases that
/// ran out (when asked), and leases the next batch in one lease row,
/// returned as one row of arrays (step 0005).
pub const NOTIFICATION_LEASE_BATCH_FN: &str = "pgpubsub_notification_lease_batch";
/// Running listeners and their heartbeats.
pub const LISTENER_TABLE: &str = "pgpubsub_listener";
/// Names the columns of a payload row the table's types reject.
pub const ROW_CHECK_FN: &str = "pgpubsub_row_check";

/// The setting holding the notification context (JSON text).
pub const CONTEXT_SETTING: &str = "pgpubsub.context";
/// The transaction-local cache of `pgpubsub_db_version()`.
pub const DB_VERSION_SETTING: &str = "pgpubsub.db_version";

/// The suffixes after [`PREFIX`] that pgpubsub's own objects use, and the
/// ones kept for its future objects. A channel name equal to one of them, or
/// starting with one followed by `_`, would collide.
pub const RESERVED: &[&str] = &[
    "notification",
    "context",
    "db_version",
    "row_check",
    "listener",
    "stored",
];

/// The trigger and trigger function of channel `channel`.
pub fn channel_object(channel: &str) -> String {
    format!("{PREFIX}{channel}")
}

/// The reserved word `name` collides with, if any.
///
/// A `const fn`, so the channel attributes check it while compiling:
/// `notification`, `notification_send`, `context`, … are rejected.
pub const fn reserved(name: &str) -> Option<&'static str> {
    let mut i = 0;
    while i < RESERVED.len() {
        let word = RESERVED[i];
        if starts_with_word(name.as_bytes(), word.as_bytes()) {
            return Some(word);
        }
        i += 1;
    }
    None
}

/// True when `name` is `word` or starts with `word` followed by `_`.
const fn starts_with_word(name: &[u8], word: &[u8]) -> bool {
    if name.len() < word.len() {
        return false;
    }
    let mut i = 0;
    while i < word.len() {
        if name[i] != word[i] {
            return false;
        }
        i += 1;
    }
    name.len() == word.len() || name[word.len()] == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_words_and_their_extensions_collide() {
        assert_eq!(reserved("context"), Some("context"));
        assert_eq!(reserved("db_version"), Some("db_version"));
        assert_eq!(reserved("notification_send"), Some("notification"));
        assert_eq!(reserved("notification"), Some("notification"));
        assert_eq!(reserved("notifications"), None);
        assert_eq!(reserved("media"), None);
        assert_eq!(reserved("contexts"), None);
    }

    #[test]
    fn every_object_name_is_covered_by_a_reserved_word() {
        for object in [
            NOTIFICATION_TABLE,
            NOTIFICATION_CLAIM_INDEX,
            DB_VERSION_FN,
            CONTEXT_FN,
            NOTIFICATION_SEND_FN,
            NOTIFICATION_CLAIM_FN,
            NOTIFICATION_LEASE_FN,
            NOTIFICATION_LEASED_FN,
            NOTIFICATION_LEASES_TABLE,
            NOTIFICATION_LEASES_CHANNEL_INDEX,
            NOTIFICATION_LEASE_TAKE_FN,
            NOTIFICATION_LEASE_NEXT_FN,
            NOTIFICATION_LIVE_INDEX,
            LISTENER_TABLE,
            ROW_CHECK_FN,
        ] {
            let suffix = object.strip_prefix(PREFIX).unwrap_or(object);
            assert!(reserved(suffix).is_some(), "{object} is not reserved");
        }
    }

    #[test]
    fn schema_steps_only_create_reserved_names() {
        for step in crate::contract::STEPS {
            for word in step
                .up
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            {
                if let Some(suffix) = word.strip_prefix(PREFIX) {
                    assert!(
                        reserved(suffix).is_some(),
                        "{} uses `{word}`, which is not reserved",
                        step.key
                    );
                }
            }
        }
    }
}
