//! PostgreSQL as the broker for offline work in Diesel applications.
//!
//! A Diesel model changes (or the application sends a message); a trigger
//! records it in the same transaction; a listener process runs the Rust
//! handlers for it, exactly once where asked, with typed old/new rows.
//!
//! The story, step by step:
//!
//! 1. Declare a channel for a model's row changes, or a message type:
//!
//! ```no_run
//! # use diesel::prelude::*;
//! # diesel::table! { media (id) { id -> BigInt, name -> Text, size -> BigInt } }
//! #[derive(Queryable, Selectable, Identifiable, Debug)]
//! #[diesel(table_name = media)]
//! pub struct Media { pub id: i64, pub name: String, pub size: i64 }
//!
//! #[pgpubsub::trigger_channel(model = Media, lock_notifications)]
//! pub struct MediaChannel;
//!
//! #[pgpubsub::channel(lock_notifications)]
//! #[derive(serde::Serialize, serde::Deserialize)]
//! pub struct PostReads { pub post_id: i64, pub reads: i32 }
//! ```
//!
//! 2. Write handlers; their parameters are picked by name and type:
//!
//! ```no_run
//! # use diesel::prelude::*;
//! # diesel::table! { media (id) { id -> BigInt, name -> Text, size -> BigInt } }
//! # #[derive(Queryable, Selectable, Identifiable, Debug)]
//! # #[diesel(table_name = media)]
//! # pub struct Media { pub id: i64, pub name: String, pub size: i64 }
//! # #[pgpubsub::trigger_channel(model = Media, lock_notifications)]
//! # pub struct MediaChannel;
//! #[pgpubsub::post_save_listener(MediaChannel)]
//! fn scan_media(old: Option<Media>, new: Media) {
//!     match old {
//!         None => println!("Perform virus scan on the new media {new:?}."),
//!         Some(_) => println!("Media updated; scan {new:?} all over again."),
//!     }
//! }
//!
//! #[pgpubsub::post_delete_listener(MediaChannel)]
//! fn forget_media(old: Media, conn: &mut PgConnection) -> QueryResult<()> {
//!     // Runs in the transaction that removes the notification.
//!     diesel::sql_query("SELECT 1").execute(conn).map(drop)
//! }
//! ```
//!
//! 3. Generate the trigger migrations with a two-line binary,
//!    `src/bin/pgpubsub-gen.rs` (see `pgpubsub-diesel`), and apply them with
//!    `diesel migration run` or `embed_migrations!`.
//!
//! 4. Listen, from the application's own binary:
//!
//! ```no_run
//! fn main() -> pgpubsub::Result<()> {
//!     pgpubsub::Listener::new("postgres://localhost/app").workers(4).run()
//! }
//! ```
//!
//! Misuse is a compile error at the mistake:
//!
//! ```compile_fail
//! #[pgpubsub::post_save_listener(NotAChannel)]
//! fn scan(new: i64) {}
//! ```
#![warn(missing_docs)]

extern crate self as pgpubsub;

mod channel;
pub mod cli;
mod config;
mod connection;
mod context;
#[doc(hidden)]
pub mod contract;
pub mod dead;
mod decode;
mod error;
mod event;
mod executor;
mod listener;
mod notifier;
mod notify;
mod registry;
mod retry;
mod shared;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use channel::{Channel, ColumnKind, Model, ModelColumn, TriggerChannel};
pub use config::ListenerConfig;
pub use context::{clear_session_context, set_session_context, with_context, Context};
pub use contract::quote_ident;
pub use error::{Error, Result};
pub use event::{HandlerError, HandlerErrorKind};
pub use listener::{Listener, ListenerHandle, Stopper};
pub use notify::{notify, notify_all};
pub use registry::{ChannelDef, ChannelEntry, HandlerDef, HandlerKind, Ops, Registry};
pub use retry::RetryPolicy;
pub use shared::Stats;

#[doc = include_str!("../docs/channel.md")]
pub use pgpubsub_macros::channel;
#[doc = include_str!("../docs/listener.md")]
pub use pgpubsub_macros::listener;
#[doc = include_str!("../docs/post_delete_listener.md")]
pub use pgpubsub_macros::post_delete_listener;
#[doc = include_str!("../docs/post_insert_listener.md")]
pub use pgpubsub_macros::post_insert_listener;
#[doc = include_str!("../docs/post_save_listener.md")]
pub use pgpubsub_macros::post_save_listener;
#[doc = include_str!("../docs/post_update_listener.md")]
pub use pgpubsub_macros::post_update_listener;
#[doc = include_str!("../docs/pre_delete_listener.md")]
pub use pgpubsub_macros::pre_delete_listener;
#[doc = include_str!("../docs/pre_insert_listener.md")]
pub use pgpubsub_macros::pre_insert_listener;
#[doc = include_str!("../docs/pre_save_listener.md")]
pub use pgpubsub_macros::pre_save_listener;
#[doc = include_str!("../docs/pre_update_listener.md")]
pub use pgpubsub_macros::pre_update_listener;
#[doc = include_str!("../docs/trigger_channel.md")]
pub use pgpubsub_macros::trigger_channel;
#[doc = include_str!("../docs/trigger_listener.md")]
pub use pgpubsub_macros::trigger_listener;
