//! A notification's payload, decoded for handlers.

use std::fmt;

use diesel::PgConnection;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::channel::{cached_columns, Model};
use crate::context::Context;
use crate::registry::Ops;

/// The payload of one notification, as the trigger or `notify` wrote it:
/// `{app, model, op, old, new, context, when}` for row changes,
/// `{app, message, context}` for messages.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// The crate that declared the channel.
    #[serde(default)]
    pub app: Option<String>,
    /// The model's Rust type name for row changes.
    #[serde(default)]
    pub model: Option<String>,
    /// The trigger's `TG_OP`: `INSERT`, `UPDATE` or `DELETE`.
    #[serde(default)]
    pub op: Option<String>,
    /// `to_jsonb(OLD)`.
    #[serde(default)]
    pub old: Value,
    /// `to_jsonb(NEW)`.
    #[serde(default)]
    pub new: Value,
    /// The message for application channels.
    #[serde(default)]
    pub message: Value,
    /// The notification context.
    #[serde(default)]
    pub context: Value,
    /// The `when` conditions of custom listeners that matched.
    #[serde(default)]
    pub when: Vec<String>,
}

impl Event {
    /// Parses a payload.
    pub fn from_payload(payload: &Value) -> Result<Event, HandlerError> {
        Event::deserialize(payload).map_err(|err| {
            HandlerError::decode(format!("payload is not a pgpubsub notification: {err}"))
        })
    }

    /// The row operation, `None` for messages.
    pub fn ops(&self) -> Option<Ops> {
        self.op.as_deref().and_then(Ops::from_sql_name)
    }

    /// The old row; an error when it is missing.
    pub fn old_row<M: Model>(&self) -> Result<M, HandlerError> {
        self.old_row_opt()?.ok_or_else(|| {
            HandlerError::decode(format!("the {} event has no old row", self.op_name()))
        })
    }

    /// The old row, `None` for an insert.
    pub fn old_row_opt<M: Model>(&self) -> Result<Option<M>, HandlerError> {
        decode_row(&self.old, "old")
    }

    /// The new row; an error when it is missing.
    pub fn new_row<M: Model>(&self) -> Result<M, HandlerError> {
        self.new_row_opt()?.ok_or_else(|| {
            HandlerError::decode(format!("the {} event has no new row", self.op_name()))
        })
    }

    /// The new row, `None` for a delete.
    pub fn new_row_opt<M: Model>(&self) -> Result<Option<M>, HandlerError> {
        decode_row(&self.new, "new")
    }

    /// The application message.
    pub fn message<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_path_to_error::deserialize(&self.message).map_err(|err| {
            let path = err.path().to_string();
            HandlerError::decode(format!(
                "message does not decode into `{}`: {}{}",
                std::any::type_name::<T>(),
                if path == "." {
                    String::new()
                } else {
                    format!("at `{path}`: ")
                },
                err.into_inner()
            ))
        })
    }

    fn op_name(&self) -> &str {
        self.op.as_deref().unwrap_or("message")
    }
}

fn decode_row<M: Model>(value: &Value, which: &str) -> Result<Option<M>, HandlerError> {
    let object = match value {
        Value::Null => return Ok(None),
        Value::Object(object) => object,
        other => {
            return Err(HandlerError::decode(format!(
                "`{which}` row is not a JSON object: {other}"
            )))
        }
    };
    let columns = cached_columns::<M>().map_err(|err| HandlerError::decode(err.to_string()))?;
    let mut values = Vec::with_capacity(columns.len());
    for column in columns.iter() {
        let value = object.get(column).ok_or_else(|| {
            HandlerError::decode(format!(
                "`{which}` row has no column `{column}` for `{}` (columns in the payload: {})",
                std::any::type_name::<M>(),
                object
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        values.push(value.clone());
    }
    let array = Value::Array(values);
    serde_path_to_error::deserialize(&array)
        .map(Some)
        .map_err(|err| {
            let column = err
                .path()
                .iter()
                .next()
                .and_then(|segment| match segment {
                    serde_path_to_error::Segment::Seq { index } => columns.get(*index),
                    _ => None,
                })
                .map(|column| format!(" at column `{column}`"))
                .unwrap_or_default();
            HandlerError::decode(format!(
                "`{which}` row does not decode into `{}`{column}: {}",
                std::any::type_name::<M>(),
                err.into_inner()
            ))
        })
}

/// Why a handler did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerErrorKind {
    /// The payload did not decode into the handler's parameters.
    Decode,
    /// The handler returned an error.
    Failed,
    /// The handler panicked.
    Panicked,
}

/// A handler failure, recorded on the notification.
#[derive(Debug, Clone)]
pub struct HandlerError {
    /// What kind of failure.
    pub kind: HandlerErrorKind,
    /// The message.
    pub message: String,
}

impl HandlerError {
    /// A payload decoding failure.
    pub fn decode(message: impl Into<String>) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Decode,
            message: message.into(),
        }
    }

    /// An error returned by a handler.
    pub fn failed(message: impl Into<String>) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Failed,
            message: message.into(),
        }
    }

    /// A handler panic.
    pub fn panicked(message: impl Into<String>) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Panicked,
            message: message.into(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            HandlerErrorKind::Decode => write!(f, "decode error: {}", self.message),
            HandlerErrorKind::Failed => write!(f, "{}", self.message),
            HandlerErrorKind::Panicked => write!(f, "panicked: {}", self.message),
        }
    }
}

impl std::error::Error for HandlerError {}

/// What a handler may return: `()` or `Result<(), E>` for any `E: Display`
/// (`anyhow::Error`, `diesel::result::Error`, your own).
#[diagnostic::on_unimplemented(
    message = "a pgpubsub handler must return `()` or `Result<(), E>` where `E: Display`, not `{Self}`",
    label = "unsupported return type"
)]
pub trait IntoHandlerResult {
    /// Converts the handler's return value.
    fn into_handler_result(self) -> Result<(), HandlerError>;
}

impl IntoHandlerResult for () {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: fmt::Display> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        self.map_err(|err| HandlerError::failed(format!("{err:#}")))
    }
}

/// What the worker hands a generated handler wrapper.
#[non_exhaustive]
pub struct Invocation<'a> {
    /// The connection, inside the transaction that removes the notification.
    pub conn: &'a mut PgConnection,
    /// The notification's context and metadata.
    pub context: &'a Context,
    /// The decoded payload.
    pub event: &'a Event,
}

impl<'a> Invocation<'a> {
    /// Bundles the parts of one handler call.
    pub fn new(conn: &'a mut PgConnection, context: &'a Context, event: &'a Event) -> Self {
        Invocation {
            conn,
            context,
            event,
        }
    }
}
