//! The listener attributes: `#[listener]`, `#[{pre,post}_{save,insert,update,delete}_listener]`
//! and `#[trigger_listener]`.
//!
//! Parse the arguments into [`ListenerArgs`] and the function into
//! [`Handler`] (validating each parameter against the events), then generate
//! the wrapper that decodes an event and calls the function, and its registry
//! entry.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, Item, ItemFn, LitStr, Pat, Path, ReturnType, Signature, Token, Type};

use crate::internals::args::{parse_keys_from, parse_str, skip_rest};
use crate::internals::symbol::{one_of, Symbol, DELETE, INSERT, NEW, OLD, SAVE, UPDATE, WHEN};
use crate::internals::{item_head, item_with_errors, type_name, Ctxt};

/// A set of row operations, as `pgpubsub::Ops` encodes it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Ops(u8);

impl Ops {
    const NONE: Ops = Ops(0);
    const INSERT: Ops = Ops(1);
    const UPDATE: Ops = Ops(2);
    const DELETE: Ops = Ops(4);
    const SAVE: Ops = Ops(1 | 2);

    fn has(self, other: Ops) -> bool {
        self.0 & other.0 != 0
    }

    /// "insert", "update and delete", ... for a message.
    fn describe(self) -> String {
        let names: Vec<&str> = [
            (Ops::INSERT, "insert"),
            (Ops::UPDATE, "update"),
            (Ops::DELETE, "delete"),
        ]
        .into_iter()
        .filter(|(op, _)| self.has(*op))
        .map(|(_, name)| name)
        .collect();
        match names.split_last() {
            None => String::new(),
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        }
    }
}

/// `HandlerKind` of the runtime.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Message,
    Pre,
    Post,
    Custom,
}

/// One of the listener attributes.
#[derive(Clone, Copy, Debug)]
struct Attribute {
    name: &'static str,
    kind: Kind,
    /// Fixed by the attribute; `trigger_listener` takes them from its arguments.
    ops: Ops,
}

const LISTENER: Attribute = Attribute {
    name: "listener",
    kind: Kind::Message,
    ops: Ops::NONE,
};
const TRIGGER_LISTENER: Attribute = Attribute {
    name: "trigger_listener",
    kind: Kind::Custom,
    ops: Ops::NONE,
};

const EVENTS: &[Symbol] = &[INSERT, UPDATE, DELETE, SAVE];

fn event_ops(key: &Ident) -> Option<Ops> {
    [
        (INSERT, Ops::INSERT),
        (UPDATE, Ops::UPDATE),
        (DELETE, Ops::DELETE),
        (SAVE, Ops::SAVE),
    ]
    .into_iter()
    .find(|(symbol, _)| key == symbol)
    .map(|(_, ops)| ops)
}

/// The arguments: the channel, and for `trigger_listener` the events and `when`.
struct ListenerArgs {
    channel: Option<Path>,
    ops: Ops,
    when: Option<LitStr>,
}

impl ListenerArgs {
    fn parse(cx: &Ctxt, attr: Attribute, args: TokenStream) -> ListenerArgs {
        let mut parsed = ListenerArgs {
            channel: None,
            ops: attr.ops,
            when: None,
        };
        let parser = |input: ParseStream| {
            parsed.parse_stream(cx, attr, input);
            skip_rest(input);
            Ok(())
        };
        if let Err(err) = parser.parse2(args) {
            cx.syn_error(err);
        }
        parsed
    }

