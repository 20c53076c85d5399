//! Rows decoded through PostgreSQL and Diesel: the payload's `old`/`new`
//! objects are rebuilt into the table's row type by `jsonb_populate_record`
//! (each column's own input function, whatever the writer's session
//! settings were), and Diesel's `FromSql` loads the model from that row in
//! binary, exactly as a query on the table would.
//!
//! One query per batch and channel: the claim itself decodes. When it fails,
//! the batch is claimed again and decoded in one query under a savepoint,
//! then each notification alone, so a failure is recorded on the
//! notification it belongs to, with the column named; a decode query that
//! fails for every notification is the channel's fault and records nothing.

use std::any::Any;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz};
use diesel::{PgConnection, QueryResult, Queryable, QueryableByName, RunQueryDsl};

use crate::channel::{ColumnKind, ModelColumn};
use crate::contract::payload::Payload;
use crate::contract::{names, queries, quote_ident, quote_literal};
use crate::event::RawEvent;
use crate::registry::{ChannelEntry, TriggerSource};

/// One claimed notification: its metadata and the payload's fields as
/// text (see `queries::claim_fields`, whose order the fields follow).
#[doc(hidden)]
#[derive(QueryableByName, Queryable, Debug)]
pub struct Claimed {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = Text)]
    pub(crate) channel: String,
    #[diesel(sql_type = Timestamptz)]
    pub(crate) created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) db_version: Option<String>,
    #[diesel(sql_type = Integer)]
    pub(crate) attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    op: Option<String>,
    #[diesel(sql_type = Nullable<Array<Text>>)]
    matched: Option<Vec<String>>,
    #[diesel(sql_type = Bool)]
    when_malformed: bool,
    #[diesel(sql_type = Bool)]
    has_old: bool,
    #[diesel(sql_type = Bool)]
    has_new: bool,
    #[diesel(sql_type = Nullable<Text>)]
    message: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) context: Option<String>,
}

/// The SQL type of [`Claimed`]'s columns.
pub type ClaimedSql = (
    BigInt,
    Text,
    Timestamptz,
    Nullable<Text>,
    Integer,
    Nullable<Text>,
    Nullable<Array<Text>>,
    Bool,
    Bool,
    Bool,
    Nullable<Text>,
    Nullable<Text>,
);

impl Claimed {
    pub(crate) fn raw_event(&mut self) -> RawEvent {
        RawEvent {
            op: self.op.take(),
            matched: self.matched.take(),
            when_malformed: self.when_malformed,
            has_old: self.has_old,
            has_new: self.has_new,
            message: self.message.take(),
        }
    }
}

/// One row of a claim that also decodes: a claimed notification and, when
/// the payload has a row a handler takes, that row.
pub struct ClaimedRow {
    /// The notification.
    pub claimed: Claimed,
    /// One decoded row; `None` with a side when every selected column of the
    /// row is NULL (Diesel cannot tell that from no row: decode it alone).
    pub row: Option<(Side, Option<Box<dyn Any>>)>,
}

/// The notifications of a lease that a worker now locks, claims and
/// decodes in the transaction that runs their handlers (see
/// `queries::NOTIFICATION_LEASED`).
#[derive(Debug, Clone, Copy)]
pub struct ClaimArgs<'a> {
    /// The lease (a row of `pgpubsub_notification_leases`).
    pub lease: i64,
    /// The lease's notifications still to run, ascending.
    pub ids: &'a [i64],
}

/// Which row of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// `OLD`.
    Old,
    /// `NEW`.
    New,
}

impl Side {
    /// `old` or `new`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Old => "old",
            Side::New => "new",
        }
    }

    fn from_code(code: i32) -> Side {
        if code == 0 {
            Side::Old
        } else {
            Side::New
        }
    }
}

