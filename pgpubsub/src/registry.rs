//! The compile-time registry: every channel and handler declared with the
//! attributes lands in a `linkme` distributed slice, read here at run time.

use std::collections::BTreeMap;

use diesel::PgConnection;

use crate::channel::ModelColumn;
use crate::decode::{ClaimedRow, DecodedRow, RowsQuery};
use crate::error::{Error, Result};
use crate::event::Invocation;

/// Row operations a trigger listener can react to, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ops(pub u8);

impl Ops {
    /// No operation.
    pub const NONE: Ops = Ops(0);
    /// `INSERT` of a row.
    pub const INSERT: Ops = Ops(1);
    /// `UPDATE` of a row.
    pub const UPDATE: Ops = Ops(2);
    /// `DELETE` of a row.
    pub const DELETE: Ops = Ops(4);
    /// `INSERT` or `UPDATE`.
    pub const SAVE: Ops = Ops(1 | 2);
    /// Every row operation.
    pub const ALL: Ops = Ops(1 | 2 | 4);

    /// The union of two sets.
    pub const fn union(self, other: Ops) -> Ops {
        Ops(self.0 | other.0)
    }

    /// True when every operation of `other` is in `self`.
    pub const fn contains(self, other: Ops) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// True when the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set's operations as PostgreSQL spells them (`INSERT`, `UPDATE`, `DELETE`).
    pub fn sql_names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.0 & Self::INSERT.0 != 0 {
            names.push("INSERT");
        }
        if self.0 & Self::UPDATE.0 != 0 {
            names.push("UPDATE");
        }
        if self.0 & Self::DELETE.0 != 0 {
            names.push("DELETE");
        }
        names
    }

    /// The operation named by a trigger's `TG_OP`.
    pub fn from_sql_name(name: &str) -> Option<Ops> {
        match name {
            "INSERT" => Some(Self::INSERT),
            "UPDATE" => Some(Self::UPDATE),
            "DELETE" => Some(Self::DELETE),
            _ => None,
        }
    }
}

/// What a channel carries.
#[derive(Debug, Clone, Copy)]
pub enum ChannelSource {
    /// Application messages sent with [`notify`](crate::notify).
    Message,
    /// Row changes of a Diesel table, recorded by a trigger.
    Trigger(TriggerSource),
}