    fn parse_stream(&mut self, cx: &Ctxt, attr: Attribute, input: ParseStream) {
        let example = example(attr);
        if input.is_empty() {
            return cx.error_at(
                Span::call_site(),
                format!("missing the channel; help: the correct format looks like `{example}`"),
            );
        }
        match input.call(Path::parse_mod_style) {
            Ok(path) => self.channel = Some(path),
            Err(_) => {
                return cx.error_at(
                    input.span(),
                    format!(
                        "expected the channel type as the first argument; help: the correct \
                         format looks like `{example}`"
                    ),
                );
            }
        }
        if input.is_empty() {
            if attr.kind == Kind::Custom {
                cx.error_at(
                    Span::call_site(),
                    format!(
                        "`trigger_listener` needs at least one event among {}; help: the \
                         correct format looks like `{example}`",
                        one_of(EVENTS)
                    ),
                );
            }
            return;
        }
        if let Err(err) = input.parse::<Token![,]>() {
            return cx.syn_error(err);
        }
        if attr.kind != Kind::Custom {
            if !input.is_empty() {
                let help = match attr.kind {
                    Kind::Message => "; help: the correct format looks like `#[listener(PostReads)]`, \
                                      options such as `lock_notifications` go on the channel"
                        .to_owned(),
                    _ => "; help: for other events or a `when` condition use \
                          `#[trigger_listener(MediaChannel, insert, update, when = \"NEW.size > 0\")]`"
                        .to_owned(),
                };
                cx.error_at(
                    input.span(),
                    format!("`{}` takes only the channel{help}", attr.name),
                );
            }
            return;
        }
        let mut events: Vec<(Ident, Ops)> = Vec::new();
        let mut attempted = false;
        let mut when = None;
        parse_keys_from(cx, input, |key, input| {
            if let Some(ops) = event_ops(key) {
                if input.peek(Token![=]) {
                    attempted = true;
                    return Err(syn::Error::new(
                        key.span(),
                        format!("the event `{key}` takes no value; help: write `{key}`"),
                    ));
                }
                match events.iter().find(|(_, seen)| seen.has(ops)) {
                    Some((seen, _)) if seen == key => cx.error_at(
                        key.span(),
                        format!("duplicate event `{key}`; help: give it once"),
                    ),
                    Some((seen, _)) => cx.error_at(
                        key.span(),
                        format!(
                            "`{key}` overlaps `{seen}` (`save` is `insert` and `update`); \
                             help: give each event once"
                        ),
                    ),
                    None => events.push((key.clone(), ops)),
                }
            } else if key == WHEN {
                let lit = parse_str(key, input, "\"NEW.size > 0\"")?;
                if when.is_some() {
                    cx.error_at(key.span(), "duplicate option `when`; help: give it once, combine conditions with `AND`");
                } else {
                    when = Some(lit);
                }
            } else {
                attempted = true;
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown event `{}`, expected one of {}, or `when = \"...\"`",
                        key.unraw(),
                        one_of(EVENTS)
                    ),
                ));
            }
            Ok(())
        });
        self.ops = events
            .iter()
            .fold(Ops::NONE, |acc, (_, ops)| Ops(acc.0 | ops.0));
        if self.ops == Ops::NONE && !attempted {
            cx.error_at(
                Span::call_site(),
                format!(
                    "`trigger_listener` needs at least one event among {}; help: the correct \
                     format looks like `{example}`",
                    one_of(EVENTS)
                ),
            );
        }
        if let Some(lit) = &when {
            if lit.value().trim().is_empty() {
                cx.error_spanned_by(
                    lit,
                    "the `when` condition is empty; help: write a SQL condition on `OLD` and \
                     `NEW`, e.g. `when = \"NEW.size > 0\"`, or remove `when`",
                );
            }
        }
        self.when = when;
    }
}

fn example(attr: Attribute) -> String {
    match attr.kind {
        Kind::Message => "#[listener(PostReads)]".to_owned(),
        Kind::Custom => {
            "#[trigger_listener(MediaChannel, insert, update, when = \"NEW.size > 0\")]".to_owned()
        }
        Kind::Pre | Kind::Post => format!("#[{}(MediaChannel)]", attr.name),
    }
}

