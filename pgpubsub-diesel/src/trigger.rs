//! The trigger function and trigger of one trigger channel.

use std::fmt::Write as _;

use pgpubsub::__private::contract::{comment_text, names, quote_ident, quote_literal, Payload};
use pgpubsub::{ChannelEntry, ColumnKind, Ops};

use crate::error::{Error, Result};

/// The SQL objects of one trigger channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSql {
    /// Creates (or replaces) the function and the trigger.
    pub create: String,
    /// Drops them.
    pub drop: String,
    /// The operations the trigger fires on.
    pub ops: Ops,
}

/// Renders the trigger of `entry`, or `None` when no handler listens to it.
pub fn render(entry: &ChannelEntry) -> Result<Option<TriggerSql>> {
    let pgpubsub::__private::ChannelSource::Trigger(source) = entry.def.source else {
        return Ok(None);
    };
    let ops = entry.ops();
    if ops.is_empty() {
        return Ok(None);
    }
    let table = (source.table_sql)().map_err(|err| Error::Model {
        channel: entry.def.name.to_owned(),
        message: err.to_string(),
    })?;
    let columns = (source.columns)().map_err(|err| Error::Model {
        channel: entry.def.name.to_owned(),
        message: err.to_string(),
    })?;
    let name = names::channel_object(entry.def.name);
    let function = quote_ident(&name);
    let trigger = quote_ident(&name);

    // Ops served by a handler without a condition notify unconditionally.
    let unconditional = entry
        .handlers
        .iter()
        .filter(|handler| handler.when.is_none())
        .fold(Ops::NONE, |acc, handler| acc.union(handler.ops));
    let mut conditions: Vec<(&str, Ops)> = Vec::new();
    for handler in &entry.handlers {
        if let Some(when) = handler.when {
            if when.contains("$pgpubsub$") {
                return Err(Error::Condition {
                    handler: handler.name.to_owned(),
                    message: "it may not contain `$pgpubsub$`".into(),
                });
            }
            match conditions.iter_mut().find(|(cond, _)| *cond == when) {
                Some((_, cond_ops)) => *cond_ops = cond_ops.union(handler.ops),
                None => conditions.push((when, handler.ops)),
            }
        }
    }
    conditions.sort();

    let mut body = String::new();
    let mut declare = String::new();
    if !conditions.is_empty() {
        declare.push_str("DECLARE\n    matched jsonb := '[]';\n");
        for (when, cond_ops) in &conditions {
            let _ = write!(
                body,
                "    IF TG_OP IN ({ops}) THEN\n        IF ({when}) THEN\n            matched := matched || jsonb_build_array({literal}::text);\n        END IF;\n    END IF;\n",
                ops = op_list(*cond_ops),
                literal = quote_literal(when),
            );
        }
        let guard = if unconditional.is_empty() {
            "jsonb_array_length(matched) > 0".to_owned()
        } else {
            format!(
                "TG_OP IN ({}) OR jsonb_array_length(matched) > 0",
                op_list(unconditional)
            )
        };
        let _ = write!(
            body,
            "    IF NOT ({guard}) THEN\n        RETURN NULL;\n    END IF;\n"
        );
    }
    let when_field = if conditions.is_empty() {
        String::new()
    } else {
        format!(",\n        {}, matched", quote_literal(Payload::WHEN))
    };
    // `to_jsonb` normalizes `json` text and turns a JSON `null` into the
    // `null` of SQL NULL: these columns' exact text goes alongside.
    let exact: Vec<&str> = columns
        .iter()
        .filter(|column| column.kind != ColumnKind::Other)
        .map(|column| column.name.as_str())
        .collect();
    let exact_fields = if exact.is_empty() {
        String::new()
    } else {
        let object = |row: &str| {
            exact
                .iter()
                .map(|column| {
                    format!(
                        "{}, {row}.{}::text",
                        quote_literal(column),
                        quote_ident(column)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            ",\n        {old_exact}, CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE jsonb_build_object({old}) END,\n        \
             {new_exact}, CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE jsonb_build_object({new}) END",
            old_exact = quote_literal(Payload::OLD_EXACT),
            new_exact = quote_literal(Payload::NEW_EXACT),
            old = object("OLD"),
            new = object("NEW"),
        )
    };
    // A `json` value need not be valid `jsonb` (`\u0000`, huge numbers),
    // so `to_jsonb` of a row holding one would fail the writer's statement:
    // such columns are blanked in a copy of the row before `to_jsonb` and
    // travel only as their exact text in `*_exact`.
    let json_columns: Vec<&str> = columns
        .iter()
        .filter(|column| matches!(column.kind, ColumnKind::Json | ColumnKind::JsonArray))
        .map(|column| column.name.as_str())
        .collect();
    let (old_row, new_row) = if json_columns.is_empty() {
        ("to_jsonb(OLD)".to_owned(), "to_jsonb(NEW)".to_owned())
    } else {
        if declare.is_empty() {
            declare.push_str("DECLARE\n");
        }
        let _ = write!(
            declare,
            "    v_old {table}%ROWTYPE;\n    v_new {table}%ROWTYPE;\n"
        );
        for (row, skip) in [("OLD", "INSERT"), ("NEW", "DELETE")] {
            let var = if row == "OLD" { "v_old" } else { "v_new" };
            let blanks: String = json_columns
                .iter()
                .map(|column| format!(" {var}.{} := NULL;", quote_ident(column)))
                .collect();
            let _ = writeln!(
                body,
                "    IF TG_OP <> '{skip}' THEN\n        {var} := {row};{blanks}\n    END IF;"
            );
        }
        let keys = json_columns
            .iter()
            .map(|column| quote_literal(column))
            .collect::<Vec<_>>()
            .join(", ");
        (
            format!("CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(v_old) - ARRAY[{keys}]::text[] END"),
            format!("CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(v_new) - ARRAY[{keys}]::text[] END"),
        )
    };
    let _ = write!(
        body,
        "    PERFORM {send}({channel}, {lock}, jsonb_build_object(\n        {app_key}, {app},\n        {model_key}, {model},\n        {op_key}, TG_OP,\n        {old_key}, {old_row},\n        {new_key}, {new_row}{exact_fields}{when_field}));\n    RETURN NULL;\n",
        send = names::NOTIFICATION_SEND_FN,
        channel = quote_literal(entry.def.name),
        lock = entry.def.lock_notifications,
        app_key = quote_literal(Payload::APP),
        app = quote_literal(entry.def.app),
        model_key = quote_literal(Payload::MODEL),
        model = quote_literal(source.model),
        op_key = quote_literal(Payload::OP),
        old_key = quote_literal(Payload::OLD),
        new_key = quote_literal(Payload::NEW),
    );
    // The row's text must not depend on the writer's session: `to_jsonb`
    // writes floats, intervals and the elements of ranges with the session's
    // output settings. Fixed here, the listener reads them back exactly.
    // Only for models with such a column (floats, intervals, ranges, types
    // unknown to pgpubsub): the settings cost the writer a little per row.
    let settings = if columns.iter().all(|column| column.settings_free) {
        ""
    } else {
        "SET DateStyle TO 'ISO, YMD'\n\
         SET IntervalStyle TO 'postgres'\n\
         SET extra_float_digits TO 1\n\
         SET lc_monetary TO 'C'\n"
    };
    let create = format!(
        "-- Channel `{channel}` ({type_path}): {events} on {table_comment}.\n\
         CREATE OR REPLACE FUNCTION {function}() RETURNS trigger\n\
         LANGUAGE plpgsql\n\
         {settings}AS $pgpubsub$\n\
         {declare}BEGIN\n{body}END;\n$pgpubsub$;\n\
         DROP TRIGGER IF EXISTS {trigger} ON {table};\n\
         CREATE TRIGGER {trigger} AFTER {events} ON {table}\n    FOR EACH ROW EXECUTE FUNCTION {function}();\n",
        channel = comment_text(entry.def.name),
        type_path = comment_text(entry.def.type_path),
        table_comment = comment_text(&table),
        events = ops.sql_names().join(" OR "),
    );
    let drop = format!(
        "DROP TRIGGER IF EXISTS {trigger} ON {table};\nDROP FUNCTION IF EXISTS {function}();\n"
    );
    Ok(Some(TriggerSql { create, drop, ops }))
}

fn op_list(ops: Ops) -> String {
    ops.sql_names()
        .iter()
        .map(|name| quote_literal(name))
        .collect::<Vec<_>>()
        .join(", ")
}
