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
/// objects (the channel attributes call it in a `const`, spanned at the
/// name).
pub const fn assert_channel_name_free(name: &str) {
    match crate::contract::names::reserved(name) {
        None => {}
        Some(word) => reserved_name(word),
    }
}

/// The compile error for a channel name starting with reserved `word`
/// (const panics take literal messages only, hence one arm per word).
const fn reserved_name(word: &str) {
    macro_rules! reserved {
        ($($word:literal),*) => {
            $(
                if const_eq(word, $word) {
                    panic!(concat!(
                        "this channel name is reserved: pgpubsub's own objects are named `pgpubsub_",
                        $word,
                        "` and `pgpubsub_",
                        $word,
                        "_*`, and a channel's trigger is `pgpubsub_<name>`; choose another `name = \"...\"`"
                    ));
                }
            )*
        };
    }
    reserved!(
        "notification",
        "context",
        "db_version",
        "row_check",
        "listener",
        "stored"
    );
    panic!("this channel name is reserved by pgpubsub; choose another `name = \"...\"`");
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_reserved_word_has_its_message() {
        // `reserved_name` lists the words by hand: keep it in step.
        let source = include_str!("private.rs");
        for word in crate::contract::names::RESERVED {
            assert!(
                source.contains(&format!("\"{word}\"")),
                "{word} has no message"
            );
        }
    }
}