/// What a parameter receives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `&mut PgConnection`.
    Conn,
    /// `&pgpubsub::Context`.
    Context,
    /// The message of a message channel.
    Message,
    /// The old row; `Option` when the events include inserts.
    Old { optional: bool },
    /// The new row; `Option` when the events include deletes.
    New { optional: bool },
}

struct Param<'a> {
    role: Role,
    ty: &'a Type,
}

/// The validated function.
struct Handler<'a> {
    func: &'a ItemFn,
    params: Vec<Param<'a>>,
}

/// Where the rules of a trigger listener come from, for messages.
fn describe(attr: Attribute, ops: Ops) -> String {
    if attr.kind == Kind::Custom {
        format!("`trigger_listener` on {}", ops.describe())
    } else {
        format!("`{}`", attr.name)
    }
}

/// `T` of `Option<T>`, syntactically.
fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = strip(ty) else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match (args.args.len(), args.args.first()) {
        (1, Some(syn::GenericArgument::Type(inner))) => Some(inner),
        _ => None,
    }
}

/// The type without invisible groups and parentheses.
fn strip(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => strip(&group.elem),
        Type::Paren(paren) => strip(&paren.elem),
        other => other,
    }
}

/// The spans of the first and last tokens of `tokens` (`fallback` if empty).
fn span_ends<T: ToTokens>(tokens: &T, fallback: Span) -> (Span, Span) {
    let mut iter = tokens.to_token_stream().into_iter();
    let first = iter.next().map_or(fallback, |tree| tree.span());
    let last = iter.last().map_or(first, |tree| tree.span());
    (first, last)
}

