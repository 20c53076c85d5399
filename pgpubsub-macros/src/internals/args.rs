//! Parsing of `key`, `key = value` attribute arguments.

use proc_macro2::{TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Ident, LitBool, LitStr, Token};

use super::ctxt::Ctxt;
use super::symbol::Symbol;

/// One option that may be given at most once; a second occurrence is an error
/// at that occurrence.
pub struct Attr<'c, T> {
    cx: &'c Ctxt,
    symbol: Symbol,
    value: Option<T>,
}

impl<'c, T> Attr<'c, T> {
    /// An option not given yet.
    pub fn none(cx: &'c Ctxt, symbol: Symbol) -> Self {
        Attr {
            cx,
            symbol,
            value: None,
        }
    }

    /// Records the value given at `key`.
    pub fn set(&mut self, key: &Ident, value: T) {
        if self.value.is_some() {
            self.cx.error_at(
                key.span(),
                format!("duplicate option `{}`; help: give it once", self.symbol),
            );
        } else {
            self.value = Some(value);
        }
    }

    /// The value, if given.
    pub fn get(self) -> Option<T> {
        self.value
    }
}

/// Parses `args` as a comma-separated list of `key` / `key = value` items,
/// calling `each` with every key and the stream positioned right after it.
///
/// `each` consumes the value (if any); an error it returns is recorded and the
/// item is skipped, so later items are still checked. A syntax error between
/// items (a missing comma, a key that is not an identifier) is recorded and
/// ends the parse.
pub fn parse_keys(
    cx: &Ctxt,
    args: TokenStream,
    each: impl FnMut(&Ident, ParseStream) -> syn::Result<()>,
) {
    let parser = |input: ParseStream| {
        parse_keys_from(cx, input, each);
        skip_rest(input);
        Ok(())
    };
    if let Err(err) = parser.parse2(args) {
        cx.syn_error(err);
    }
}

/// Like [`parse_keys`], on a stream (after a leading positional argument).
pub fn parse_keys_from(
    cx: &Ctxt,
    input: ParseStream,
    mut each: impl FnMut(&Ident, ParseStream) -> syn::Result<()>,
) {
    while !input.is_empty() {
        let key = if input.peek(Ident::peek_any) {
            match input.call(Ident::parse_any) {
                Ok(key) => key,
                Err(err) => return cx.syn_error(err),
            }
        } else {
            return cx.syn_error(input.error("expected an option name"));
        };
        if let Err(err) = each(&key, input) {
            cx.syn_error(err);
            skip_item(input);
        }
        if input.is_empty() {
            return;
        }
        if !input.peek(Token![,]) {
            return cx.syn_error(input.error("expected `,` between options"));
        }
        if let Err(err) = input.parse::<Token![,]>() {
            return cx.syn_error(err);
        }
    }
}

/// Skips every remaining token, after an error was recorded for them.
pub fn skip_rest(input: ParseStream) {
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((_, next)) = rest.token_tree() {
            rest = next;
        }
        Ok(((), rest))
    });
}

/// Skips the rest of one item: up to the next top-level comma (commas inside
/// `<...>` belong to the item).
fn skip_item(input: ParseStream) {
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        let mut depth = 0usize;
        let mut previous_dash = false;
        while let Some((tree, next)) = rest.token_tree() {
            if let TokenTree::Punct(punct) = &tree {
                match punct.as_char() {
                    ',' if depth == 0 => break,
                    '<' => depth += 1,
                    '>' if !previous_dash => depth = depth.saturating_sub(1),
                    _ => {}
                }
                previous_dash = punct.as_char() == '-';
            } else {
                previous_dash = false;
            }
            rest = next;
        }
        Ok(((), rest))
    });
}

/// A flag: `key` alone means `true`; `key = true` / `key = false` also work.
pub fn parse_flag(key: &Ident, input: ParseStream) -> syn::Result<bool> {
    if !input.peek(Token![=]) {
        return Ok(true);
    }
    input.parse::<Token![=]>()?;
    let span = input.span();
    match input.parse::<LitBool>() {
        Ok(lit) => Ok(lit.value),
        Err(_) => Err(syn::Error::new(
            span,
            format!("expected `true` or `false`; help: write `{key}` or `{key} = false`"),
        )),
    }
}

/// `= value` after `key`; `example` is a valid value for the help text.
pub fn parse_eq<T: syn::parse::Parse>(
    key: &Ident,
    input: ParseStream,
    expected: &str,
    example: &str,
) -> syn::Result<T> {
    if !input.peek(Token![=]) {
        return Err(syn::Error::new(
            key.span(),
            format!("`{key}` needs a value; help: write `{key} = {example}`"),
        ));
    }
    input.parse::<Token![=]>()?;
    let span = input.span();
    input.parse::<T>().map_err(|_| {
        syn::Error::new(
            span,
            format!("expected {expected}; help: write `{key} = {example}`"),
        )
    })
}

/// A string literal after `key =`.
pub fn parse_str(key: &Ident, input: ParseStream, example: &str) -> syn::Result<LitStr> {
    parse_eq(key, input, "a string literal", example)
}
