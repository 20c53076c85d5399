//! The trigger function and trigger of one trigger channel.

use std::fmt::Write as _;

use pgpubsub::{quote_ident, ChannelEntry, Ops};

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

/// A SQL string literal (`'it''s'`); the value is generated, never user data
/// at run time, and DDL takes no bind parameters.
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
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
    let name = format!("pgpubsub_{}", entry.def.name);
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
        ""
    } else {
        ",\n        'when', matched"
    };
    let _ = write!(
        body,
        "    PERFORM pgpubsub_notification_send({channel}, {lock}, jsonb_build_object(\n        'app', {app},\n        'model', {model},\n        'op', TG_OP,\n        'old', to_jsonb(OLD),\n        'new', to_jsonb(NEW){when_field}));\n    RETURN NULL;\n",
        channel = quote_literal(entry.def.name),
        lock = entry.def.lock_notifications,
        app = quote_literal(entry.def.app),
        model = quote_literal(source.model),
    );
    let create = format!(
        "-- Channel `{channel}` ({type_path}): {events} on {table}.\n\
         CREATE OR REPLACE FUNCTION {function}() RETURNS trigger\n\
         LANGUAGE plpgsql AS $pgpubsub$\n\
         {declare}BEGIN\n{body}END;\n$pgpubsub$;\n\
         DROP TRIGGER IF EXISTS {trigger} ON {table};\n\
         CREATE TRIGGER {trigger} AFTER {events} ON {table}\n    FOR EACH ROW EXECUTE FUNCTION {function}();\n",
        channel = entry.def.name,
        type_path = entry.def.type_path,
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
