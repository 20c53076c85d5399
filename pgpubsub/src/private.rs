//! Support for the code the attributes generate. Not a public API: it changes
//! without notice.

pub use diesel;
pub use linkme;
pub use serde;
pub use serde_json;

pub use crate::contract;
pub use crate::event::{Event, HandlerError, IntoHandlerResult, Invocation};
pub use crate::registry::{
    ChannelDef, ChannelSource, HandlerDef, HandlerKind, Ops, TriggerSource, CHANNELS, HANDLERS,
};

use crate::channel::Model;

/// The `TriggerSource` of a model, for `#[trigger_channel]`.
pub const fn trigger_source<M: Model>(
    model: &'static str,
    upgrade: Option<&'static str>,
) -> TriggerSource {
    TriggerSource {
        model,
        table_sql: M::table_sql,
        columns: M::columns,
        decode: M::decode_rows,
        claim: M::claim_rows,
        upgrade,
    }
}

/// Fails compilation when `name` collides with one of pgpubsub's own
/// objects (the channel attributes call it in a `const`).
pub const fn assert_channel_name_free(name: &str) {
    if crate::contract::names::reserved(name).is_some() {
        panic!(
            "this channel name is reserved: pgpubsub names its own objects `pgpubsub_notification*`, \
             `pgpubsub_context`, `pgpubsub_db_version`, `pgpubsub_row_check*`, `pgpubsub_listener*` and \
             `pgpubsub_stored*`, and a channel's trigger is `pgpubsub_<name>`; choose another `name = \"...\"`"
        );
    }
}

/// Turns a handler's return value into the handler result; the generated
/// wrapper routes every handler's return value through here so an
/// unsupported return type is reported at the handler.
pub fn into_handler_result<R: IntoHandlerResult>(
    value: R,
) -> std::result::Result<(), HandlerError> {
    value.into_handler_result()
}

/// Asserts at compile time that `T` is a message channel.
pub const fn assert_channel<T: crate::Channel>() {}

/// Asserts at compile time that `T` is a trigger channel.
pub const fn assert_trigger_channel<T: crate::TriggerChannel>() {}
