//! Channel traits, implemented by the `#[channel]` and `#[trigger_channel]` attributes.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use diesel::associations::HasTable;
use diesel::pg::{Pg, PgQueryBuilder};
use diesel::query_builder::{QueryBuilder, QueryFragment};
use diesel::Selectable;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// An application message type, declared with `#[pgpubsub::channel]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pgpubsub message channel",
    label = "not declared with `#[pgpubsub::channel]`",
    note = "declare it with `#[pgpubsub::channel]` (or `#[pgpubsub::channel(lock_notifications)]`) on a serde struct"
)]
pub trait Channel: Serialize + DeserializeOwned + 'static {
    /// The channel's name: the LISTEN channel and the stored `channel` value.
    const NAME: &'static str;
    /// Stored and claimed exactly once (`true`) or broadcast to every listener (`false`).
    const LOCK_NOTIFICATIONS: bool;
}

/// A channel fed by the row changes of a Diesel table, declared with
/// `#[pgpubsub::trigger_channel(model = ...)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pgpubsub trigger channel",
    label = "not declared with `#[pgpubsub::trigger_channel]`",
    note = "declare it with `#[pgpubsub::trigger_channel(model = YourModel)]` on a unit struct"
)]
pub trait TriggerChannel: 'static {
    /// The channel's name: the LISTEN channel and the stored `channel` value.
    const NAME: &'static str;
    /// Stored and claimed exactly once (`true`) or broadcast to every listener (`false`).
    const LOCK_NOTIFICATIONS: bool;
    /// The Diesel model whose rows the handlers receive.
    type Model: Model;
}

/// A Diesel model a trigger channel can carry: it has a table (`Identifiable`
/// or another derive implementing `HasTable`), a `Selectable` column list and
/// a serde `Deserialize` implementation.
///
/// Rows are decoded by position: the trigger's `to_jsonb(NEW)` object is read
/// in the order of the model's `Selectable` columns, so `#[diesel(column_name
/// = ...)]` renames and custom primary keys need no serde attributes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the model of a trigger channel",
    label = "not a Diesel model with a table",
    note = "derive `Identifiable` (it names the table), `Selectable` and `serde::Deserialize` for it"
)]
pub trait Model: DeserializeOwned + 'static {
    /// The model's table as Diesel renders it (quoted, schema-qualified when declared so).
    fn table_sql() -> Result<String>;
    /// The SQL column names of the model's `Selectable` expression, in field order.
    fn columns() -> Result<Vec<String>>;
}

impl<T> Model for T
where
    T: HasTable + Selectable<Pg> + DeserializeOwned + 'static,
    <T as HasTable>::Table: QueryFragment<Pg>,
    <T as Selectable<Pg>>::SelectExpression: QueryFragment<Pg>,
{
    fn table_sql() -> Result<String> {
        render::<T, _>(&T::table())
    }

    fn columns() -> Result<Vec<String>> {
        let sql = render::<T, _>(&T::construct_selection())?;
        parse_column_list(&sql).ok_or_else(|| Error::Model {
            model: std::any::type_name::<T>().to_owned(),
            message: format!("its `Selectable` expression `{sql}` is not a plain list of columns"),
        })
    }
}

fn render<T, Q: QueryFragment<Pg>>(fragment: &Q) -> Result<String> {
    let mut builder = PgQueryBuilder::default();
    fragment
        .to_sql(&mut builder, &Pg)
        .map_err(|err| Error::Model {
            model: std::any::type_name::<T>().to_owned(),
            message: err.to_string(),
        })?;
    Ok(builder.finish())
}

/// Reads `"t"."a", "t"."b"` into `["a", "b"]`; `None` for anything else.
fn parse_column_list(sql: &str) -> Option<Vec<String>> {
    let mut columns = Vec::new();
    let mut chars = sql.chars().peekable();
    loop {
        // One item: quoted identifiers joined by dots; keep the last.
        let last;
        loop {
            if chars.next()? != '"' {
                return None;
            }
            let mut ident = String::new();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        ident.push('"');
                    }
                    '"' => break,
                    c => ident.push(c),
                }
            }
            if chars.peek() != Some(&'.') {
                last = ident;
                break;
            }
            chars.next();
        }
        columns.push(last);
        match chars.next() {
            None => return Some(columns),
            Some(',') => {
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
            }
            Some(_) => return None,
        }
    }
}

/// Column lists per model type, computed once.
pub(crate) fn cached_columns<M: Model>() -> Result<Arc<[String]>> {
    static CACHE: RwLock<Option<HashMap<TypeId, Arc<[String]>>>> = RwLock::new(None);
    let key = TypeId::of::<M>();
    if let Ok(guard) = CACHE.read() {
        if let Some(columns) = guard.as_ref().and_then(|map| map.get(&key)) {
            return Ok(columns.clone());
        }
    }
    let columns: Arc<[String]> = M::columns()?.into();
    if let Ok(mut guard) = CACHE.write() {
        guard
            .get_or_insert_with(HashMap::new)
            .insert(key, columns.clone());
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::parse_column_list;

    #[test]
    fn parses_qualified_and_escaped_columns() {
        assert_eq!(
            parse_column_list(r#""media"."id", "s"."media"."we""ird""#),
            Some(vec!["id".to_owned(), "we\"ird".to_owned()])
        );
        assert_eq!(parse_column_list(r#""a""#), Some(vec!["a".to_owned()]));
    }

    #[test]
    fn rejects_expressions() {
        assert_eq!(parse_column_list(r#""media"."id" + 1"#), None);
        assert_eq!(parse_column_list("count(*)"), None);
        assert_eq!(parse_column_list(""), None);
    }
}