/// Where the payloads of a decode query come from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Notifications claimed by the query itself.
    Claim(ClaimArgs<'a>),
    /// Stored notifications, by id.
    Stored(&'a [i64]),
    /// Payload texts (broadcasts); keys are their positions from 1.
    Inline(&'a [String]),
}

/// One decoded row: the notification (or payload position), the side, and
/// the model value.
pub struct DecodedRow {
    /// The notification id, or the payload's position from 1.
    pub key: i64,
    /// Old or new.
    pub side: Side,
    /// The model, type-erased.
    pub row: Box<dyn Any>,
}

/// What goes between two pieces of a query's SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bind {
    /// The payloads: ids or texts; for a claim, the leased ids.
    Source,
    /// A claim's lease.
    Lease,
    /// The table's missing-column values (`attmissingval`) of the model's
    /// columns, as a JSON object.
    Missing,
}

/// A query's SQL: `pieces[0] binds[0] pieces[1] … pieces[n]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sql {
    pieces: Vec<String>,
    binds: Vec<Bind>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        if self.pieces.is_empty() {
            self.pieces.push(String::new());
        }
        if let Some(last) = self.pieces.last_mut() {
            last.push_str(text);
        }
        self
    }

    /// The lease's notifications, with the lease locked (see
    /// `queries::LEASE_CLAIM`).
    fn claim_call(&mut self) -> &mut Self {
        self.push(queries::LEASE_CLAIM[0]);
        for (ids, piece) in queries::LEASE_CLAIM_BINDS
            .iter()
            .zip(&queries::LEASE_CLAIM[1..])
        {
            self.bind(if *ids { Bind::Source } else { Bind::Lease })
                .push(piece);
        }
        self
    }

    fn bind(&mut self, bind: Bind) -> &mut Self {
        if self.pieces.is_empty() {
            self.pieces.push(String::new());
        }
        self.binds.push(bind);
        self.pieces.push(String::new());
        self
    }
}

/// A decode query ready to run.
pub struct RowsQuery<'a> {
    sql: &'a Sql,
    source: Source<'a>,
    missing: &'a str,
}

/// [`RowsQuery`] with the SQL type of its rows, for Diesel.
pub struct TypedRows<'a, ST> {
    query: &'a RowsQuery<'a>,
    sql_type: PhantomData<ST>,
}

impl<'a> RowsQuery<'a> {
    /// The query with the SQL type `ST` of its rows.
    pub fn typed<ST>(&'a self) -> TypedRows<'a, ST> {
        TypedRows {
            query: self,
            sql_type: PhantomData,
        }
    }
}

impl<ST> QueryId for TypedRows<'_, ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST> Query for TypedRows<'_, ST> {
    type SqlType = ST;
}

impl<ST> QueryFragment<Pg> for TypedRows<'_, ST> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let query = self.query;
        for (index, piece) in query.sql.pieces.iter().enumerate() {
            out.push_sql(piece);
            match query.sql.binds.get(index) {
                Some(Bind::Source) => match &query.source {
                    Source::Claim(args) => out.push_bind_param::<Array<BigInt>, _>(&args.ids)?,
                    Source::Stored(ids) => out.push_bind_param::<Array<BigInt>, _>(ids)?,
                    Source::Inline(texts) => out.push_bind_param::<Array<Text>, _>(texts)?,
                },
                Some(Bind::Lease) => {
                    let Source::Claim(args) = &query.source else {
                        return Err(diesel::result::Error::QueryBuilderError(
                            "a claim bind in a query that does not claim".into(),
                        ));
                    };
                    out.push_bind_param::<BigInt, _>(&args.lease)?;
                }
                Some(Bind::Missing) => out.push_bind_param::<Text, _>(&query.missing)?,
                None => {}
            }
        }
        Ok(())
    }
}

impl<ST> RunQueryDsl<PgConnection> for TypedRows<'_, ST> {}

/// How one trigger channel's rows are decoded; built once per worker.
pub(crate) struct Plan {
    channel: &'static str,
    model: &'static str,
    source: TriggerSource,
    /// What the table's own old rows read for the model's columns that
    /// were added with a default (`attmissingval`), as a JSON object: a
    /// payload written before such a column existed reads the same. Read
    /// once per plan: the model's columns are fixed, and a plan is built
    /// again when its query fails.
    missing: String,
    /// Claims and decodes in one query.
    claim: Sql,
    /// Decode SQL for stored and inline payloads.
    decode: [Sql; 2],
    /// Diagnostic SQL (which column fails) for stored and inline payloads.
    check: [Sql; 2],
    /// Diagnostic SQL (columns absent from the payload).
    absent: [Sql; 2],
    /// The table has an `interval` or `money` somewhere: read under fixed
    /// settings.
    interval: bool,
    /// Copies of (old, new) per operation (`INSERT`, `UPDATE`, `DELETE`).
    copies: [(i32, i32); 3],
}

