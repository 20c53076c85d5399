//! Channel traits, implemented by the `#[channel]` and `#[trigger_channel]` attributes.

use diesel::associations::HasTable;
use diesel::dsl::SqlTypeOf;
use diesel::expression::QueryMetadata;
use diesel::pg::{Pg, PgMetadataLookup, PgQueryBuilder, PgTypeMetadata};
use diesel::query_builder::{QueryBuilder, QueryFragment};
use diesel::query_dsl::LoadQuery;
use diesel::sql_types::{BigInt, Integer, Nullable};
use diesel::{PgConnection, QueryResult, RunQueryDsl, Selectable};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::decode::{Claimed, ClaimedRow, ClaimedSql, DecodedRow, RowsQuery, Side, TypedRows};
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
/// or another derive implementing `HasTable`), and `Queryable` plus
/// `Selectable` load it, exactly as a query on the table would.
///
/// The trigger's `to_jsonb(OLD)`/`to_jsonb(NEW)` objects are rebuilt into
/// the table's row type by PostgreSQL (`jsonb_populate_record`, each column's
/// own input function) and loaded with Diesel's `FromSql` in binary, so the
/// handler gets the row Diesel would load: no serde, no `Deserialize`.
/// `#[diesel(column_name = ...)]` renames and custom primary keys work as in
/// any Diesel query.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the model of a trigger channel",
    label = "not a Diesel model with a table",
    note = "derive `Queryable`, `Selectable` and `Identifiable` (it names the table) for it, with `#[diesel(table_name = ...)]`"
)]
pub trait Model: Sized + 'static {
    /// The model's table as Diesel renders it (quoted, schema-qualified when declared so).
    fn table_sql() -> Result<String>;
    /// The SQL columns of the model's `Selectable` expression, in field order.
    fn columns() -> Result<Vec<ModelColumn>>;
    /// Runs a decode query and loads its rows into the model.
    #[doc(hidden)]
    fn decode_rows(conn: &mut PgConnection, query: &RowsQuery<'_>) -> QueryResult<Vec<DecodedRow>>;
    /// Runs a claim that decodes and loads its rows into the model.
    #[doc(hidden)]
    fn claim_rows(conn: &mut PgConnection, query: &RowsQuery<'_>) -> QueryResult<Vec<ClaimedRow>>;
}

/// One column of a model's `Selectable` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelColumn {
    /// The SQL column name.
    pub name: String,
    /// What the decoder must know about its type.
    pub kind: ColumnKind,
    /// True when the type's JSON form is the same under every session
    /// setting (integers, numeric, text, bool, bytea, uuid, dates and
    /// timestamps, network types, json): a row of only such columns needs
    /// no fixed output settings in its trigger.
    pub settings_free: bool,
}

/// The built-in types whose `to_jsonb` form does not depend on the
/// writer's session (`DateStyle`, `IntervalStyle`, `extra_float_digits`,
/// `lc_monetary`), with their array types.
const SETTINGS_FREE_OIDS: &[u32] = &[
    16, 1000, // bool
    17, 1001, // bytea
    18, 1002, // "char"
    19, 1003, // name
    20, 1016, // int8
    21, 1005, // int2
    23, 1007, // int4
    25, 1009, // text
    26, 1028, // oid
    114, 199, // json
    650, 651, // cidr
    774, 775, // macaddr8
    829, 1040, // macaddr
    869, 1041, // inet
    1042, 1014, // bpchar
    1043, 1015, // varchar
    1082, 1182, // date (JSON writes ISO dates)
    1083, 1183, // time
    1114, 1115, // timestamp
    1184, 1185, // timestamptz
    1266, 1270, // timetz
    1700, 1231, // numeric
    2950, 2951, // uuid
    3802, 3807, // jsonb
];

/// The column types the decoder treats apart: `to_jsonb` normalizes `json`
/// text and turns a JSON `null` into the same `null` as SQL `NULL`, so the
/// trigger also records these columns' exact text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// `json`.
    Json,
    /// `jsonb`.
    Jsonb,
    /// `json[]`.
    JsonArray,
    /// `jsonb[]`.
    JsonbArray,
    /// Every other type.
    Other,
}

