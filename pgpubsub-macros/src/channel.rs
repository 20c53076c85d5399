//! `#[trigger_channel]` and `#[channel]`.
//!
//! Parse the arguments and the item into [`ChannelArgs`] and [`Target`],
//! validate the channel name, then generate the trait impl and the registry
//! entry.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::{Ident, Item, LitStr, Type};

use crate::internals::args::{parse_eq, parse_flag, parse_keys, parse_str, Attr};
use crate::internals::symbol::{
    one_of, Symbol, LOCK_NOTIFICATIONS, MAX_ATTEMPTS, MODEL, NAME, UPGRADE,
};
use crate::internals::{item_head, item_with_errors, type_name, Ctxt};

/// Longest channel name: `pgpubsub_<name>` must fit PostgreSQL's 63-byte identifiers.
pub const MAX_NAME_LEN: usize = 63 - "pgpubsub_".len();

/// Which of the two attributes is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Trigger,
    Message,
}

impl Flavor {
    fn attr(self) -> &'static str {
        match self {
            Flavor::Trigger => "trigger_channel",
            Flavor::Message => "channel",
        }
    }

    fn keys(self) -> &'static [Symbol] {
        match self {
            Flavor::Trigger => &[MODEL, LOCK_NOTIFICATIONS, NAME, UPGRADE, MAX_ATTEMPTS],
            Flavor::Message => &[LOCK_NOTIFICATIONS, NAME, MAX_ATTEMPTS],
        }
    }

    fn example(self) -> &'static str {
        match self {
            Flavor::Trigger => "#[trigger_channel(model = Media, lock_notifications)]",
            Flavor::Message => "#[channel(lock_notifications)]",
        }
    }
}

/// The arguments of either attribute.
struct ChannelArgs {
    model: Option<Type>,
    lock_notifications: bool,
    name: Option<LitStr>,
    upgrade: Option<LitStr>,
    max_attempts: Option<u32>,
}

impl ChannelArgs {
    fn parse(cx: &Ctxt, flavor: Flavor, args: TokenStream) -> ChannelArgs {
        let mut model = Attr::none(cx, MODEL);
        let mut lock = Attr::none(cx, LOCK_NOTIFICATIONS);
        let mut name = Attr::none(cx, NAME);
        let mut upgrade = Attr::none(cx, UPGRADE);
        let mut max_attempts = Attr::none(cx, MAX_ATTEMPTS);
        let mut max_attempts_key: Option<syn::Ident> = None;
        let mut model_given = false;
        parse_keys(cx, args, |key, input| {
            if flavor == Flavor::Trigger && key == MODEL {
                model_given = true;
                model.set(
                    key,
                    parse_eq::<Type>(key, input, "the model type", "Media")?,
                );
            } else if key == LOCK_NOTIFICATIONS {
                lock.set(key, parse_flag(key, input)?);
            } else if key == NAME {
                name.set(key, parse_str(key, input, "\"media\"")?);
            } else if flavor == Flavor::Trigger && key == UPGRADE {
                let lit = parse_str(
                    key,
                    input,
                    "\"CASE WHEN row_json ? 'title' THEN row_json - 'title' || jsonb_build_object('name', row_json -> 'title') ELSE row_json END\"",
                )?;
                if lit.value().trim().is_empty() {
                    cx.error_spanned_by(
                        &lit,
                        "the `upgrade` expression is empty; help: write a SQL expression of \
                         `row_json` (jsonb) and `db_version` (text) that returns the row as jsonb, \
                         or remove `upgrade`",
                    );
                }
                upgrade.set(key, lit);
            } else if key == MAX_ATTEMPTS {
                let lit = parse_eq::<syn::LitInt>(key, input, "a whole number of attempts", "5")?;
                let value = match lit.base10_parse::<u32>() {
                    Ok(value) if value >= 1 && i32::try_from(value).is_ok() => value,
                    _ => {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!(
                                "`max_attempts` must be a whole number from 1 to {}, not `{lit}`; \
                                 help: write `max_attempts = 5`",
                                i32::MAX
                            ),
                        ))
                    }
                };
                max_attempts_key = Some(key.clone());
                max_attempts.set(key, value);
            } else {
                let mut message = format!(
                    "unknown option `{}`, expected one of {}",
                    key.unraw(),
                    one_of(flavor.keys())
                );
                if key == MODEL {
                    message.push_str(
                        "; help: a message channel has no model, for the row changes \
                         of a table use `#[trigger_channel(model = Media)]` on a unit struct",
                    );
                }
                return Err(syn::Error::new(key.span(), message));
            }
            Ok(())
        });
        let model = model.get();
        if flavor == Flavor::Trigger && !model_given {
            cx.error_at(
                Span::call_site(),
                format!(
                    "missing `model = ...`, the Diesel model whose rows this channel carries; \
                     help: the correct format looks like `{}`",
                    flavor.example()
                ),
            );
        }
        let lock_notifications = lock.get().unwrap_or(false);
        let max_attempts = max_attempts.get();
        if let (Some(key), false) = (&max_attempts_key, lock_notifications) {
            cx.error_at(
                key.span(),
                format!(
                    "`max_attempts` needs `lock_notifications`: broadcast notifications run once \
                     on every listener and are never retried; help: write `{}`",
                    match flavor {
                        Flavor::Trigger => "#[trigger_channel(model = Media, lock_notifications, max_attempts = 5)]",
                        Flavor::Message => "#[channel(lock_notifications, max_attempts = 5)]",
                    }
                ),
            );
        }
        ChannelArgs {
            model,
            lock_notifications,
            name: name.get(),
            upgrade: upgrade.get(),
            max_attempts,
        }
    }
}