/// The plans of a worker's channels.
#[derive(Default)]
pub(crate) struct Plans {
    plans: HashMap<&'static str, (Result<Plan, String>, Instant)>,
}

/// How long a channel whose decode query does not work waits before its
/// plan is built (and probed) again. Its notifications stay stored, untouched.
const PLAN_RETRY: Duration = Duration::from_secs(10);

impl Plans {
    /// The plan of `entry`'s channel (built and probed on first use); `Err`
    /// with the reason when its decode query does not work (the model cannot
    /// be read, the table is missing, the `upgrade` expression is invalid).
    /// A broken plan is built again after [`PLAN_RETRY`].
    pub(crate) fn get(
        &mut self,
        conn: &mut PgConnection,
        entry: &ChannelEntry,
    ) -> Option<&Result<Plan, String>> {
        let crate::registry::ChannelSource::Trigger(source) = entry.def.source else {
            return None;
        };
        if entry
            .row_copies()
            .iter()
            .all(|(old, new)| *old == 0 && *new == 0)
        {
            // No handler takes a row: nothing to decode, nothing to fail.
            return None;
        }
        let stale = self
            .plans
            .get(entry.def.name)
            .is_some_and(|(plan, at)| plan.is_err() && at.elapsed() >= PLAN_RETRY);
        if stale || !self.plans.contains_key(entry.def.name) {
            let plan = Plan::new(conn, entry, source);
            if let Err(reason) = &plan {
                tracing::error!(
                    channel = entry.def.name,
                    error = %reason,
                    retry_in = ?PLAN_RETRY,
                    "the channel's rows cannot be decoded; its notifications stay stored until this is fixed"
                );
            }
            self.plans.insert(entry.def.name, (plan, Instant::now()));
        }
        self.plans.get(entry.def.name).map(|(plan, _)| plan)
    }

    /// Marks `channel`'s plan broken: it is built again after [`PLAN_RETRY`].
    pub(crate) fn broken(&mut self, channel: &'static str, reason: String) {
        tracing::error!(
            channel,
            error = %reason,
            retry_in = ?PLAN_RETRY,
            "the channel's decode query fails for every notification; its notifications stay stored"
        );
        self.plans.insert(channel, (Err(reason), Instant::now()));
    }
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    ok: bool,
}

#[derive(QueryableByName)]
struct Missing {
    #[diesel(sql_type = Text)]
    missing: String,
}

#[derive(QueryableByName)]
struct ColumnType {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    type_name: String,
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
    #[diesel(sql_type = Text)]
    monetary: String,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Nullable<Text>)]
    version: Option<String>,
}

#[derive(QueryableByName, Debug)]
struct CheckRow {
    #[diesel(sql_type = Integer)]
    side: i32,
    #[diesel(sql_type = Nullable<Text>)]
    column_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
}

#[derive(QueryableByName, Debug)]
struct AbsentRow {
    #[diesel(sql_type = Integer)]
    side: i32,
    #[diesel(sql_type = Array<Text>)]
    absent: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    unknown: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    nulls: Vec<String>,
    #[diesel(sql_type = Nullable<Text>)]
    written: Option<String>,
}

