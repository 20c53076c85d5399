//! The keys the attributes accept, named once.

use std::fmt;

use proc_macro2::Ident;

/// An attribute key or event name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Symbol(&'static str);

/// `model = Type` of `#[trigger_channel]`.
pub const MODEL: Symbol = Symbol("model");
/// `lock_notifications` of the channel attributes.
pub const LOCK_NOTIFICATIONS: Symbol = Symbol("lock_notifications");
/// `name = "..."` of the channel attributes.
pub const NAME: Symbol = Symbol("name");
/// `upgrade = "..."` of `#[trigger_channel]`: rewrites old payload rows.
pub const UPGRADE: Symbol = Symbol("upgrade");
/// `max_attempts = N` of the channel attributes: attempts before dead.
pub const MAX_ATTEMPTS: Symbol = Symbol("max_attempts");
/// `when = "..."` of `#[trigger_listener]`.
pub const WHEN: Symbol = Symbol("when");
/// The `insert` event of `#[trigger_listener]`.
pub const INSERT: Symbol = Symbol("insert");
/// The `update` event of `#[trigger_listener]`.
pub const UPDATE: Symbol = Symbol("update");
/// The `delete` event of `#[trigger_listener]`.
pub const DELETE: Symbol = Symbol("delete");
/// The `save` event (`insert` + `update`) of `#[trigger_listener]`.
pub const SAVE: Symbol = Symbol("save");
/// The `old` row parameter of trigger listeners.
pub const OLD: Symbol = Symbol("old");
/// The `new` row parameter of trigger listeners.
pub const NEW: Symbol = Symbol("new");

impl Symbol {
    /// The key as written.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl PartialEq<Symbol> for Ident {
    fn eq(&self, word: &Symbol) -> bool {
        self == word.0
    }
}

impl PartialEq<Symbol> for &Ident {
    fn eq(&self, word: &Symbol) -> bool {
        *self == word.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.0)
    }
}

/// "`a`, `b` or `c`" for an error message.
pub fn one_of(symbols: &[Symbol]) -> String {
    let quoted: Vec<String> = symbols.iter().map(|s| format!("`{s}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{}, {last}", rest.join(", ")),
    }
}