/// The loading bounds of a model, stated on its `Selectable` expression so a
/// model that is not `Selectable` (or has no table) is reported once, by the
/// derive it lacks, not again by every loading bound that depends on it.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the columns of `{T}` do not load into it",
    note = "derive `Queryable` for it, with the fields in the order and of the types of its `Selectable` columns"
)]
pub trait RowLoad<T> {
    /// The OIDs of the columns' built-in types (`None` when not built in).
    fn column_oids() -> Vec<Option<u32>>;
    /// Loads a decode query's rows.
    fn decode(conn: &mut PgConnection, query: &RowsQuery<'_>) -> QueryResult<Vec<DecodedRow>>;
    /// Loads a claim that decodes.
    fn claim(conn: &mut PgConnection, query: &RowsQuery<'_>) -> QueryResult<Vec<ClaimedRow>>;
}

impl<E, T> RowLoad<T> for E
where
    T: 'static,
    E: diesel::Expression,
    Pg: QueryMetadata<SqlTypeOf<E>>,
    for<'a> TypedRows<'a, (BigInt, Integer, SqlTypeOf<E>)>:
        LoadQuery<'a, PgConnection, (i64, i32, T)>,
    for<'a> TypedRows<'a, (ClaimedSql, Nullable<Integer>, Nullable<SqlTypeOf<E>>)>:
        LoadQuery<'a, PgConnection, (Claimed, Option<i32>, Option<T>)>,
{
    fn column_oids() -> Vec<Option<u32>> {
        let mut types = Vec::new();
        <Pg as QueryMetadata<SqlTypeOf<E>>>::row_metadata(&mut BuiltinTypes, &mut types);
        types
            .iter()
            .map(|metadata| metadata.as_ref().and_then(|metadata| metadata.oid().ok()))
            .collect()
    }

    fn decode(conn: &mut PgConnection, query: &RowsQuery<'_>) -> QueryResult<Vec<DecodedRow>> {
        let rows: Vec<(i64, i32, T)> = query
            .typed::<(BigInt, Integer, SqlTypeOf<E>)>()
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(key, side, row)| DecodedRow {
                key,
                side: if side == 0 { Side::Old } else { Side::New },
                row: Box::new(row),
            })
            .collect())
    }

    fn claim(conn: &mut PgConnection, query: &RowsQuery<'_>) -> QueryResult<Vec<ClaimedRow>> {
        let rows: Vec<(Claimed, Option<i32>, Option<T>)> = query
            .typed::<(ClaimedSql, Nullable<Integer>, Nullable<SqlTypeOf<E>>)>()
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(claimed, side, row)| ClaimedRow {
                claimed,
                row: side.map(|side| {
                    let side = if side == 0 { Side::Old } else { Side::New };
                    (side, row.map(|row| Box::new(row) as Box<dyn std::any::Any>))
                }),
            })
            .collect())
    }
}

/// A type lookup for built-in types only: the decoder only asks which
/// columns are `json`/`jsonb`, whose OIDs are static.
struct BuiltinTypes;

impl PgMetadataLookup for BuiltinTypes {
    fn lookup_type(&mut self, _type_name: &str, _schema: Option<&str>) -> PgTypeMetadata {
        PgTypeMetadata::new(0, 0)
    }
}

const JSON_OID: u32 = 114;
const JSONB_OID: u32 = 3802;
const JSON_ARRAY_OID: u32 = 199;
const JSONB_ARRAY_OID: u32 = 3807;

// The loading bounds name the model's row type through its `Selectable`
// expression, so a model that is not `Selectable` is reported once, by the
// bound it misses, not again by every bound that depends on it.
impl<T> Model for T
where
    T: HasTable + Selectable<Pg> + 'static,
    <T as HasTable>::Table: QueryFragment<Pg>,
    <T as Selectable<Pg>>::SelectExpression: QueryFragment<Pg> + RowLoad<T>,
{
    fn table_sql() -> Result<String> {
        render::<T, _>(&T::table())
    }

    fn columns() -> Result<Vec<ModelColumn>> {
        let sql = render::<T, _>(&T::construct_selection())?;
        let names = parse_column_list(&sql).ok_or_else(|| Error::Model {
            model: std::any::type_name::<T>().to_owned(),
            message: format!("its `Selectable` expression `{sql}` is not a plain list of columns"),
        })?;
        let types = <<T as Selectable<Pg>>::SelectExpression as RowLoad<T>>::column_oids();
        Ok(names
            .into_iter()
            .enumerate()
            .map(|(index, name)| {
                let oid = types.get(index).copied().flatten();
                let kind = match oid {
                    Some(JSON_OID) => ColumnKind::Json,
                    Some(JSONB_OID) => ColumnKind::Jsonb,
                    Some(JSON_ARRAY_OID) => ColumnKind::JsonArray,
                    Some(JSONB_ARRAY_OID) => ColumnKind::JsonbArray,
                    _ => ColumnKind::Other,
                };
                ModelColumn {
                    name,
                    kind,
                    settings_free: oid.is_some_and(|oid| SETTINGS_FREE_OIDS.contains(&oid)),
                }
            })
            .collect())
    }

    fn decode_rows(conn: &mut PgConnection, query: &RowsQuery<'_>) -> QueryResult<Vec<DecodedRow>> {
        <<T as Selectable<Pg>>::SelectExpression as RowLoad<T>>::decode(conn, query)
    }

    fn claim_rows(conn: &mut PgConnection, query: &RowsQuery<'_>) -> QueryResult<Vec<ClaimedRow>> {
        <<T as Selectable<Pg>>::SelectExpression as RowLoad<T>>::claim(conn, query)
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