impl Plan {
    fn new(
        conn: &mut PgConnection,
        entry: &ChannelEntry,
        source: TriggerSource,
    ) -> Result<Plan, String> {
        let table = (source.table_sql)().map_err(|err| err.to_string())?;
        let columns = (source.columns)().map_err(|err| err.to_string())?;
        let interval = diesel::sql_query(queries::TABLE_HAS_INTERVAL)
            .bind::<Text, _>(&table)
            .get_result::<Flag>(conn)
            .map(|flag| flag.ok)
            .unwrap_or_else(|err| {
                tracing::warn!(channel = entry.def.name, error = %err, "cannot inspect the channel's table; reading intervals under sql_standard");
                true
            });
        let types: HashMap<String, String> = diesel::sql_query(queries::TABLE_COLUMN_TYPES)
            .bind::<Text, _>(&table)
            .load::<ColumnType>(conn)
            .map_err(|err| format!("cannot read the columns of {table}: {}", error_chain(&err)))?
            .into_iter()
            .map(|column| (column.name, column.type_name))
            .collect();
        let mut record = Vec::with_capacity(columns.len());
        for column in &columns {
            let type_name = types.get(&column.name).ok_or_else(|| {
                format!(
                    "the model `{}` selects the column `{}`, which the table {table} does not have",
                    source.model, column.name
                )
            })?;
            record.push(format!("{} {type_name}", quote_ident(&column.name)));
        }
        let model_columns: Vec<&str> = columns.iter().map(|column| column.name.as_str()).collect();
        let missing = diesel::sql_query(queries::TABLE_MISSING_VALUES)
            .bind::<Text, _>(&table)
            .bind::<Array<Text>, _>(&model_columns)
            .get_result::<Missing>(conn)
            .map_err(|err| format!("cannot read the columns of {table}: {}", error_chain(&err)))?
            .missing;
        // Only the model's columns are read, each with its own type: a column
        // the model does not select cannot fail the decode.
        let record = format!("jsonb_to_record(h.j) AS r({})", record.join(", "));
        let copies = entry.row_copies();
        let shape = Shape {
            upgrade: source.upgrade,
            exact: columns
                .iter()
                .any(|column| column.kind != ColumnKind::Other),
            copies,
            conditions: entry.handlers.iter().any(|handler| handler.when.is_some()),
        };
        let select = select_list(&columns, source.upgrade.is_some());
        let copies_join = if copies.iter().any(|(old, new)| *old > 1 || *new > 1) {
            "\nCROSS JOIN LATERAL generate_series(1, s.copies) AS copy(n)"
        } else {
            ""
        };
        let decode = [false, true].map(|inline| {
            shape.query(
                inline,
                &format!("SELECT s.k, s.side, {select}"),
                &format!("\nCROSS JOIN LATERAL {record}{copies_join}\nWHERE h.j IS NOT NULL"),
            )
        });
        let claim = shape.claim(&record, &select, copies_join);
        let check = [false, true].map(|inline| {
            shape.query(
                inline,
                "SELECT s.side, c.column_name, c.error",
                &format!(
                    "\nCROSS JOIN LATERAL {}(NULL::{table}, h.j) AS c",
                    names::ROW_CHECK_FN
                ),
            )
        });
        let model_columns = format!(
            "ARRAY[{}]::text[]",
            columns
                .iter()
                .map(|column| quote_literal(&column.name))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let absent = [false, true].map(|inline| {
            shape.query(
                inline,
                &format!(
                    "SELECT s.side, \
                     ARRAY(SELECT c FROM unnest({model_columns}) AS c WHERE NOT h.j ? c) AS absent, \
                     ARRAY(SELECT k FROM jsonb_object_keys(s.j) AS k \
                           WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = to_regclass({table_literal}) \
                                             AND a.attname = k AND a.attnum > 0 AND NOT a.attisdropped) \
                           ORDER BY k) AS unknown, \
                     ARRAY(SELECT c FROM unnest({model_columns}) AS c WHERE h.j ? c AND h.j -> c = 'null'::jsonb) AS nulls, \
                     s.v AS written",
                    table_literal = quote_literal(&table),
                ),
                "",
            )
        });
        let plan = Plan {
            channel: entry.def.name,
            model: source.model,
            source,
            missing,
            claim,
            decode,
            check,
            absent,
            interval,
            copies,
        };
        plan.probe(conn)
            .map_err(|err| format!("its decode query fails: {}", error_chain(&err)))?;
        Ok(plan)
    }

    /// Runs the decode query on no notification, under a savepoint: an
    /// error here is the channel's (missing table or column, invalid
    /// `upgrade`), not any notification's.
    pub(crate) fn probe(&self, conn: &mut PgConnection) -> QueryResult<()> {
        diesel::Connection::transaction(conn, |conn| {
            self.decode(conn, Source::Stored(&[])).map(drop)
        })
    }

    /// The channel.
    pub(crate) fn channel(&self) -> &'static str {
        self.channel
    }

