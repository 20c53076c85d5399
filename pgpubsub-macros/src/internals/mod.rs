//! Parsing and error reporting shared by the attributes.

pub mod args;
pub mod ctxt;
pub mod symbol;

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::Item;

pub use ctxt::Ctxt;

/// The user's item followed by the errors found in its attribute.
///
/// An attribute consumes its item: emitting it next to the errors keeps
/// every use of it compiling, so the user sees the mistake in the attribute
/// rather than a cascade of "cannot find type" errors.
pub fn item_with_errors<T: ToTokens>(item: &T, err: syn::Error) -> TokenStream {
    let mut tokens = item.to_token_stream();
    tokens.extend(err.into_compile_error());
    tokens
}

/// The tokens that name an item (`enum Foo`, `fn foo`), for an error about the item as a whole.
pub fn item_head(item: &Item) -> TokenStream {
    let (keyword, ident): (&dyn ToTokens, &dyn ToTokens) = match item {
        Item::Enum(i) => (&i.enum_token, &i.ident),
        Item::Fn(i) => (&i.sig.fn_token, &i.sig.ident),
        Item::Union(i) => (&i.union_token, &i.ident),
        Item::Type(i) => (&i.type_token, &i.ident),
        Item::Trait(i) => (&i.trait_token, &i.ident),
        Item::Const(i) => (&i.const_token, &i.ident),
        Item::Static(i) => (&i.static_token, &i.ident),
        Item::Mod(i) => (&i.mod_token, &i.ident),
        Item::Struct(i) => (&i.struct_token, &i.ident),
        Item::Impl(i) => (&i.impl_token, &i.self_ty),
        other => return other.to_token_stream(),
    };
    quote!(#keyword #ident)
}

/// Renders a type as written, without the spaces `TokenStream`'s `Display`
/// puts around punctuation (`crate::models::Media`, `Vec<u8>`).
pub fn type_name<T: ToTokens>(ty: &T) -> String {
    let mut out = String::new();
    let rendered = ty.to_token_stream().to_string();
    for piece in rendered.split(' ') {
        let glue = match (out.chars().last(), piece.chars().next()) {
            (None, _) => false,
            (Some(':' | '<' | '&' | '('), _) => true,
            (_, Some(':' | '<' | '>' | ',' | ')')) => true,
            _ => false,
        };
        if !glue && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::type_name;

    #[test]
    fn renders_types_compactly() {
        assert_eq!(type_name(&quote!(Media)), "Media");
        assert_eq!(
            type_name(&quote!(crate::models::Media)),
            "crate::models::Media"
        );
        assert_eq!(
            type_name(&quote!(::m::Row<'static, u8>)),
            "::m::Row<'static, u8>"
        );
        assert_eq!(
            type_name(&quote!(&mut Vec<(u8, u16)>)),
            "&mut Vec<(u8, u16)>"
        );
    }
}

/// Test helpers: expansions rendered as readable Rust for snapshots.
#[cfg(test)]
pub mod test_util {
    use proc_macro2::TokenStream;

    /// The expansion, formatted; panics (in tests only) if it is not valid Rust.
    pub fn pretty(result: syn::Result<TokenStream>) -> String {
        let tokens = result.unwrap_or_else(syn::Error::into_compile_error);
        match syn::parse2::<syn::File>(tokens.clone()) {
            Ok(file) => prettyplease::unparse(&file),
            Err(err) => panic!("expansion is not valid Rust ({err}): {tokens}"),
        }
    }

    /// The messages of the errors an expansion reports, one a line.
    pub fn error_messages(result: syn::Result<TokenStream>) -> String {
        let tokens = match result {
            Ok(tokens) => tokens,
            Err(err) => err.into_compile_error(),
        };
        let file: syn::File = match syn::parse2(tokens) {
            Ok(file) => file,
            Err(err) => panic!("expansion is not valid Rust: {err}"),
        };
        let mut out = String::new();
        for item in file.items {
            if let syn::Item::Macro(mac) = item {
                if mac
                    .mac
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == "compile_error")
                {
                    if let Ok(lit) = mac.mac.parse_body::<syn::LitStr>() {
                        out.push_str(&lit.value());
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}
