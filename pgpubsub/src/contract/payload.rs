//! The payload every notification carries, as one typed struct: the trigger
//! renderer takes its keys from here, `notify` serializes it, and the
//! listener reads it.
//!
//! Row changes: `{app, model, op, old, new, old_exact, new_exact, when,
//! context}`, where `old`/`new` are `to_jsonb(OLD)`/`to_jsonb(NEW)` and
//! `old_exact`/`new_exact` hold the text of `json`/`jsonb` columns (which
//! `to_jsonb` would normalize, and whose JSON `null` it would confuse with
//! SQL `NULL`). Messages: `{app, message, context}`.
//!
//! Values stay raw JSON text ([`RawValue`]) until they are decoded: row
//! columns by PostgreSQL's own input functions, messages by serde straight
//! into the message type, so no number passes through `f64` on the way.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One notification's payload. Every field is optional when reading, so a
/// malformed payload is reported by what it lacks, not by a parse error.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Payload<'a> {
    /// The crate that declared the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The model's Rust type name (row changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `TG_OP`: `INSERT`, `UPDATE` or `DELETE` (row changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// `to_jsonb(OLD)`.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub old: Option<&'a RawValue>,
    /// `to_jsonb(NEW)`.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub new: Option<&'a RawValue>,
    /// The exact text of OLD's `json`/`jsonb` columns.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub old_exact: Option<&'a RawValue>,
    /// The exact text of NEW's `json`/`jsonb` columns.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub new_exact: Option<&'a RawValue>,
    /// The application message (messages). A JSON `null` is a message (a
    /// unit struct's), kept as `Some("null")`; only a missing key is `None`.
    #[serde(
        default,
        borrow,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<&'a RawValue>,
    /// The `when` conditions of custom listeners that held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Vec<String>>,
    /// The notification context (added by `pgpubsub_notification_send`).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub context: Option<&'a RawValue>,
    /// When a broadcast was written (`now()` of the writing transaction;
    /// stored notifications keep it in their row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The schema version a broadcast was written at (stored notifications
    /// keep it in their row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_version: Option<String>,
    /// A broadcast payload too large for `NOTIFY`: the id of its stored row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgpubsub_stored: Option<i64>,
}

/// Reads a present value as `Some`, even a JSON `null`.
fn present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

impl Payload<'_> {
    /// Key of [`Payload::app`].
    pub const APP: &'static str = "app";
    /// Key of [`Payload::model`].
    pub const MODEL: &'static str = "model";
    /// Key of [`Payload::op`].
    pub const OP: &'static str = "op";
    /// Key of [`Payload::old`].
    pub const OLD: &'static str = "old";
    /// Key of [`Payload::new`].
    pub const NEW: &'static str = "new";
    /// Key of [`Payload::old_exact`].
    pub const OLD_EXACT: &'static str = "old_exact";
    /// Key of [`Payload::new_exact`].
    pub const NEW_EXACT: &'static str = "new_exact";
    /// Key of [`Payload::message`].
    pub const MESSAGE: &'static str = "message";
    /// Key of [`Payload::when`].
    pub const WHEN: &'static str = "when";
    /// Key of [`Payload::context`].
    pub const CONTEXT: &'static str = "context";
    /// Key of [`Payload::created_at`].
    pub const CREATED_AT: &'static str = "created_at";
    /// Key of [`Payload::db_version`].
    pub const DB_VERSION: &'static str = "db_version";
    /// Key of [`Payload::pgpubsub_stored`].
    pub const STORED: &'static str = "pgpubsub_stored";

    /// Every key, in the struct's order.
    pub const KEYS: &'static [&'static str] = &[
        Self::APP,
        Self::MODEL,
        Self::OP,
        Self::OLD,
        Self::NEW,
        Self::OLD_EXACT,
        Self::NEW_EXACT,
        Self::MESSAGE,
        Self::WHEN,
        Self::CONTEXT,
        Self::CREATED_AT,
        Self::DB_VERSION,
        Self::STORED,
    ];
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn key_constants_are_the_serialized_keys() {
        let raw = RawValue::from_string("{}".to_owned()).unwrap();
        let payload = Payload {
            app: Some("a".into()),
            model: Some("M".into()),
            op: Some("INSERT".into()),
            old: Some(&raw),
            new: Some(&raw),
            old_exact: Some(&raw),
            new_exact: Some(&raw),
            message: Some(&raw),
            when: Some(vec![]),
            context: Some(&raw),
            created_at: Some("2024-01-01T00:00:00+00:00".into()),
            db_version: Some("1".into()),
            pgpubsub_stored: Some(1),
        };
        let value: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&payload).unwrap()).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = Payload::KEYS.to_vec();
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn a_null_message_is_a_message() {
        let payload: Payload = serde_json::from_str(r#"{"message": null}"#).unwrap();
        assert_eq!(payload.message.map(RawValue::get), Some("null"));
        let payload: Payload = serde_json::from_str(r#"{"app": "x"}"#).unwrap();
        assert!(payload.message.is_none());
    }

    #[test]
    fn values_stay_raw() {
        let text = r#"{"op":"UPDATE","new":{"n":123456789012345678901234567.891},"message":1e400}"#;
        let payload: Payload = serde_json::from_str(text).unwrap();
        assert_eq!(
            payload.new.unwrap().get(),
            r#"{"n":123456789012345678901234567.891}"#
        );
        assert_eq!(payload.message.unwrap().get(), "1e400");
        assert!(payload.old.is_none());
    }
}