    /// True when some handler takes a row.
    pub(crate) fn needs_rows(&self) -> bool {
        self.copies.iter().any(|(old, new)| *old > 0 || *new > 0)
    }

    /// Claims a batch and decodes its rows in one query. Any failure, in the
    /// database (which aborts the transaction) or in Diesel, means: roll
    /// back, claim again and decode under savepoints.
    pub(crate) fn claim(
        &self,
        conn: &mut PgConnection,
        args: ClaimArgs<'_>,
    ) -> QueryResult<Vec<ClaimedRow>> {
        let query = RowsQuery {
            sql: &self.claim,
            source: Source::Claim(args),
            missing: &self.missing,
        };
        self.with_interval_style(conn, |conn| (self.source.claim)(conn, &query))
    }

    fn with_interval_style<T>(
        &self,
        conn: &mut PgConnection,
        run: impl FnOnce(&mut PgConnection) -> QueryResult<T>,
    ) -> QueryResult<T> {
        if !self.interval {
            return run(conn);
        }
        let previous =
            diesel::sql_query(queries::INTERVAL_STYLE_SET).get_result::<Setting>(conn)?;
        // On an error the caller rolls back (a savepoint or the transaction),
        // which restores the settings too; a restore here would only hide
        // the error behind "current transaction is aborted".
        let result = run(conn)?;
        diesel::sql_query(queries::INTERVAL_STYLE_RESTORE)
            .bind::<Text, _>(&previous.value)
            .bind::<Text, _>(&previous.monetary)
            .execute(conn)?;
        Ok(result)
    }

    fn query<'a>(&'a self, sql: &'a [Sql; 2], source: Source<'a>) -> RowsQuery<'a> {
        let index = usize::from(matches!(source, Source::Inline(_)));
        RowsQuery {
            sql: &sql[index],
            source,
            missing: &self.missing,
        }
    }

    /// Decodes the rows of every payload in `source` in one query. A
    /// database error leaves the transaction aborted; the caller decides
    /// whether to retry under savepoints.
    pub(crate) fn decode(
        &self,
        conn: &mut PgConnection,
        source: Source<'_>,
    ) -> QueryResult<Vec<DecodedRow>> {
        let query = self.query(&self.decode, source);
        self.with_interval_style(conn, |conn| (self.source.decode)(conn, &query))
    }

    /// Why the rows of the one payload in `source` do not decode, for the
    /// error recorded on it: the columns PostgreSQL rejects and the columns
    /// the payload lacks, with the schema versions of the write and of now.
    pub(crate) fn explain(
        &self,
        conn: &mut PgConnection,
        source: Source<'_>,
        key: i64,
        error: &diesel::result::Error,
    ) -> String {
        let mut message = format!(
            "cannot decode notification {} of channel `{}` into `{}`",
            describe_key(source, key),
            self.channel,
            self.model
        );
        let database_error = matches!(error, diesel::result::Error::DatabaseError(..));
        if database_error {
            let rejected: Vec<CheckRow> = {
                let query = self.query(&self.check, source);
                diesel::Connection::transaction(conn, |conn| load_untyped::<CheckRow>(conn, &query))
                    .unwrap_or_default()
            };
            if !rejected.is_empty() {
                for row in rejected {
                    let side = Side::from_code(row.side).name();
                    match row.column_name {
                        Some(column) => {
                            let _ = write!(
                                message,
                                ": `{side}` column `{column}`: {}",
                                row.error.unwrap_or_default()
                            );
                        }
                        None => {
                            let _ = write!(
                                message,
                                ": `{side}` row: {}",
                                row.error.unwrap_or_default()
                            );
                        }
                    }
                }
                let _ = write!(message, " (PostgreSQL: {})", error_chain(error));
                return message;
            }
            let _ = write!(message, ": {}", error_chain(error));
            return message;
        }
        let _ = write!(message, ": {}", error_chain(error));
        // Under a savepoint: a failure here must not abort the batch.
        let query = self.query(&self.absent, source);
        let diagnosis = diesel::Connection::transaction(conn, |conn| {
            let absent = load_untyped::<AbsentRow>(conn, &query)?;
            let now = diesel::sql_query(queries::DB_VERSION_CURRENT)
                .get_result::<Version>(conn)?
                .version;
            Ok::<_, diesel::result::Error>((absent, now))
        });
        let (absent, now) = diagnosis.unwrap_or_default();
        for row in absent {
            let side = Side::from_code(row.side).name();
            if !row.nulls.is_empty() {
                let _ = write!(
                    message,
                    "; `{side}` columns that are NULL: {}",
                    backticked(&row.nulls)
                );
            }
            if !row.absent.is_empty() {
                let _ = write!(
                    message,
                    "; `{side}` columns not in the payload: {} (written at db_version {}, now {})",
                    backticked(&row.absent),
                    row.written.as_deref().unwrap_or("unknown"),
                    now.as_deref().unwrap_or("unknown"),
                );
                if !row.unknown.is_empty() {
                    let _ = write!(
                        message,
                        "; the payload has {}, which the table no longer has: if a column was \
                         renamed, give the channel an `upgrade` that renames it in old payloads",
                        backticked(&row.unknown)
                    );
                }
            }
        }
        message
    }
}

