//! `#[trigger_channel]` and `#[channel]`.
//!
//! Parse the arguments and the item into [`ChannelArgs`] and [`Target`],
//! validate the channel name, then generate the trait impl and the registry
//! entry.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::{Ident, Item, LitStr, Type};

use crate::internals::args::{parse_eq, parse_flag, parse_keys, parse_str, Attr};
use crate::internals::symbol::{one_of, Symbol, LOCK_NOTIFICATIONS, MODEL, NAME};
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
            Flavor::Trigger => &[MODEL, LOCK_NOTIFICATIONS, NAME],
            Flavor::Message => &[LOCK_NOTIFICATIONS, NAME],
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
}

impl ChannelArgs {
    fn parse(cx: &Ctxt, flavor: Flavor, args: TokenStream) -> ChannelArgs {
        let mut model = Attr::none(cx, MODEL);
        let mut lock = Attr::none(cx, LOCK_NOTIFICATIONS);
        let mut name = Attr::none(cx, NAME);
        parse_keys(cx, args, |key, input| {
            if flavor == Flavor::Trigger && key == MODEL {
                model.set(key, parse_eq::<Type>(key, input, "the model type", "Media")?);
            } else if key == LOCK_NOTIFICATIONS {
                lock.set(key, parse_flag(key, input)?);
            } else if key == NAME {
                name.set(key, parse_str(key, input, "\"media\"")?);
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
        if flavor == Flavor::Trigger && model.is_none() {
            cx.error_at(
                Span::call_site(),
                format!(
                    "missing `model = ...`, the Diesel model whose rows this channel carries; \
                     help: the correct format looks like `{}`",
                    flavor.example()
                ),
            );
        }
        ChannelArgs {
            model,
            lock_notifications: lock.get().unwrap_or(false),
            name: name.get(),
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
                    Flavor::Message => "a struct or an enum deriving serde's `Serialize` and `Deserialize`",
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
        return Some(format!(
            "the channel name `{name}` contains `{}`: a channel name uses only lowercase \
             ASCII letters, digits and `_`, so it is a valid PostgreSQL identifier",
            bad.escape_debug()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some(format!(
            "the channel name `{name}` must start with a lowercase ASCII letter"
        ));
    }
    None
}

/// The channel name, explicit or derived; an invalid one is an error at its source.
fn channel_name(cx: &Ctxt, flavor: Flavor, args: &ChannelArgs, ident: &Ident) -> String {
    match &args.name {
        Some(lit) => {
            let name = lit.value();
            if let Some(problem) = name_problem(&name) {
                cx.error_spanned_by(lit, format!("{problem}; help: e.g. `name = \"media\"`"));
            }
            name
        }
        None => {
            let name = snake_case(&ident.unraw().to_string());
            if let Some(problem) = name_problem(&name) {
                let example = match flavor {
                    Flavor::Trigger => "#[trigger_channel(model = Media, name = \"media\")]",
                    Flavor::Message => "#[channel(name = \"post_reads\")]",
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
    let generated = generate(flavor, &args, &target, &name);
    Ok(quote! {
        #item
        #generated
    })
}

fn generate(flavor: Flavor, args: &ChannelArgs, target: &Target, name: &str) -> TokenStream {
    let ident = target.ident;
    let type_name_str = ident.unraw().to_string();
    let lock = args.lock_notifications;
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
                quote! {
                    ::pgpubsub::__private::ChannelSource::Trigger(
                        ::pgpubsub::__private::trigger_source::<#model>(#model_name)
                    )
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
    quote! {
        const _: () = {
            #trait_impl

            #[::pgpubsub::__private::linkme::distributed_slice(::pgpubsub::__private::CHANNELS)]
            #[linkme(crate = ::pgpubsub::__private::linkme)]
            static CHANNEL: ::pgpubsub::__private::ChannelDef = ::pgpubsub::__private::ChannelDef {
                name: #name,
                type_path: ::core::concat!(::core::module_path!(), "::", #type_name_str),
                app: ::core::env!("CARGO_CRATE_NAME"),
                lock_notifications: #lock,
                source: #source,
            };
        };
    }
}
