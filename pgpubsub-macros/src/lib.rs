//! Implementation detail of `pgpubsub`: the `#[trigger_channel]`, `#[channel]`
//! and listener attributes. Use them through the `pgpubsub` crate, which
//! re-exports them; the generated code refers to `::pgpubsub::__private`.

mod channel;
mod internals;
mod listener;

use proc_macro::TokenStream;

/// Declares a unit struct as the channel carrying the row changes of a Diesel
/// model, recorded by PostgreSQL triggers.
///
/// ```ignore
/// #[pgpubsub::trigger_channel(model = Media, lock_notifications)]
/// pub struct MediaChannel;
/// ```
///
/// Options:
/// - `model = Type` (required): the model, deriving `Identifiable` (it names
///   the table), `Selectable` and `serde::Deserialize`;
/// - `lock_notifications` (or `= true` / `= false`, default `false`): store each
///   notification and run its handlers exactly once across listeners;
/// - `name = "..."`: the channel name, by default the struct's name in snake
///   case (`MediaChannel` → `media_channel`). At most 54 bytes of lowercase
///   ASCII letters, digits and `_`, starting with a letter, so that
///   `pgpubsub_<name>` is a valid PostgreSQL identifier.
#[proc_macro_attribute]
pub fn trigger_channel(args: TokenStream, item: TokenStream) -> TokenStream {
    channel::expand_trigger_channel(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Declares a serde struct or enum as an application message channel, sent
/// with `pgpubsub::notify`.
///
/// ```ignore
/// #[pgpubsub::channel(lock_notifications)]
/// #[derive(serde::Serialize, serde::Deserialize)]
/// pub struct PostReads {
///     pub post_id: i64,
/// }
/// ```
///
/// Options: `lock_notifications` and `name = "..."`, as for
/// [`macro@trigger_channel`].
#[proc_macro_attribute]
pub fn channel(args: TokenStream, item: TokenStream) -> TokenStream {
    channel::expand_channel(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function handling the messages of a [`macro@channel`].
///
/// ```ignore
/// #[pgpubsub::listener(PostReads)]
/// fn count_read(msg: PostReads, conn: &mut PgConnection) -> QueryResult<()> { ... }
/// ```
///
/// Parameters, in any order: the message (any name), optionally a
/// `&mut PgConnection` (inside the transaction that removes the notification)
/// and a `&pgpubsub::Context`. Returns `()` or `Result<(), E>` with `E: Display`.
#[proc_macro_attribute]
pub fn listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run after a row of the channel's model is inserted or updated.
///
/// ```ignore
/// #[pgpubsub::post_save_listener(MediaChannel)]
/// ```
///
/// Row parameters, by name: `old: Option<Model>` (`None` for an insert) and `new: Model`. Also optionally a `&mut PgConnection` and a
/// `&pgpubsub::Context`, in any order. Returns `()` or `Result<(), E>` with
/// `E: Display`.
#[proc_macro_attribute]
pub fn post_save_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_post_save_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run after a row of the channel's model is inserted.
///
/// ```ignore
/// #[pgpubsub::post_insert_listener(MediaChannel)]
/// ```
///
/// Row parameters, by name: `new: Model`. Also optionally a `&mut PgConnection` and a
/// `&pgpubsub::Context`, in any order. Returns `()` or `Result<(), E>` with
/// `E: Display`.
#[proc_macro_attribute]
pub fn post_insert_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_post_insert_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run after a row of the channel's model is updated.
///
/// ```ignore
/// #[pgpubsub::post_update_listener(MediaChannel)]
/// ```
///
/// Row parameters, by name: `old: Model` and `new: Model`. Also optionally a `&mut PgConnection` and a
/// `&pgpubsub::Context`, in any order. Returns `()` or `Result<(), E>` with
/// `E: Display`.
#[proc_macro_attribute]
pub fn post_update_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_post_update_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run after a row of the channel's model is deleted.
///
/// ```ignore
/// #[pgpubsub::post_delete_listener(MediaChannel)]
/// ```
///
/// Row parameters, by name: `old: Model`. Also optionally a `&mut PgConnection` and a
/// `&pgpubsub::Context`, in any order. Returns `()` or `Result<(), E>` with
/// `E: Display`.
#[proc_macro_attribute]
pub fn post_delete_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_post_delete_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run before the `post` handlers of the same event, when a row of the channel's model is inserted or updated.
///
/// ```ignore
/// #[pgpubsub::pre_save_listener(MediaChannel)]
/// ```
///
/// Row parameters, by name: `old: Option<Model>` (`None` for an insert) and `new: Model`. Also optionally a `&mut PgConnection` and a
/// `&pgpubsub::Context`, in any order. Returns `()` or `Result<(), E>` with
/// `E: Display`.
#[proc_macro_attribute]
pub fn pre_save_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_pre_save_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run before the `post` handlers of the same event, when a row of the channel's model is inserted.
///
/// ```ignore
/// #[pgpubsub::pre_insert_listener(MediaChannel)]
/// ```
///
/// Row parameters, by name: `new: Model`. Also optionally a `&mut PgConnection` and a
/// `&pgpubsub::Context`, in any order. Returns `()` or `Result<(), E>` with
/// `E: Display`.
#[proc_macro_attribute]
pub fn pre_insert_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_pre_insert_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run before the `post` handlers of the same event, when a row of the channel's model is updated.
///
/// ```ignore
/// #[pgpubsub::pre_update_listener(MediaChannel)]
/// ```
///
/// Row parameters, by name: `old: Model` and `new: Model`. Also optionally a `&mut PgConnection` and a
/// `&pgpubsub::Context`, in any order. Returns `()` or `Result<(), E>` with
/// `E: Display`.
#[proc_macro_attribute]
pub fn pre_update_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_pre_update_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run before the `post` handlers of the same event, when a row of the channel's model is deleted.
///
/// ```ignore
/// #[pgpubsub::pre_delete_listener(MediaChannel)]
/// ```
///
/// Row parameters, by name: `old: Model`. Also optionally a `&mut PgConnection` and a
/// `&pgpubsub::Context`, in any order. Returns `()` or `Result<(), E>` with
/// `E: Display`.
#[proc_macro_attribute]
pub fn pre_delete_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_pre_delete_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function for chosen row events of a [`macro@trigger_channel`],
/// optionally filtered by a SQL condition the trigger evaluates.
///
/// ```ignore
/// #[pgpubsub::trigger_listener(MediaChannel, insert, update, when = "NEW.size > 0")]
/// fn big_media(old: Option<Media>, new: Media) { ... }
/// ```
///
/// Events: `insert`, `update`, `delete`, `save` (= `insert, update`); at least
/// one. `when = "..."` is a condition on `OLD` / `NEW`. The row parameters
/// follow the events: `old` exists for updates and deletes and is an `Option`
/// when inserts are included; `new` exists for inserts and updates and is an
/// `Option` when deletes are included.
#[proc_macro_attribute]
pub fn trigger_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_trigger_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