/// The span of a signature's head and parameters: `fn name(...)`.
fn signature_tokens(sig: &Signature) -> TokenStream {
    let fn_token = &sig.fn_token;
    let ident = &sig.ident;
    let mut group =
        proc_macro2::Group::new(proc_macro2::Delimiter::Parenthesis, TokenStream::new());
    group.set_span(sig.paren_token.span.join());
    quote!(#fn_token #ident #group)
}

impl<'a> Handler<'a> {
    fn from_fn(cx: &Ctxt, attr: Attribute, args: &ListenerArgs, func: &'a ItemFn) -> Handler<'a> {
        let sig = &func.sig;
        let name = attr.name;
        if let Some(token) = &sig.asyncness {
            cx.error_spanned_by(
                token,
                format!(
                    "a `{name}` cannot be `async`: handlers run inside the worker's database \
                     transaction, synchronously; help: remove `async`"
                ),
            );
        }
        if let Some(token) = &sig.unsafety {
            cx.error_spanned_by(
                token,
                format!("a `{name}` cannot be `unsafe`: pgpubsub calls it from safe code; help: remove `unsafe`"),
            );
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            cx.error_spanned_by(
                &sig.generics,
                format!(
                    "a `{name}` cannot be generic: pgpubsub registers one concrete function; \
                     help: remove the generic parameters"
                ),
            );
        }
        if let Some(variadic) = &sig.variadic {
            cx.error_spanned_by(
                variadic,
                format!("a `{name}` cannot be variadic; help: remove `...`"),
            );
        }

        let ops = args.ops;
        let what = describe(attr, ops);
        let mut params = Vec::new();
        let mut seen_conn = false;
        let mut seen_context = false;
        let mut seen_message = false;
        let mut seen_old = false;
        let mut seen_new = false;
        for input in &sig.inputs {
            let typed = match input {
                FnArg::Receiver(receiver) => {
                    cx.error_spanned_by(
                        receiver,
                        format!(
                            "a `{name}` is a free function, not a method; help: move it out of \
                             the `impl` block and take what it needs as parameters"
                        ),
                    );
                    continue;
                }
                FnArg::Typed(typed) => typed,
            };
            let ident = match &*typed.pat {
                Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => &pat.ident,
                pat => {
                    cx.error_spanned_by(
                        pat,
                        format!(
                            "a `{name}` parameter is a plain name, e.g. `new: Media`; help: \
                             destructure inside the function"
                        ),
                    );
                    continue;
                }
            };
            let ty = &*typed.ty;
            let role = match strip(ty) {
                Type::Reference(reference) if reference.mutability.is_some() => {
                    if seen_conn {
                        cx.error_spanned_by(
                            typed,
                            "duplicate connection parameter: a handler takes at most one \
                             `&mut PgConnection`; help: remove this one",
                        );
                        continue;
                    }
                    seen_conn = true;
                    Role::Conn
                }
                Type::Reference(_) => {
                    if seen_context {
                        cx.error_spanned_by(
                            typed,
                            "duplicate context parameter: a handler takes at most one \
                             `&pgpubsub::Context`; help: remove this one",
                        );
                        continue;
                    }
                    seen_context = true;
                    Role::Context
                }
                _ if attr.kind == Kind::Message => {
                    if seen_message {
                        cx.error_spanned_by(
                            typed,
                            format!(
                                "a `listener` takes one message, `{}` would be a second one; \
                                 help: a listener takes the message, a `&mut PgConnection` \
                                 and a `&pgpubsub::Context`",
                                ident.unraw()
                            ),
                        );
                        continue;
                    }
                    seen_message = true;
                    Role::Message
                }
                _ if ident.unraw() == OLD || ident.unraw() == NEW => {
                    let is_old = ident.unraw() == OLD;
                    let seen = if is_old { &mut seen_old } else { &mut seen_new };
                    if *seen {
                        cx.error_spanned_by(
                            ident,
                            format!(
                                "duplicate parameter `{}`; help: remove this one",
                                ident.unraw()
                            ),
                        );
                        continue;
                    }
                    *seen = true;
                    match check_row(cx, &what, ops, is_old, ident, ty) {
                        Some(role) => role,
                        None => continue,
                    }
                }
                _ => {
                    cx.error_spanned_by(
                        ident,
                        format!(
                            "unknown parameter `{}`: a trigger listener takes `old`, `new`, a \
                             `&mut PgConnection` and a `&pgpubsub::Context`",
                            ident.unraw()
                        ),
                    );
                    continue;
                }
            };
            params.push(Param { role, ty });
        }
        if attr.kind == Kind::Message && !seen_message {
            let channel = args
                .channel
                .as_ref()
                .map_or_else(|| "PostReads".to_owned(), type_name);
            cx.error_spanned_by(
                signature_tokens(sig),
                format!("a `listener` takes the message as a parameter, e.g. `msg: {channel}`"),
            );
        }
        Handler { func, params }
    }
}

/// Checks an `old` / `new` parameter against the events; its role if valid.
fn check_row(
    cx: &Ctxt,
    what: &str,
    ops: Ops,
    is_old: bool,
    ident: &Ident,
    ty: &Type,
) -> Option<Role> {
    let (row, exists, optional, missing_when, always) = if is_old {
        (
            OLD,
            ops.has(Ops(Ops::UPDATE.0 | Ops::DELETE.0)),
            ops.has(Ops::INSERT),
            "an insert has none",
            Ops(ops.0 & (Ops::UPDATE.0 | Ops::DELETE.0)),
        )
    } else {
        (
            NEW,
            ops.has(Ops::SAVE),
            ops.has(Ops::DELETE),
            "a delete has none",
            Ops(ops.0 & Ops::SAVE.0),
        )
    };
    if ops == Ops::NONE {
        // No valid event was given, an error already says so.
        return Some(if is_old {
            Role::Old { optional }
        } else {
            Role::New { optional }
        });
    }
    if !exists {
        cx.error_spanned_by(
            ident,
            format!("{what} has no `{row}` row: {missing_when}; help: remove this parameter"),
        );
        return None;
    }
    match (optional, option_inner(ty)) {
        (true, None) => {
            cx.error_spanned_by(
                ty,
                format!(
                    "`{row}` is `Option<_>` for {what}: {} {row} row; help: write `{row}: Option<{}>`",
                    if is_old { "an insert has no" } else { "a delete has no" },
                    type_name(ty)
                ),
            );
            None
        }
        (false, Some(inner)) => {
            cx.error_spanned_by(
                ty,
                format!(
                    "`{row}` is not an `Option` for {what}: every {} has {} {row} row; help: write `{row}: {}`",
                    always.describe(),
                    if is_old { "an" } else { "a" },
                    type_name(inner)
                ),
            );
            None
        }
        _ if is_old => Some(Role::Old { optional }),
        _ => Some(Role::New { optional }),
    }
}

fn generate(
    attr: Attribute,
    args: &ListenerArgs,
    channel: &Path,
    handler: &Handler,
) -> TokenStream {
    let func = handler.func;
    let fn_ident = &func.sig.ident;
    let fn_name = fn_ident.unraw().to_string();
    let channel_span = channel.span();
    let channel_trait = match attr.kind {
        Kind::Message => quote!(::pgpubsub::Channel),
        _ => quote!(::pgpubsub::TriggerChannel),
    };
    let model = quote_spanned!(channel_span=> <#channel as ::pgpubsub::TriggerChannel>::Model);
    let mut lets = Vec::new();
    let mut call_args = Vec::new();
    // Each generated expression starts with a token spanned at the first token
    // of the user's type and ends with one spanned at its last token, so a
    // type error is reported over the whole parameter or return type.
    for (index, param) in handler.params.iter().enumerate() {
        let ty = param.ty;
        let (first, last) = span_ends(ty, ty.span());
        let arg = format_ident!("__arg{}", index);
        let decode = match param.role {
            Role::Conn => {
                let reborrow = quote_spanned!(first=> &mut *);
                let conn = quote_spanned!(last=> __pgpubsub_conn);
                call_args.push(quote!(#reborrow #conn));
                continue;
            }
            Role::Context => {
                let reborrow = quote_spanned!(first=> &*);
                let context = quote_spanned!(last=> __pgpubsub_context);
                call_args.push(quote!(#reborrow #context));
                continue;
            }
            Role::Message => quote_spanned! {first=>
                __pgpubsub_message::<#channel>(__pgpubsub_event)
            },
            Role::Old { optional: false } => {
                quote_spanned!(first=> __pgpubsub_event.old_row::<#model>())
            }
            Role::Old { optional: true } => {
                quote_spanned!(first=> __pgpubsub_event.old_row_opt::<#model>())
            }
            Role::New { optional: false } => {
                quote_spanned!(first=> __pgpubsub_event.new_row::<#model>())
            }
            Role::New { optional: true } => {
                quote_spanned!(first=> __pgpubsub_event.new_row_opt::<#model>())
            }
        };
        let question = quote_spanned!(last=> ?);
        lets.push(quote!(let #arg: #ty = #decode #question;));
        call_args.push(arg.into_token_stream());
    }
    let (first, last) = match &func.sig.output {
        ReturnType::Type(_, ty) => span_ends(ty, ty.span()),
        ReturnType::Default => (fn_ident.span(), fn_ident.span()),
    };
    let identity = quote_spanned!(first=> ::core::convert::identity);
    let mut result_arg = proc_macro2::Group::new(
        proc_macro2::Delimiter::Parenthesis,
        quote!(__pgpubsub_result),
    );
    result_arg.set_span(last);
    let call = quote! {
        let __pgpubsub_result = #fn_ident(#(#call_args),*);
        ::pgpubsub::__private::into_handler_result(#identity #result_arg)
    };
    // Decoding through a function bounded by `Channel` reports a non-channel
    // once, as "not a pgpubsub message channel", rather than as a missing
    // `Deserialize`.
    let message_decoder = (attr.kind == Kind::Message).then(|| {
        quote! {
            fn __pgpubsub_message<C: ::pgpubsub::Channel>(
                event: &::pgpubsub::__private::Event,
            ) -> ::core::result::Result<C, ::pgpubsub::__private::HandlerError> {
                event.message::<C>()
            }
        }
    });
    let kind = match attr.kind {
        Kind::Message => quote!(Message),
        Kind::Pre => quote!(Pre),
        Kind::Post => quote!(Post),
        Kind::Custom => quote!(Custom),
    };
    let ops = Literal::u8_unsuffixed(args.ops.0);
    let when = match &args.when {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    let uses_conn = handler.params.iter().any(|param| param.role == Role::Conn);
    let takes_old = handler
        .params
        .iter()
        .any(|param| matches!(param.role, Role::Old { .. }));
    let takes_new = handler
        .params
        .iter()
        .any(|param| matches!(param.role, Role::New { .. }));
    let channel_name = quote_spanned!(channel_span=> <#channel as #channel_trait>::NAME);
    quote! {
        const _: () = {
            #message_decoder

            #[allow(unused_variables)]
            fn __pgpubsub_call(
                __pgpubsub_inv: ::pgpubsub::__private::Invocation<'_>,
            ) -> ::core::result::Result<(), ::pgpubsub::__private::HandlerError> {
                // Prefixed names: the user's function may be called `event`.
                let ::pgpubsub::__private::Invocation {
                    conn: __pgpubsub_conn,
                    context: __pgpubsub_context,
                    event: __pgpubsub_event,
                    ..
                } = __pgpubsub_inv;
                #(#lets)*
                #call
            }

            #[::pgpubsub::__private::linkme::distributed_slice(::pgpubsub::__private::HANDLERS)]
            #[linkme(crate = ::pgpubsub::__private::linkme)]
            static HANDLER: ::pgpubsub::__private::HandlerDef = ::pgpubsub::__private::HandlerDef {
                channel: #channel_name,
                name: ::core::concat!(::core::module_path!(), "::", #fn_name),
                kind: ::pgpubsub::__private::HandlerKind::#kind,
                ops: ::pgpubsub::__private::Ops(#ops),
                when: #when,
                uses_conn: #uses_conn,
                takes_old: #takes_old,
                takes_new: #takes_new,
                call: __pgpubsub_call,
            };
        };
    }
}

fn expand(attr: Attribute, args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    let item: Item = syn::parse2(input)?;
    let cx = Ctxt::new();
    let args = ListenerArgs::parse(&cx, attr, args);
    let handler = match &item {
        Item::Fn(func) => Some(Handler::from_fn(&cx, attr, &args, func)),
        other => {
            cx.error_spanned_by(
                item_head(other),
                format!(
                    "`#[{}]` goes on a free function; help: the correct format looks like `{}`",
                    attr.name,
                    example_fn(attr)
                ),
            );
            None
        }
    };
    if let Err(err) = cx.check() {
        return Ok(item_with_errors(&item, err));
    }
    let (Some(handler), Some(channel)) = (handler, &args.channel) else {
        // Unreachable: both are `None` only after an error was recorded.
        return Ok(item.into_token_stream());
    };
    let generated = generate(attr, &args, channel, &handler);
    Ok(quote! {
        #item
        #generated
    })
}

fn example_fn(attr: Attribute) -> String {
    let params = match attr.kind {
        Kind::Message => "msg: PostReads",
        _ => "new: Media",
    };
    format!("{} fn handle({params}) {{ ... }}", example(attr))
}

/// `#[listener(PostReads)]`.
pub fn expand_listener(args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    expand(LISTENER, args, input)
}

/// `#[trigger_listener(MediaChannel, insert, update, when = "NEW.size > 0")]`.
pub fn expand_trigger_listener(args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    expand(TRIGGER_LISTENER, args, input)
}

/// `#[pre_save_listener(MediaChannel)]`.
pub fn expand_pre_save_listener(args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    expand(
        Attribute {
            name: "pre_save_listener",
            kind: Kind::Pre,
            ops: Ops::SAVE,
        },
        args,
        input,
    )
}

/// `#[pre_insert_listener(MediaChannel)]`.
pub fn expand_pre_insert_listener(
    args: TokenStream,
    input: TokenStream,
) -> syn::Result<TokenStream> {
    expand(
        Attribute {
            name: "pre_insert_listener",
            kind: Kind::Pre,
            ops: Ops::INSERT,
        },
        args,
        input,
    )
}

/// `#[pre_update_listener(MediaChannel)]`.
pub fn expand_pre_update_listener(
    args: TokenStream,
    input: TokenStream,
) -> syn::Result<TokenStream> {
    expand(
        Attribute {
            name: "pre_update_listener",
            kind: Kind::Pre,
            ops: Ops::UPDATE,
        },
        args,
        input,
    )
}

/// `#[pre_delete_listener(MediaChannel)]`.
pub fn expand_pre_delete_listener(
    args: TokenStream,
    input: TokenStream,
) -> syn::Result<TokenStream> {
    expand(
        Attribute {
            name: "pre_delete_listener",
            kind: Kind::Pre,
            ops: Ops::DELETE,
        },
        args,
        input,
    )
}

/// `#[post_save_listener(MediaChannel)]`.
pub fn expand_post_save_listener(
    args: TokenStream,
    input: TokenStream,
) -> syn::Result<TokenStream> {
    expand(
        Attribute {
            name: "post_save_listener",
            kind: Kind::Post,
            ops: Ops::SAVE,
        },
        args,
        input,
    )
}

/// `#[post_insert_listener(MediaChannel)]`.
pub fn expand_post_insert_listener(
    args: TokenStream,
    input: TokenStream,
) -> syn::Result<TokenStream> {
    expand(
        Attribute {
            name: "post_insert_listener",
            kind: Kind::Post,
            ops: Ops::INSERT,
        },
        args,
        input,
    )
}

/// `#[post_update_listener(MediaChannel)]`.
pub fn expand_post_update_listener(
    args: TokenStream,
    input: TokenStream,
) -> syn::Result<TokenStream> {
    expand(
        Attribute {
            name: "post_update_listener",
            kind: Kind::Post,
            ops: Ops::UPDATE,
        },
        args,
        input,
    )
}

/// `#[post_delete_listener(MediaChannel)]`.
pub fn expand_post_delete_listener(
    args: TokenStream,
    input: TokenStream,
) -> syn::Result<TokenStream> {
    expand(
        Attribute {
            name: "post_delete_listener",
            kind: Kind::Post,
            ops: Ops::DELETE,
        },
        args,
        input,
    )
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::{
        expand_listener, expand_post_delete_listener, expand_post_insert_listener,
        expand_post_save_listener, expand_post_update_listener, expand_pre_delete_listener,
        expand_pre_insert_listener, expand_pre_save_listener, expand_pre_update_listener,
        expand_trigger_listener,
    };
    use crate::internals::test_util::{error_messages, pretty};

    #[test]
    fn post_save_listener_with_every_parameter() {
        insta::assert_snapshot!(pretty(expand_post_save_listener(
            quote!(MediaChannel),
            quote!(
                pub fn scan_media(
                    context: &pgpubsub::Context,
                    old: Option<Media>,
                    conn: &mut PgConnection,
                    new: Media,
                ) -> Result<(), diesel::result::Error> {
                    Ok(())
                }
            ),
        )));
    }

    #[test]
    fn message_listener() {
        insta::assert_snapshot!(pretty(expand_listener(
            quote!(crate::channels::PostReads),
            quote!(
                fn count_read(msg: PostReads, conn: &mut PgConnection) {}
            ),
        )));
    }

    #[test]
    fn trigger_listener_with_when() {
        insta::assert_snapshot!(pretty(expand_trigger_listener(
            quote!(MediaChannel, update, delete, when = "OLD.size <> 0"),
            quote!(
                fn shrink(old: Media, new: Option<Media>) {}
            ),
        )));
    }

    #[test]
    fn pre_delete_listener_without_parameters() {
        insta::assert_snapshot!(pretty(expand_pre_delete_listener(
            quote!(MediaChannel),
            quote!(
                fn forget() {}
            ),
        )));
    }

    #[test]
    fn row_parameters_follow_the_events() {
        type Expand = fn(
            proc_macro2::TokenStream,
            proc_macro2::TokenStream,
        ) -> syn::Result<proc_macro2::TokenStream>;
        // (attribute, a valid signature's parameters)
        let cases: [(Expand, proc_macro2::TokenStream); 8] = [
            (expand_post_insert_listener, quote!(new: M)),
            (expand_post_update_listener, quote!(old: M, new: M)),
            (expand_post_delete_listener, quote!(old: M)),
            (expand_post_save_listener, quote!(old: Option<M>, new: M)),
            (expand_pre_insert_listener, quote!(new: M)),
            (expand_pre_update_listener, quote!(old: M, new: M)),
            (expand_pre_delete_listener, quote!(old: M)),
            (expand_pre_save_listener, quote!(old: Option<M>, new: M)),
        ];
        for (expand, params) in cases {
            let result = expand(quote!(C), quote!(fn f(#params) {}));
            assert_eq!(error_messages(result), "", "{params}");
        }
    }

    #[test]
    fn trigger_listener_rows() {
        let ok = [
            (quote!(C, insert), quote!(new: M)),
            (quote!(C, delete), quote!(old: M)),
            (quote!(C, save), quote!(old: Option<M>, new: M)),
            (
                quote!(C, insert, delete),
                quote!(old: Option<M>, new: Option<M>),
            ),
            (quote!(C, update, delete), quote!(old: M, new: Option<M>)),
            (
                quote!(C, save, delete),
                quote!(old: Option<M>, new: Option<M>),
            ),
        ];
        for (args, params) in ok {
            let result = expand_trigger_listener(args.clone(), quote!(fn f(#params) {}));
            assert_eq!(error_messages(result), "", "{args} / {params}");
        }
    }

    #[test]
    fn trigger_listener_mistakes() {
        insta::assert_snapshot!(error_messages(expand_trigger_listener(
            quote!(
                MediaChannel,
                insert,
                upsert,
                insert,
                save,
                when = "",
                when = "x"
            ),
            quote!(
                async fn f<T>(
                    &self,
                    old: Media,
                    new: Option<Media>,
                    (a, b): (u8, u8),
                    other: Media,
                ) {
                }
            ),
        )));
    }

    #[test]
    fn listener_mistakes() {
        insta::assert_snapshot!(error_messages(expand_listener(
            quote!(PostReads, insert),
            quote!(
                unsafe fn f(a: &mut C, b: &mut C, c: &Ctx, d: &Ctx) {}
            ),
        )));
    }

    #[test]
    fn variadic_is_rejected() {
        let result = expand_post_insert_listener(
            quote!(MediaChannel),
            quote!(
                unsafe extern "C" fn f(new: Media, ...) {}
            ),
        );
        assert!(error_messages(result).contains("cannot be variadic"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for args in [
            quote!(),
            quote!("x"),
            quote!(C,,),
            quote!(C insert),
            quote!(C, when),
        ] {
            let result = expand_trigger_listener(
                args.clone(),
                quote!(
                    fn f() {}
                ),
            );
            assert!(!error_messages(result).is_empty(), "no error for `{args}`");
        }
        assert!(expand_post_save_listener(quote!(C), quote!(not rust at all)).is_err());
        let on_struct = expand_post_save_listener(
            quote!(C),
            quote!(
                struct S;
            ),
        );
        assert!(!error_messages(on_struct).is_empty());
    }
}
