//! Helpers for testing your handlers (feature `testing`).
//!
//! A handler is an ordinary function: call it from a test with the rows or
//! the message it takes, and with a [`Context`] built here when it reads
//! one.
//!
//! ```
//! use pgpubsub::testing::ContextBuilder;
//! use serde_json::json;
//!
//! fn audit_line(ctx: &pgpubsub::Context) -> String {
//!     let request = ctx.get("request_id").and_then(|v| v.as_str()).unwrap_or("-");
//!     format!("{} attempt {} request {request}", ctx.channel(), ctx.attempt())
//! }
//!
//! let ctx = ContextBuilder::new("media_channel")
//!     .data(json!({"request_id": "r-1"}))
//!     .attempt(2)
//!     .build();
//! assert_eq!(audit_line(&ctx), "media_channel attempt 2 request r-1");
//! ```

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{Channel, Context, TriggerChannel};

/// Builds the [`Context`] a handler would receive, for tests.
///
/// Defaults: no context data (an empty object), the first attempt, and no
/// notification id, creation time or database version.
#[derive(Debug, Clone)]
#[must_use = "call `build` to get the Context"]
pub struct ContextBuilder {
    context: Context,
}

impl ContextBuilder {
    /// A context for a notification of the channel named `channel`.
    pub fn new(channel: impl Into<String>) -> Self {
        ContextBuilder {
            context: Context {
                channel: channel.into(),
                data: Value::Object(serde_json::Map::new()),
                notification_id: None,
                created_at: None,
                db_version: None,
                attempt: 1,
            },
        }
    }

    /// A context for a notification of message channel `C`.
    pub fn for_channel<C: Channel>() -> Self {
        Self::new(C::NAME)
    }

    /// A context for a notification of trigger channel `C`.
    pub fn for_trigger_channel<C: TriggerChannel>() -> Self {
        Self::new(C::NAME)
    }

    /// The context JSON, as `with_context` would have set it.
    pub fn data(mut self, data: Value) -> Self {
        self.context.data = data;
        self
    }

    /// The stored notification's id (lockable channels have one).
    pub fn notification_id(mut self, id: i64) -> Self {
        self.context.notification_id = Some(id);
        self
    }

    /// When the notification was written.
    pub fn created_at(mut self, at: DateTime<Utc>) -> Self {
        self.context.created_at = Some(at);
        self
    }

    /// The latest applied Diesel migration when it was written.
    pub fn db_version(mut self, version: impl Into<String>) -> Self {
        self.context.db_version = Some(version.into());
        self
    }

    /// Which attempt this is, from 1 (a retry is 2 or more).
    pub fn attempt(mut self, attempt: i32) -> Self {
        self.context.attempt = attempt;
        self
    }

    /// The context.
    pub fn build(self) -> Context {
        self.context
    }
}

#[cfg(test)]
mod tests {
    use super::ContextBuilder;

    #[test]
    fn a_built_context_reads_back_what_was_set() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let ctx = ContextBuilder::new("orders")
            .data(serde_json::json!({"tenant": 7}))
            .notification_id(42)
            .created_at(at)
            .db_version("2026-01-01-000000")
            .attempt(3)
            .build();
        assert_eq!(ctx.channel(), "orders");
        assert_eq!(ctx.get("tenant"), Some(&serde_json::json!(7)));
        assert_eq!(ctx.notification_id(), Some(42));
        assert_eq!(ctx.created_at(), Some(at));
        assert_eq!(ctx.db_version(), Some("2026-01-01-000000"));
        assert_eq!(ctx.attempt(), 3);
    }

    #[test]
    fn defaults_are_a_first_attempt_with_no_data() {
        let ctx = ContextBuilder::new("orders").build();
        assert_eq!(ctx.data(), &serde_json::json!({}));
        assert_eq!(ctx.attempt(), 1);
        assert_eq!(ctx.notification_id(), None);
        assert_eq!(ctx.created_at(), None);
        assert_eq!(ctx.db_version(), None);
    }
}
