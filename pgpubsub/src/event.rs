//! A notification's payload, as handlers receive it: the operation, the
//! rows decoded for them (see [`crate::decode`]) and the message text.

use std::any::Any;
use std::fmt;

use diesel::PgConnection;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::decode::Side;
use crate::registry::Ops;

/// The fields of a payload the worker reads, as text: the claim query
/// extracts them from stored payloads, and broadcasts are read through
/// [`crate::contract::Payload`].
#[derive(Debug, Default)]
pub(crate) struct RawEvent {
    pub(crate) op: Option<String>,
    pub(crate) matched: Option<Vec<String>>,
    pub(crate) when_malformed: bool,
    pub(crate) has_old: bool,
    pub(crate) has_new: bool,
    pub(crate) message: Option<String>,
}

/// One notification's event, with its decoded rows.
pub struct Event {
    op: Option<Ops>,
    when: Vec<String>,
    message: Option<String>,
    has_old: bool,
    has_new: bool,
    old: Vec<Box<dyn Any>>,
    new: Vec<Box<dyn Any>>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("op", &self.op_name())
            .field("when", &self.when)
            .field("message", &self.message)
            .field("has_old", &self.has_old)
            .field("has_new", &self.has_new)
            .finish_non_exhaustive()
    }
}

impl Event {
    /// Checks a payload's fields for a channel of this kind: a row change
    /// needs a known `op` and the rows that op has, a message needs its
    /// `message`. A malformed payload is an error, never an event that runs
    /// no handler.
    pub(crate) fn validate(raw: RawEvent, trigger: bool) -> Result<Event, HandlerError> {
        let mut event = Event {
            op: None,
            when: raw.matched.unwrap_or_default(),
            message: None,
            has_old: raw.has_old,
            has_new: raw.has_new,
            old: Vec::new(),
            new: Vec::new(),
        };
        if !trigger {
            event.message =
                Some(raw.message.ok_or_else(|| {
                    HandlerError::decode("malformed payload: it has no `message`")
                })?);
            return Ok(event);
        }
        let op_text = raw
            .op
            .ok_or_else(|| HandlerError::decode("malformed payload: it has no `op`"))?;
        let op = Ops::from_sql_name(&op_text).ok_or_else(|| {
            HandlerError::decode(format!(
                "malformed payload: unknown `op` {op_text:?}, expected INSERT, UPDATE or DELETE"
            ))
        })?;
        if raw.when_malformed {
            return Err(HandlerError::decode(
                "malformed payload: `when` is not a list of conditions",
            ));
        }
        let (needs_old, needs_new) = match op {
            Ops::INSERT => (false, true),
            Ops::UPDATE => (true, true),
            _ => (true, false),
        };
        for (needed, present, side) in [
            (needs_old, raw.has_old, Side::Old),
            (needs_new, raw.has_new, Side::New),
        ] {
            if needed && !present {
                return Err(HandlerError::decode(format!(
                    "malformed payload: the {op_text} has no `{}` row (an object)",
                    side.name()
                )));
            }
        }
        event.op = Some(op);
        Ok(event)
    }

    /// The row operation, `None` for messages.
    pub fn ops(&self) -> Option<Ops> {
        self.op
    }

    /// The `when` conditions of custom listeners that held.
    pub fn matched(&self) -> &[String] {
        &self.when
    }

    /// True when the payload carries this row.
    pub(crate) fn has(&self, side: Side) -> bool {
        match side {
            Side::Old => self.has_old,
            Side::New => self.has_new,
        }
    }

    /// Drops the rows handed so far (to decode them again).
    pub(crate) fn clear_rows(&mut self) {
        self.old.clear();
        self.new.clear();
    }

    /// Hands the event one decoded row for a handler.
    pub(crate) fn push_row(&mut self, side: Side, row: Box<dyn Any>) {
        match side {
            Side::Old => self.old.push(row),
            Side::New => self.new.push(row),
        }
    }

    /// The old row; an error when it is missing.
    pub fn old_row<M: 'static>(&mut self) -> Result<M, HandlerError> {
        self.old_row_opt()?.ok_or_else(|| {
            HandlerError::decode(format!("the {} event has no old row", self.op_name()))
        })
    }

    /// The old row, `None` for an insert.
    pub fn old_row_opt<M: 'static>(&mut self) -> Result<Option<M>, HandlerError> {
        self.take(Side::Old)
    }

    /// The new row; an error when it is missing.
    pub fn new_row<M: 'static>(&mut self) -> Result<M, HandlerError> {
        self.new_row_opt()?.ok_or_else(|| {
            HandlerError::decode(format!("the {} event has no new row", self.op_name()))
        })
    }

    /// The new row, `None` for a delete.
    pub fn new_row_opt<M: 'static>(&mut self) -> Result<Option<M>, HandlerError> {
        self.take(Side::New)
    }

    fn take<M: 'static>(&mut self, side: Side) -> Result<Option<M>, HandlerError> {
        if !self.has(side) {
            return Ok(None);
        }
        let rows = match side {
            Side::Old => &mut self.old,
            Side::New => &mut self.new,
        };
        let row = rows.pop().ok_or_else(|| {
            HandlerError::decode(format!(
                "the `{}` row was not decoded: the channel's `upgrade` returned no JSON object for it",
                side.name()
            ))
        })?;
        row.downcast::<M>().map(|row| Some(*row)).map_err(|_| {
            HandlerError::decode(format!(
                "the decoded `{}` row is not a `{}`",
                side.name(),
                std::any::type_name::<M>()
            ))
        })
    }

    /// The application message, deserialized from its JSON text (numbers
    /// arrive exactly as written: no `f64` on the way).
    pub fn message<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        let text = self
            .message
            .as_deref()
            .ok_or_else(|| HandlerError::decode("the notification carries no message"))?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
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

    fn op_name(&self) -> &'static str {
        match self.op {
            Some(Ops::INSERT) => "INSERT",
            Some(Ops::UPDATE) => "UPDATE",
            Some(Ops::DELETE) => "DELETE",
            _ => "message",
        }
    }
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
    /// True when retrying cannot help: the payload does not decode (or is
    /// malformed) with this code. The notification stays stored with its
    /// error instead of being retried.
    pub fn is_permanent(&self) -> bool {
        self.kind == HandlerErrorKind::Decode
    }

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
    /// The event; each handler takes its own decoded rows from it.
    pub event: &'a mut Event,
}

impl<'a> Invocation<'a> {
    /// Bundles the parts of one handler call.
    pub fn new(conn: &'a mut PgConnection, context: &'a Context, event: &'a mut Event) -> Self {
        Invocation {
            conn,
            context,
            event,
        }
    }
}
