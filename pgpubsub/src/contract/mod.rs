//! The database contract: every name pgpubsub gives a PostgreSQL object or
//! setting, its schema steps, the payload layout, and the queries the runtime
//! sends. `pgpubsub-diesel` turns this into migrations; nothing else spells a
//! `pgpubsub_` name.

pub mod names;
pub mod payload;
pub mod queries;
pub mod schema;

pub use payload::Payload;
pub use schema::{SchemaStep, STEPS};

/// Quotes a PostgreSQL identifier: `media` → `"media"`, `a"b` → `"a""b"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal (`'it''s'`). Only for generated SQL that cannot take
/// bind parameters (DDL, the text of a prepared query); the value is a name
/// or a key from code, never data read at run time. Assumes
/// `standard_conforming_strings = on`, PostgreSQL's default since 9.1 (with
/// it off, a backslash in the value would be an escape).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `text` made safe for a `--` comment line: control characters (a newline
/// would end the comment and start SQL) are written as escapes.
pub fn comment_text(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers_and_literals() {
        assert_eq!(quote_ident("media"), "\"media\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn comment_text_cannot_end_the_comment() {
        let text = comment_text("\"media\nDROP TABLE x; --\"\r");
        assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
        assert!(text.contains("\\n"), "{text}");
    }
}
