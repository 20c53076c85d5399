//! Implementation detail of `pgpubsub`: the `#[trigger_channel]`, `#[channel]`
//! and listener attributes. Use them through the `pgpubsub` crate, which
//! re-exports them; the generated code refers to `::pgpubsub::__private`.

mod channel;
mod internals;
mod listener;

use proc_macro::TokenStream;

/// Declares a unit struct as the channel carrying the rows of a Diesel model,
/// fed by PostgreSQL triggers: `#[trigger_channel(model = Media, lock_notifications)]`.
#[proc_macro_attribute]
pub fn trigger_channel(args: TokenStream, item: TokenStream) -> TokenStream {
    channel::expand_trigger_channel(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Declares a serde struct or enum as an application message channel:
/// `#[channel(lock_notifications, name = "post_reads")]`.
#[proc_macro_attribute]
pub fn channel(args: TokenStream, item: TokenStream) -> TokenStream {
    channel::expand_channel(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function handling the messages of a `#[channel]`: `#[listener(PostReads)]`.
#[proc_macro_attribute]
pub fn listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run after a row of the channel's model is inserted or updated.
#[proc_macro_attribute]
pub fn post_save_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_post_save_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run after a row of the channel's model is inserted.
#[proc_macro_attribute]
pub fn post_insert_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_post_insert_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run after a row of the channel's model is updated.
#[proc_macro_attribute]
pub fn post_update_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_post_update_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run after a row of the channel's model is deleted.
#[proc_macro_attribute]
pub fn post_delete_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_post_delete_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run before a row of the channel's model is inserted or updated.
#[proc_macro_attribute]
pub fn pre_save_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_pre_save_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run before a row of the channel's model is inserted.
#[proc_macro_attribute]
pub fn pre_insert_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_pre_insert_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run before a row of the channel's model is updated.
#[proc_macro_attribute]
pub fn pre_update_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_pre_update_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function run before a row of the channel's model is deleted.
#[proc_macro_attribute]
pub fn pre_delete_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_pre_delete_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Registers a function for a custom set of events and an optional SQL
/// condition: `#[trigger_listener(MediaChannel, insert, update, when = "NEW.size > 0")]`.
#[proc_macro_attribute]
pub fn trigger_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_trigger_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
