//! Implementation detail of `pgpubsub`: the `#[trigger_channel]`, `#[channel]`
//! and listener attributes. Use them through the `pgpubsub` crate, which
//! re-exports them; the generated code refers to `::pgpubsub::__private`.

mod channel;
mod internals;
mod listener;

use proc_macro::TokenStream;

// Documented at its re-export, `pgpubsub::trigger_channel`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn trigger_channel(args: TokenStream, item: TokenStream) -> TokenStream {
    channel::expand_trigger_channel(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

// Documented at its re-export, `pgpubsub::channel`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn channel(args: TokenStream, item: TokenStream) -> TokenStream {
    channel::expand_channel(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

// Documented at its re-export, `pgpubsub::listener`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

// Documented at its re-export, `pgpubsub::post_save_listener`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn post_save_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_post_save_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

// Documented at its re-export, `pgpubsub::post_insert_listener`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn post_insert_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_post_insert_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

// Documented at its re-export, `pgpubsub::post_update_listener`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn post_update_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_post_update_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

// Documented at its re-export, `pgpubsub::post_delete_listener`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn post_delete_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_post_delete_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

// Documented at its re-export, `pgpubsub::pre_save_listener`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn pre_save_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_pre_save_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

// Documented at its re-export, `pgpubsub::pre_insert_listener`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn pre_insert_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_pre_insert_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

// Documented at its re-export, `pgpubsub::pre_update_listener`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn pre_update_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_pre_update_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

// Documented at its re-export, `pgpubsub::pre_delete_listener`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn pre_delete_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_pre_delete_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

// Documented at its re-export, `pgpubsub::trigger_listener`.
#[allow(missing_docs)]
#[proc_macro_attribute]
pub fn trigger_listener(args: TokenStream, item: TokenStream) -> TokenStream {
    listener::expand_trigger_listener(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