/// Runs a decode query and loads its rows into the channel's model.
pub type DecodeRows = fn(&mut PgConnection, &RowsQuery<'_>) -> diesel::QueryResult<Vec<DecodedRow>>;

/// Claims a batch and loads its decoded rows into the channel's model.
pub type ClaimRows = fn(&mut PgConnection, &RowsQuery<'_>) -> diesel::QueryResult<Vec<ClaimedRow>>;

/// The table behind a trigger channel.
#[derive(Debug, Clone, Copy)]
pub struct TriggerSource {
    /// The model's Rust type name, as written in the attribute (`Media`).
    pub model: &'static str,
    /// The model's table, rendered by Diesel as a quoted SQL name (`"media"`).
    pub table_sql: fn() -> Result<String>,
    /// The SQL columns of the model's `Selectable` expression, in field order.
    pub columns: fn() -> Result<Vec<ModelColumn>>,
    /// Loads decoded rows into the model.
    pub decode: DecodeRows,
    /// Claims and loads decoded rows into the model.
    pub claim: ClaimRows,
    /// The channel's upgrade hook: a SQL expression over `row_json` (jsonb)
    /// and `db_version` (text) giving the row to decode.
    pub upgrade: Option<&'static str>,
}

/// One channel declared with `#[trigger_channel]` or `#[channel]`.
#[derive(Debug, Clone, Copy)]
pub struct ChannelDef {
    /// The channel's name: the LISTEN channel and the `channel` column value.
    pub name: &'static str,
    /// The declaring type's full path (`media_app::channels::MediaChannel`).
    pub type_path: &'static str,
    /// The crate that declared it (the payload's `app`).
    pub app: &'static str,
    /// Stored and claimed exactly once (`true`) or broadcast (`false`).
    pub lock_notifications: bool,
    /// Attempts before a notification is dead (`max_attempts = N`); `None`:
    /// the listener's `max_attempts`.
    pub max_attempts: Option<u32>,
    /// Messages or row changes.
    pub source: ChannelSource,
}

impl ChannelDef {
    /// True for a trigger channel.
    pub fn is_trigger(&self) -> bool {
        matches!(self.source, ChannelSource::Trigger(_))
    }
}

/// Which listener attribute declared a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandlerKind {
    /// `#[listener]` on a message channel.
    Message,
    /// `#[pre_*_listener]`: runs before the `post` handlers of the same event.
    Pre,
    /// `#[post_*_listener]`.
    Post,
    /// `#[trigger_listener]`, optionally with a `when` condition.
    Custom,
}

/// The function the attribute generates around a handler.
pub type HandlerCall = fn(Invocation<'_>) -> std::result::Result<(), crate::event::HandlerError>;

/// One handler declared with a listener attribute.
#[derive(Debug, Clone, Copy)]
pub struct HandlerDef {
    /// The channel's name (the channel type's `NAME`).
    pub channel: &'static str,
    /// The handler function's full path.
    pub name: &'static str,
    /// Which attribute declared it.
    pub kind: HandlerKind,
    /// The row operations it runs for (empty for message handlers).
    pub ops: Ops,
    /// A SQL condition on the row (`NEW.size > 0`), evaluated by the trigger.
    pub when: Option<&'static str>,
    /// True when the handler takes the connection (it may write in the transaction).
    pub uses_conn: bool,
    /// True when the handler takes the `old` row.
    pub takes_old: bool,
    /// True when the handler takes the `new` row.
    pub takes_new: bool,
    /// Decodes the event and calls the handler.
    pub call: HandlerCall,
}

impl HandlerDef {
    /// True when this handler runs for an event of `op` whose trigger matched `when`.
    pub fn accepts(&self, op: Option<Ops>, matched: &[String]) -> bool {
        match (self.kind, op) {
            (HandlerKind::Message, None) => true,
            (HandlerKind::Message, Some(_)) | (_, None) => false,
            (_, Some(op)) => {
                self.ops.contains(op)
                    && match self.when {
                        None => true,
                        Some(cond) => matched.iter().any(|m| m == cond),
                    }
            }
        }
    }
}

#[doc(hidden)]
#[linkme::distributed_slice]
pub static CHANNELS: [ChannelDef];

#[doc(hidden)]
#[linkme::distributed_slice]
pub static HANDLERS: [HandlerDef];

/// A channel with its handlers, ordered pre → post → custom, then by name.
#[derive(Debug, Clone)]
pub struct ChannelEntry {
    /// The channel.
    pub def: ChannelDef,
    /// Its handlers.
    pub handlers: Vec<HandlerDef>,
}

impl ChannelEntry {
    /// The union of the operations its handlers listen to.
    pub fn ops(&self) -> Ops {
        self.handlers
            .iter()
            .fold(Ops::NONE, |acc, handler| acc.union(handler.ops))
    }

    /// True when some handler of this channel takes the connection.
    pub fn uses_conn(&self) -> bool {
        self.handlers.iter().any(|handler| handler.uses_conn)
    }

    /// How many copies of the old and of the new row one notification of
    /// each operation (`INSERT`, `UPDATE`, `DELETE`, in that order) needs:
    /// each handler taking a row gets its own, decoded for it (models need
    /// not be `Clone`), and a row no handler of that operation takes is not
    /// decoded at all.
    pub fn row_copies(&self) -> [(i32, i32); 3] {
        [Ops::INSERT, Ops::UPDATE, Ops::DELETE].map(|op| {
            self.handlers
                .iter()
                .filter(|handler| handler.ops.contains(op))
                .fold((0, 0), |(old, new), handler| {
                    (
                        old + i32::from(handler.takes_old),
                        new + i32::from(handler.takes_new),
                    )
                })
        })
    }
}

/// Every channel and handler linked into this binary, validated.
#[derive(Debug, Clone)]
pub struct Registry {
    channels: BTreeMap<&'static str, ChannelEntry>,
}

impl Registry {
    /// Reads the distributed slices of this binary.
    ///
    /// Fails when two channels share a name or a handler names a channel that
    /// is not registered.
    pub fn load() -> Result<Registry> {
        Registry::from_parts(&CHANNELS, &HANDLERS)
    }

    /// Builds a registry from explicit definitions (the slices, in tests).
    pub fn from_parts(channels: &[ChannelDef], handlers: &[HandlerDef]) -> Result<Registry> {
        let mut map: BTreeMap<&'static str, ChannelEntry> = BTreeMap::new();
        for def in channels {
            if let Some(existing) = map.get(def.name) {
                let (first, second) = if existing.def.type_path <= def.type_path {
                    (existing.def.type_path, def.type_path)
                } else {
                    (def.type_path, existing.def.type_path)
                };
                return Err(Error::DuplicateChannel {
                    name: def.name.to_owned(),
                    first: first.to_owned(),
                    second: second.to_owned(),
                });
            }
            map.insert(
                def.name,
                ChannelEntry {
                    def: *def,
                    handlers: Vec::new(),
                },
            );
        }
        for handler in handlers {
            let entry = map
                .get_mut(handler.channel)
                .ok_or_else(|| Error::UnknownChannel {
                    name: handler.channel.to_owned(),
                    known: Vec::new(),
                })?;
            entry.handlers.push(*handler);
        }
        for entry in map.values_mut() {
            entry
                .handlers
                .sort_by(|a, b| a.kind.cmp(&b.kind).then(a.name.cmp(b.name)));
        }
        Ok(Registry { channels: map })
    }

    /// Every channel, ordered by name.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelEntry> {
        self.channels.values()
    }

    /// The channel called `name`.
    pub fn get(&self, name: &str) -> Option<&ChannelEntry> {
        self.channels.get(name)
    }

    /// The channels called `names`; an unknown name is an error listing the known ones.
    pub fn select<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<&ChannelEntry>> {
        names
            .iter()
            .map(|name| {
                self.get(name.as_ref())
                    .ok_or_else(|| Error::UnknownChannel {
                        name: name.as_ref().to_owned(),
                        known: self.channels.keys().map(|k| (*k).to_owned()).collect(),
                    })
            })
            .collect()
    }
}