fn describe_key(source: Source<'_>, key: i64) -> String {
    match source {
        Source::Stored(_) | Source::Claim(_) => key.to_string(),
        Source::Inline(_) => "(broadcast)".to_owned(),
    }
}

fn backticked(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error with its sources, `: `-joined.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

fn load_untyped<U>(conn: &mut PgConnection, query: &RowsQuery<'_>) -> QueryResult<Vec<U>>
where
    U: QueryableByName<Pg> + 'static,
{
    query.typed::<diesel::sql_types::Untyped>().load::<U>(conn)
}

/// The select list: the model's columns of the rebuilt row, `json`/`jsonb`
/// columns from their exact text when the payload has it.
fn select_list(columns: &[ModelColumn], upgraded: bool) -> String {
    columns
        .iter()
        .map(|column| {
            let ident = quote_ident(&column.name);
            let key = quote_literal(&column.name);
            let cast = match column.kind {
                ColumnKind::Json => "json",
                ColumnKind::Jsonb => "jsonb",
                ColumnKind::JsonArray => "json[]",
                ColumnKind::JsonbArray => "jsonb[]",
                ColumnKind::Other => return format!("r.{ident} AS {ident}"),
            };
            let untouched = if upgraded {
                // Before the missing-column values: a `json` column is not in
                // `j` (it travels as exact text only), so its default must
                // not count as the hook's doing.
                format!(" AND (s.j -> {key}) IS NOT DISTINCT FROM (h.hooked -> {key})")
            } else {
                String::new()
            };
            format!(
                "CASE WHEN jsonb_typeof(s.t) = 'object' AND s.t ? {key}{untouched} \
                 THEN (s.t ->> {key})::{cast} ELSE r.{ident} END AS {ident}"
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The row to decode, `h.j`, from a payload row `s`: the upgrade hook's
/// output (`hooked`) under the table's missing-column values, or NULL when
/// the row is not an object or no handler of its operation takes it.
/// Computed so the decode never sees a row it must not read: PostgreSQL may
/// evaluate the decode before a filter on `s`.
const MERGE: &str = "SELECT CASE WHEN jsonb_typeof(u.j) = 'object' AND s.copies > 0 \
    THEN (CASE WHEN d.m = '{}'::jsonb THEN u.j ELSE d.m || u.j END) END AS j, u.j AS hooked \
    FROM (SELECT {hooked} AS j) AS u";

/// How many copies of a row the operation `op` (a SQL expression giving
/// `INSERT`, `UPDATE` or `DELETE`) needs, as SQL.
fn copies_by_op(op: &str, copies: &[i32]) -> String {
    let of = |index: usize| copies.get(index).copied().unwrap_or(0);
    format!(
        "(CASE {op} WHEN 'INSERT' THEN {} WHEN 'UPDATE' THEN {} WHEN 'DELETE' THEN {} ELSE 0 END)",
        of(0),
        of(1),
        of(2)
    )
}

/// What a channel's queries must read of each payload.
struct Shape<'a> {
    upgrade: Option<&'a str>,
    /// The model has `json`/`jsonb` columns: read their exact text.
    exact: bool,
    /// Copies of (old, new) per operation (`INSERT`, `UPDATE`, `DELETE`).
    copies: [(i32, i32); 3],
    /// Some handler has a `when` condition: read the payload's `when`.
    conditions: bool,
}

impl Shape<'_> {
    /// Claims a batch and decodes it: one row per notification and decoded
    /// row, or one with a NULL side when the payload has no row a handler
    /// takes (or the rows are malformed, which validation reports).
    fn claim(&self, record: &str, select: &str, copies: &str) -> Sql {
        if let Some(flat) = self.flat_claim(record, select) {
            return flat;
        }
        let mut sql = Sql::default();
        sql.push("WITH c AS MATERIALIZED (SELECT * FROM ")
        .claim_call()
        .push(
            "),\nd AS (SELECT ",
        )
        .bind(Bind::Missing)
        .push(&format!(
            "::jsonb AS m)\n\
             SELECT {fields}, x.*\nFROM c CROSS JOIN d\nLEFT JOIN LATERAL (\n  SELECT s.side, {select}\n  FROM (",
            fields = queries::claim_fields("c", true, self.conditions),
        ));
        self.sides(
            &mut sql,
            |sql, key, exact| {
                sql.push(&format!(
                    "SELECT c.id AS k, c.payload ->> 'op' AS o, c.payload -> {key} AS j, {exact} AS t, c.db_version AS v \
                 WHERE jsonb_typeof(c.payload -> {key}) = 'object'"
                ));
            },
            "c.payload",
        );
        sql.push(&format!(
            "\n  ) AS s\n  CROSS JOIN LATERAL ({merge}) AS h\n  \
             CROSS JOIN LATERAL {record}{copies}\n  WHERE h.j IS NOT NULL\n) AS x ON true\nORDER BY c.id",
            merge = MERGE.replace("{hooked}", &self.hooked()),
        ));
        sql
    }

    /// The common case in its cheapest form: handlers take one side, one
    /// copy each, no `upgrade`, no exact `json` text. One row per claimed
    /// notification, in the claim function's order (by id; no sort: the
    /// worker's cursor is the highest id either way).
    fn flat_claim(&self, record: &str, select: &str) -> Option<Sql> {
        if self.upgrade.is_some() || self.exact {
            return None;
        }
        let old: Vec<i32> = self.copies.iter().map(|(old, _)| *old).collect();
        let new: Vec<i32> = self.copies.iter().map(|(_, new)| *new).collect();
        let (code, key, copies) = match (old.iter().any(|n| *n > 0), new.iter().any(|n| *n > 0)) {
            (false, true) => (1, Payload::NEW, new),
            (true, false) => (0, Payload::OLD, old),
            _ => return None,
        };
        if copies.iter().any(|n| *n > 1) {
            return None;
        }
        let key = quote_literal(key);
        let wanted = format!("{} > 0", copies_by_op("c.payload ->> 'op'", &copies));
        let mut sql = Sql::default();
        sql.push(
            "WITH d AS (SELECT ",
        )
        .bind(Bind::Missing)
        .push(&format!(
            "::jsonb AS m)\n\
             SELECT {fields}, x.*\nFROM ",
            fields = queries::claim_fields("c", true, self.conditions),
        ))
        .claim_call()
        .push(&format!(
            " AS c CROSS JOIN d\nLEFT JOIN LATERAL (\n  SELECT {code} AS side, {select}\n  \
             FROM (SELECT CASE WHEN jsonb_typeof(c.payload -> {key}) = 'object' AND {wanted} \
             THEN (CASE WHEN d.m = '{{}}'::jsonb THEN c.payload -> {key} ELSE d.m || (c.payload -> {key}) END) END AS j) AS h\n  \
             CROSS JOIN LATERAL {record}\n  \
             WHERE h.j IS NOT NULL\n\
             ) AS x ON true",
        ));
        Some(sql)
    }

    /// The rows `s` of each side a handler takes: `(k, side, copies, j, t, v)`.
    fn sides(&self, sql: &mut Sql, mut from: impl FnMut(&mut Sql, &str, &str), payload: &str) {
        let sides: Vec<(i32, &str, &str, [i32; 3])> = [
            (
                0,
                Payload::OLD,
                Payload::OLD_EXACT,
                self.copies.map(|(old, _)| old),
            ),
            (
                1,
                Payload::NEW,
                Payload::NEW_EXACT,
                self.copies.map(|(_, new)| new),
            ),
        ]
        .into_iter()
        .filter(|side| side.3.iter().any(|copies| *copies > 0))
        .collect();
        if sides.is_empty() {
            sql.push(
                "SELECT 0::bigint AS k, 0 AS side, 0 AS copies, NULL::jsonb AS j, NULL::jsonb AS t, NULL::text AS v WHERE false",
            );
        }
        for (index, (code, key, exact_key, copies)) in sides.iter().enumerate() {
            if index > 0 {
                sql.push("\n    UNION ALL\n");
            }
            let key = quote_literal(key);
            let exact = if self.exact {
                format!("{payload} -> {}", quote_literal(exact_key))
            } else {
                "NULL::jsonb".to_owned()
            };
            // Only the operations whose handlers take this row decode it.
            let copies = copies_by_op("w.o", copies);
            sql.push(&format!(
                "\n    SELECT w.k, {code} AS side, {copies} AS copies, w.j, w.t, w.v FROM ("
            ));
            from(sql, &key, &exact);
            sql.push(&format!(") AS w WHERE {copies} > 0"));
        }
    }

    fn hooked(&self) -> String {
        match self.upgrade {
            Some(expression) => format!(
                "(SELECT ({expression}) FROM (SELECT s.j AS row_json, s.v AS db_version) AS upgrade_input \
                 WHERE jsonb_typeof(upgrade_input.row_json) = 'object')"
            ),
            None => "s.j".to_owned(),
        }
    }

    /// `head FROM <rows> … tail`, where the rows `s` are (`k` the
    /// notification id or payload position, `side`, `copies`, `j` the row
    /// object, `t` its exact texts, `v` the writer's db_version), one per
    /// payload and side a handler takes, and `h.j` is the row after the
    /// upgrade hook and the table's missing-column values (PostgreSQL's
    /// `attmissingval`: what the table's own old rows read for a column
    /// added with a default).
    fn query(&self, inline: bool, head: &str, tail: &str) -> Sql {
        let mut sql = Sql::default();
        sql.push(head).push("\nFROM (");
        self.sides(
            &mut sql,
            |sql, key, exact| {
                sql.push(&format!(
                    "SELECT src.k, src.p ->> 'op' AS o, src.p -> {key} AS j, {exact} AS t, src.v FROM ("
                ));
                if inline {
                    sql.push(&format!(
                        "SELECT t.k, t.p::jsonb AS p, (t.p::jsonb) ->> {} AS v FROM unnest(",
                        quote_literal(Payload::DB_VERSION)
                    ))
                        .bind(Bind::Source)
                        .push("::text[]) WITH ORDINALITY AS t(p, k)");
                } else {
                    sql.push(&format!(
                        "SELECT n.id AS k, n.payload AS p, n.db_version AS v FROM {} AS n WHERE n.id = ANY(",
                        names::NOTIFICATION_TABLE
                    ))
                    .bind(Bind::Source)
                    .push("::bigint[])");
                }
                sql.push(&format!(") AS src WHERE jsonb_typeof(src.p -> {key}) = 'object'"));
            },
            "src.p",
        );
        let hooked = self.hooked();
        sql.push("\n) AS s\nCROSS JOIN (SELECT ")
            .bind(Bind::Missing)
            .push(&format!(
                "::jsonb AS m) AS d\n\
             CROSS JOIN LATERAL ({merge}) AS h{tail}",
                merge = MERGE.replace("{hooked}", &hooked),
            ));
        sql
    }
}