/// The item the attribute is on.
struct Target<'a> {
    ident: &'a Ident,
}

impl<'a> Target<'a> {
    fn from_item(cx: &Ctxt, flavor: Flavor, item: &'a Item) -> Option<Target<'a>> {
        let (ident, generics) = match (flavor, item) {
            (Flavor::Trigger, Item::Struct(s)) => {
                if !matches!(s.fields, syn::Fields::Unit) {
                    cx.error_spanned_by(
                        &s.fields,
                        format!(
                            "`#[trigger_channel]` goes on a unit struct: the rows it carries \
                             are the model's; help: write `struct {};`",
                            s.ident
                        ),
                    );
                }
                (&s.ident, &s.generics)
            }
            (Flavor::Message, Item::Struct(s)) => (&s.ident, &s.generics),
            (Flavor::Message, Item::Enum(e)) => (&e.ident, &e.generics),
            _ => {
                let what = match flavor {
                    Flavor::Trigger => "a unit struct, e.g. `struct MediaChannel;`",
                    Flavor::Message => {
                        "a struct or an enum deriving serde's `Serialize` and `Deserialize`"
                    }
                };
                cx.error_spanned_by(
                    item_head(item),
                    format!("`#[{}]` goes on {what}", flavor.attr()),
                );
                return None;
            }
        };
        if !generics.params.is_empty() || generics.where_clause.is_some() {
            cx.error_spanned_by(
                generics,
                format!(
                    "a channel cannot be generic: `#[{}]` registers one channel per type; \
                     help: remove the generic parameters",
                    flavor.attr()
                ),
            );
        }
        Some(Target { ident })
    }
}

/// The default channel name: the type's name in snake case (`HTTPLog` → `http_log`).
pub fn snake_case(ident: &str) -> String {
    let chars: Vec<char> = ident.chars().collect();
    let mut out = String::with_capacity(ident.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let previous = i.checked_sub(1).and_then(|j| chars.get(j)).copied();
            let next = chars.get(i + 1).copied();
            let boundary = match previous {
                None | Some('_') => false,
                Some(p) => {
                    p.is_lowercase()
                        || p.is_numeric()
                        || (p.is_uppercase() && next.is_some_and(char::is_lowercase))
                }
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Why `name` cannot be a channel name, if it cannot.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the channel name is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "the channel name `{name}` is {} bytes long, the limit is {MAX_NAME_LEN}: \
             pgpubsub names PostgreSQL objects `pgpubsub_<name>` and PostgreSQL \
             identifiers are limited to 63 bytes",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        let what = if bad.is_uppercase() {
            format!("the uppercase letter `{bad}`")
        } else {
            format!("`{}`", bad.escape_debug())
        };
        return Some(format!(
            "the channel name `{name}` contains {what}: a channel name uses only lowercase \
             ASCII letters, digits and `_`, so it is a valid PostgreSQL identifier"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some(format!(
            "the channel name `{name}` must start with a lowercase ASCII letter"
        ));
    }
    None
}

/// A valid name close to `name`, for the help text.
pub fn suggest_name(name: &str) -> String {
    let mut out = String::new();
    for c in snake_case(name).chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '_'
        };
        if !(c == '_' && (out.is_empty() || out.ends_with('_'))) {
            out.push(c);
        }
    }
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "channel_");
    }
    out.truncate(MAX_NAME_LEN);
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// The channel name, explicit or derived; an invalid one is an error at its source.
fn channel_name(cx: &Ctxt, flavor: Flavor, args: &ChannelArgs, ident: &Ident) -> String {
    match &args.name {
        Some(lit) => {
            let name = lit.value();
            if let Some(problem) = name_problem(&name) {
                cx.error_spanned_by(
                    lit,
                    format!("{problem}; help: e.g. `name = \"{}\"`", suggest_name(&name)),
                );
            }
            name
        }
        None => {
            let name = snake_case(&ident.unraw().to_string());
            if let Some(problem) = name_problem(&name) {
                let suggestion = suggest_name(&name);
                let example = match (flavor, &args.model) {
                    (Flavor::Trigger, Some(model)) => format!(
                        "#[trigger_channel(model = {}, name = \"{suggestion}\")]",
                        type_name(model)
                    ),
                    (Flavor::Trigger, None) => {
                        format!("#[trigger_channel(model = Media, name = \"{suggestion}\")]")
                    }
                    (Flavor::Message, _) => format!("#[channel(name = \"{suggestion}\")]"),
                };
                cx.error_at(
                    ident.span(),
                    format!(
                        "{problem}; the name is derived from the type name `{}`; \
                         help: pass a valid one with `name = \"...\"`, e.g. `{example}`",
                        ident.unraw()
                    ),
                );
            }
            name
        }
    }
}

/// `#[trigger_channel(model = Media, lock_notifications, name = "media")]`.
pub fn expand_trigger_channel(args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    expand(Flavor::Trigger, args, input)
}

/// `#[channel(lock_notifications, name = "post_reads")]`.
pub fn expand_channel(args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    expand(Flavor::Message, args, input)
}

fn expand(flavor: Flavor, args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    let item: Item = syn::parse2(input)?;
    let cx = Ctxt::new();
    let args = ChannelArgs::parse(&cx, flavor, args);
    let target = Target::from_item(&cx, flavor, &item);
    let name = target
        .as_ref()
        .map(|target| channel_name(&cx, flavor, &args, target.ident));
    if let Err(err) = cx.check() {
        return Ok(item_with_errors(&item, err));
    }
    let (Some(target), Some(name)) = (target, name) else {
        // Unreachable: both are `None` only after an error was recorded.
        return Ok(item.into_token_stream());
    };
    let name_span = args
        .name
        .as_ref()
        .map_or_else(|| target.ident.span(), LitStr::span);
    let generated = generate(flavor, &args, &target, &name, name_span);
    Ok(quote! {
        #item
        #generated
    })
}

fn generate(
    flavor: Flavor,
    args: &ChannelArgs,
    target: &Target,
    name: &str,
    name_span: Span,
) -> TokenStream {
    let ident = target.ident;
    // pgpubsub's contract owns its object names; a colliding channel name
    // fails this constant, at the name.
    let name_check = quote_spanned! {name_span=>
        const _: () = ::pgpubsub::__private::assert_channel_name_free(#name);
    };
    let type_name_str = ident.unraw().to_string();
    let lock = args.lock_notifications;
    let max_attempts = match args.max_attempts {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    };
    let (trait_impl, source) = match (flavor, &args.model) {
        (Flavor::Trigger, Some(model)) => {
            let model_name = type_name(model);
            (
                quote! {
                    impl ::pgpubsub::TriggerChannel for #ident {
                        const NAME: &'static str = #name;
                        const LOCK_NOTIFICATIONS: bool = #lock;
                        type Model = #model;
                    }
                },
                {
                    let upgrade = match &args.upgrade {
                        Some(lit) => quote!(::core::option::Option::Some(#lit)),
                        None => quote!(::core::option::Option::None),
                    };
                    quote! {
                        ::pgpubsub::__private::ChannelSource::Trigger(
                            __pgpubsub_source::<#ident>(#model_name, #upgrade)
                        )
                    }
                },
            )
        }
        _ => (
            quote! {
                impl ::pgpubsub::Channel for #ident {
                    const NAME: &'static str = #name;
                    const LOCK_NOTIFICATIONS: bool = #lock;
                }
            },
            quote!(::pgpubsub::__private::ChannelSource::Message),
        ),
    };
    // Reached through the channel rather than the model, so a model that is
    // not a Diesel model is reported once, at `type Model = ...`.
    let source_fn = (flavor == Flavor::Trigger).then(|| {
        quote! {
            const fn __pgpubsub_source<C: ::pgpubsub::TriggerChannel>(
                model: &'static str,
                upgrade: ::core::option::Option<&'static str>,
            ) -> ::pgpubsub::__private::TriggerSource {
                ::pgpubsub::__private::trigger_source::<<C as ::pgpubsub::TriggerChannel>::Model>(model, upgrade)
            }
        }
    });
    quote! {
        const _: () = {
            #name_check

            #trait_impl

            #source_fn

            #[::pgpubsub::__private::linkme::distributed_slice(::pgpubsub::__private::CHANNELS)]
            #[linkme(crate = ::pgpubsub::__private::linkme)]
            static CHANNEL: ::pgpubsub::__private::ChannelDef = ::pgpubsub::__private::ChannelDef {
                name: #name,
                type_path: ::core::concat!(::core::module_path!(), "::", #type_name_str),
                app: ::core::env!("CARGO_CRATE_NAME"),
                lock_notifications: #lock,
                max_attempts: #max_attempts,
                source: #source,
            };
        };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use quote::quote;

    use super::{expand_channel, expand_trigger_channel, name_problem, snake_case, suggest_name};
    use crate::internals::test_util::{error_messages, pretty};

    #[test]
    fn trigger_channel_with_every_option() {
        insta::assert_snapshot!(pretty(expand_trigger_channel(
            quote!(
                model = Media,
                lock_notifications,
                name = "media",
                max_attempts = 5
            ),
            quote!(
                pub struct MediaChannel;
            ),
        )));
    }

    #[test]
    fn trigger_channel_defaults() {
        insta::assert_snapshot!(pretty(expand_trigger_channel(
            quote!(model = crate::models::Media),
            quote!(
                #[doc = "HTTP requests."]
                pub(crate) struct HTTPLog;
            ),
        )));
    }

    #[test]
    fn message_channel_on_an_enum() {
        insta::assert_snapshot!(pretty(expand_channel(
            quote!(lock_notifications = true),
            quote!(
                #[derive(serde::Serialize, serde::Deserialize)]
                enum PostEvent {
                    Read { post_id: i64 },
                    Liked(i64),
                }
            ),
        )));
    }

    #[test]
    fn message_channel_defaults() {
        insta::assert_snapshot!(pretty(expand_channel(
            quote!(),
            quote!(
                struct PostReads {
                    post_id: i64,
                }
            ),
        )));
    }

    #[test]
    fn every_mistake_is_reported_with_the_item() {
        let result = expand_trigger_channel(
            quote!(lock, name = "Media", lock_notifications, lock_notifications),
            quote!(
                struct MediaChannel<T>(T);
            ),
        );
        insta::assert_snapshot!(error_messages(result.clone()));
        // The struct is still emitted, so its uses keep compiling.
        assert!(pretty(result).contains("struct MediaChannel<T>(T);"));
    }

    #[test]
    fn message_channel_rejects_model_and_functions() {
        insta::assert_snapshot!(error_messages(expand_channel(
            quote!(model = Media, name),
            quote!(
                fn post_reads() {}
            ),
        )));
    }

    #[test]
    fn garbage_arguments_are_errors_not_panics() {
        for args in [
            quote!(=),
            quote!(model =),
            quote!(model = , name = 1),
            quote!("media"),
            quote!(model = Vec<u8, u16>, lock, model = Media),
            quote!(name = r"raw_name", lock_notifications = yes),
            quote!(model = Media,,),
        ] {
            let messages = error_messages(expand_trigger_channel(
                args.clone(),
                quote!(
                    struct C;
                ),
            ));
            assert!(!messages.is_empty(), "no error for `{args}`");
        }
    }

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("MediaChannel"), "media_channel");
        assert_eq!(snake_case("HTTPLog"), "http_log");
        assert_eq!(snake_case("Media2Channel"), "media2_channel");
        assert_eq!(snake_case("Media_Channel"), "media_channel");
        assert_eq!(snake_case("media"), "media");
        assert_eq!(snake_case("ABC"), "abc");
    }

    #[test]
    fn channel_name_rules() {
        assert_eq!(name_problem("media"), None);
        assert_eq!(name_problem("a1_b"), None);
        assert_eq!(name_problem(&"a".repeat(54)), None);
        assert!(name_problem(&"a".repeat(55)).unwrap().contains("55 bytes"));
        assert!(name_problem("").unwrap().contains("empty"));
        assert!(name_problem("_media").unwrap().contains("start with"));
        assert!(name_problem("1media").unwrap().contains("start with"));
        assert!(name_problem("Media").unwrap().contains("`M`"));
        assert!(name_problem("media-x").unwrap().contains("`-`"));
    }

    #[test]
    fn suggested_names_are_valid() {
        for name in [
            "Media-Events",
            "post reads",
            "2media",
            "",
            "__",
            "Ünïcode",
            &"x".repeat(80),
        ] {
            let suggestion = suggest_name(name);
            assert_eq!(name_problem(&suggestion), None, "{name:?} → {suggestion:?}");
        }
        assert_eq!(suggest_name("Media-Events"), "media_events");
        assert_eq!(suggest_name("post reads"), "post_reads");
    }
}
