//! Listener attributes.

use proc_macro2::TokenStream;

pub fn expand_listener(_args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    Ok(item)
}

pub fn expand_post_save_listener(_args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    Ok(item)
}

pub fn expand_post_insert_listener(_args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    Ok(item)
}

pub fn expand_post_update_listener(_args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    Ok(item)
}

pub fn expand_post_delete_listener(_args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    Ok(item)
}

pub fn expand_pre_save_listener(_args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    Ok(item)
}

pub fn expand_pre_insert_listener(_args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    Ok(item)
}

pub fn expand_pre_update_listener(_args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    Ok(item)
}

pub fn expand_pre_delete_listener(_args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    Ok(item)
}

pub fn expand_trigger_listener(_args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    Ok(item)
}
