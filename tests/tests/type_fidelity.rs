//! Type fidelity: a handler receives, for every column type Diesel maps, the
//! very value Diesel loads from the table, whatever the writer's session
//! settings were when the trigger serialized the row.
//!
//! Table-driven: each test writes its cases once per writer session (the
//! session settings change how `to_jsonb` prints values in the trigger), then
//! updates every row from *another* session (so `old` is printed under
//! different settings than the insert's `new`), and compares what the
//! handlers got with `table.load::<Model>(conn)`, row by row and field by
//! field (the models' `PartialEq`; floats by bits, NaN by `is_nan`).
//!
//! The one documented exception: `-0.0` in a `real`/`double precision`
//! column arrives as `0.0`, because the trigger's `to_jsonb` turns floats into
//! JSON numbers (PostgreSQL `numeric`, which has no negative zero).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::{self, Debug};
use std::ops::Bound;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::data_types::{PgDate, PgInterval, PgMoney, PgTimestamp};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use ipnet::IpNet;
use ipnetwork::IpNetwork;
use pgpubsub_tests::{count, spawn_listening, wait_until, TestDb, WAIT};
use serde_json::Value;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Writer sessions
// ---------------------------------------------------------------------------

/// The writer session settings every case is written under. Each changes how
/// `to_jsonb` (in the trigger) prints some type: time zone offsets, bytea
/// format, interval format, date order, float digits.
const SESSIONS: [&str; 4] = [
    "SET TimeZone = 'UTC'; SET bytea_output = 'hex'; SET IntervalStyle = 'postgres'; \
     SET DateStyle = 'ISO, MDY'",
    "SET TimeZone = 'Asia/Kolkata'; SET bytea_output = 'escape'; SET IntervalStyle = 'sql_standard'; \
     SET DateStyle = 'SQL, DMY'; SET lc_monetary = 'C'",
    "SET TimeZone = 'America/St_Johns'; SET bytea_output = 'hex'; SET IntervalStyle = 'iso_8601'; \
     SET DateStyle = 'Postgres, DMY'",
    "SET TimeZone = 'Pacific/Chatham'; SET bytea_output = 'escape'; SET IntervalStyle = 'postgres_verbose'; \
     SET DateStyle = 'German'; SET extra_float_digits = 3",
];

/// A connection with `settings` applied.
fn session(db: &TestDb, settings: &str) -> PgConnection {
    let mut conn = db.conn();
    conn.batch_execute(settings)
        .unwrap_or_else(|err| panic!("`{settings}` failed: {err}"));
    conn
}

/// The id of case `case` written under session `batch`.
fn id(batch: usize, case: usize) -> i64 {
    i64::try_from(batch * 1000 + case).unwrap()
}

/// `values[case % len]`: cycling through each column's values independently
/// gives every row a different combination.
fn pick<T: Clone>(values: &[T], case: usize) -> T {
    values[case % values.len()].clone()
}

// ---------------------------------------------------------------------------
// What the handlers received
// ---------------------------------------------------------------------------

/// One handler call: the database it came from (tests run in parallel, each
/// with its own database, and share these statics) and the rows.
struct Seen<M> {
    db: String,
    old: Option<M>,
    new: M,
}

type Store<M> = Mutex<Vec<Seen<M>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn remember<M>(
    store: &Store<M>,
    conn: &mut PgConnection,
    old: Option<M>,
    new: M,
) -> QueryResult<()> {
    let db = diesel::select(sql::<Text>("current_database()")).get_result::<String>(conn)?;
    lock(store).push(Seen { db, old, new });
    Ok(())
}

fn seen_in<M>(store: &Store<M>, db: &str) -> usize {
    lock(store).iter().filter(|seen| seen.db == db).count()
}

fn take<M>(store: &Store<M>, db: &str) -> Vec<Seen<M>> {
    let mut all = lock(store);
    let (mine, others) = all.drain(..).partition(|seen| seen.db == db);
    *all = others;
    mine
}

// ---------------------------------------------------------------------------
// The round trip
// ---------------------------------------------------------------------------

/// How a test's table is read and compared.
struct Fixture<M: 'static, K> {
    /// The SQL table.
    name: &'static str,
    /// The SQL expression giving a row's batch (the session index it was
    /// inserted under).
    batch: &'static str,
    store: &'static Store<M>,
    load: fn(&mut PgConnection) -> QueryResult<Vec<M>>,
    key: fn(&M) -> K,
    /// What a handler must receive for a row Diesel loads: the row itself,
    /// but for the documented exceptions.
    expect: fn(&M) -> M,
    /// Equality (floats by bits; numeric scale).
    same: fn(&M, &M) -> bool,
}

fn identity<M: Clone>(row: &M) -> M {
    row.clone()
}

fn equal<M: PartialEq>(a: &M, b: &M) -> bool {
    a == b
}

#[derive(QueryableByName)]
struct Pending {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    channel: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
}

/// Writes the cases (`write(conn, batch)` once per session), updates every
/// row from the next session, waits for the handlers and compares what they
/// received with the table as Diesel loads it. Returns the rows as loaded
/// after the insert, for the test's own checks.
fn round_trip<M, K>(
    db: &TestDb,
    table: &Fixture<M, K>,
    sessions: &[&str],
    write: impl Fn(&mut PgConnection, usize),
) -> BTreeMap<K, M>
where
    M: Clone + Debug + 'static,
    K: Ord + Clone + Debug,
{
    let handle = spawn_listening(pgpubsub::Listener::new(db.url()));
    for (batch, settings) in sessions.iter().enumerate() {
        let mut conn = session(db, settings);
        write(&mut conn, batch);
    }
    let mut conn = db.conn();
    let by_key = |rows: Vec<M>| -> BTreeMap<K, M> {
        rows.into_iter()
            .map(|row| ((table.key)(&row), row))
            .collect()
    };
    let before = by_key((table.load)(&mut conn).unwrap());
    assert!(!before.is_empty(), "no rows were written to {}", table.name);
    let mut updated = 0;
    for batch in 0..sessions.len() {
        let mut conn = session(db, sessions[(batch + 1) % sessions.len()]);
        updated += diesel::sql_query(format!(
            "UPDATE {} SET rev = rev + 1 WHERE {} = {batch}",
            table.name, table.batch
        ))
        .execute(&mut conn)
        .unwrap();
    }
    assert_eq!(
        updated,
        before.len(),
        "every row of {} is updated once",
        table.name
    );
    let after = by_key((table.load)(&mut conn).unwrap());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );

    // One insert and one update per row. A row that fails to decode counts
    // as a failed attempt (stored notifications keep the error; broadcasts
    // log it), so waiting stops as soon as every event is accounted for.
    let events = 2 * before.len();
    let failed = || usize::try_from(handle.stats().failed.load(Ordering::Relaxed)).unwrap();
    let complete = wait_until(WAIT, || {
        seen_in(table.store, db.name()) + failed() >= events
    }) && seen_in(table.store, db.name()) >= events;
    let failures = failed();
    let pending: Vec<String> = diesel::sql_query(
        "SELECT id, channel, attempts, left(last_error, 800) AS last_error \
         FROM pgpubsub_notification WHERE NOT broadcast ORDER BY id LIMIT 20",
    )
    .load::<Pending>(&mut conn)
    .unwrap()
    .into_iter()
    .map(|row| {
        format!(
            "notification {} of `{}`, {} attempt(s): {}",
            row.id,
            row.channel,
            row.attempts,
            row.last_error.unwrap_or_default()
        )
    })
    .collect();
    handle.shutdown().unwrap();
    let seen = take(table.store, db.name());

    let mut problems = Vec::new();
    if !complete {
        problems.push(format!(
            "{} of {events} handler calls arrived; failed attempts: {failures}; \
             notifications left (first 20): {pending:#?}",
            seen.len()
        ));
    }
    for (key, row) in &before {
        let mine: Vec<&Seen<M>> = seen
            .iter()
            .filter(|seen| (table.key)(&seen.new) == *key)
            .collect();
        let inserts: Vec<&&Seen<M>> = mine.iter().filter(|seen| seen.old.is_none()).collect();
        let updates: Vec<&&Seen<M>> = mine.iter().filter(|seen| seen.old.is_some()).collect();
        match inserts.as_slice() {
            [insert] => compare(
                &mut problems,
                table,
                &format!("{key:?} insert: new"),
                row,
                &insert.new,
            ),
            other => problems.push(format!("{key:?}: {} insert calls, expected 1", other.len())),
        }
        match updates.as_slice() {
            [update] => {
                if let Some(old) = &update.old {
                    compare(
                        &mut problems,
                        table,
                        &format!("{key:?} update: old"),
                        row,
                        old,
                    );
                }
                compare(
                    &mut problems,
                    table,
                    &format!("{key:?} update: new"),
                    &after[key],
                    &update.new,
                );
            }
            other => problems.push(format!("{key:?}: {} update calls, expected 1", other.len())),
        }
    }
    for stray in seen
        .iter()
        .filter(|seen| !before.contains_key(&(table.key)(&seen.new)))
    {
        problems.push(format!(
            "a call for an unknown row {:?}",
            (table.key)(&stray.new)
        ));
    }
    if !problems.is_empty() {
        let total = problems.len();
        let mut message = format!(
            "{total} problem(s) in the round trip through `{}`:\n",
            table.name
        );
        for problem in problems.iter().take(12) {
            message.push_str(problem);
            message.push('\n');
        }
        if total > 12 {
            message.push_str(&format!("... and {} more\n", total - 12));
        }
        panic!("{message}");
    }
    before
}

/// Records a difference between `loaded` (from the table) and `received`.
fn compare<M: Debug, K>(
    problems: &mut Vec<String>,
    table: &Fixture<M, K>,
    what: &str,
    loaded: &M,
    received: &M,
) {
    let expected = (table.expect)(loaded);
    if (table.same)(&expected, received) {
        return;
    }
    let expected_text = format!("{expected:#?}");
    let received_text = format!("{received:#?}");
    let lines: Vec<String> = expected_text
        .lines()
        .zip(received_text.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("    table:    {}\n    received: {}", a.trim(), b.trim()))
        .collect();
    if lines.is_empty() || expected_text.lines().count() != received_text.lines().count() {
        problems.push(format!(
            "{what} differs:\n  table:    {expected:?}\n  received: {received:?}"
        ));
    } else {
        problems.push(format!("{what} differs:\n{}", lines.join("\n")));
    }
}

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

// Column orders differ from the models' field orders on purpose.
const SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('happy', 'so-so', 'Sad Face', 'NULL');
CREATE TABLE scalars (
    label text NOT NULL,
    id bigint PRIMARY KEY,
    rev integer NOT NULL DEFAULT 0,
    i2 smallint NOT NULL,
    i4 integer NOT NULL,
    i8 bigint NOT NULL,
    i4_n integer,
    num numeric NOT NULL,
    num_n numeric,
    txt text NOT NULL,
    vc varchar(40) NOT NULL,
    ch char(8) NOT NULL,
    ch_n char(3),
    flag boolean NOT NULL,
    flag_n boolean,
    uid uuid NOT NULL,
    uid_n uuid,
    bin bytea NOT NULL,
    bin_n bytea,
    cash money NOT NULL,
    "Display Name" text
);
CREATE TABLE floats (
    id bigint PRIMARY KEY,
    rev integer NOT NULL DEFAULT 0,
    f4 real NOT NULL,
    f8 double precision NOT NULL,
    f4_n real,
    f8_n double precision,
    f4_list real[] NOT NULL,
    f8_list double precision[] NOT NULL
);
CREATE TABLE moments (
    id bigint PRIMARY KEY,
    rev integer NOT NULL DEFAULT 0,
    at timestamptz NOT NULL,
    at_n timestamptz,
    local timestamp NOT NULL,
    day date NOT NULL,
    day_n date,
    clock time NOT NULL,
    span interval NOT NULL,
    span_n interval,
    spans interval[] NOT NULL,
    at_raw timestamptz NOT NULL,
    local_raw timestamp NOT NULL,
    day_raw date NOT NULL
);
CREATE TABLE documents (
    id bigint PRIMARY KEY,
    rev integer NOT NULL DEFAULT 0,
    doc json NOT NULL,
    doc_b jsonb NOT NULL,
    doc_n json,
    doc_bn jsonb
);
CREATE TABLE json_lists (
    id bigint PRIMARY KEY,
    rev integer NOT NULL DEFAULT 0,
    docs json[] NOT NULL,
    docs_b jsonb[] NOT NULL
);
CREATE TABLE addresses (
    id bigint PRIMARY KEY,
    rev integer NOT NULL DEFAULT 0,
    net inet NOT NULL,
    net_c cidr NOT NULL,
    ip inet NOT NULL,
    ip_c cidr NOT NULL,
    net_n inet,
    mac macaddr NOT NULL,
    mac8 macaddr8 NOT NULL
);
CREATE TABLE collections (
    id bigint PRIMARY KEY,
    rev integer NOT NULL DEFAULT 0,
    ints integer[] NOT NULL,
    words text[] NOT NULL,
    longs bigint[],
    mood mood NOT NULL,
    moods mood[] NOT NULL,
    mood_n mood
);
CREATE TABLE pairs (
    label text NOT NULL,
    rev integer NOT NULL DEFAULT 0,
    seq bigint NOT NULL,
    note text,
    tenant integer NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE TABLE blobs (id bigint PRIMARY KEY, rev integer NOT NULL DEFAULT 0, body text NOT NULL, data bytea NOT NULL);
CREATE TABLE casts (id bigint PRIMARY KEY, rev integer NOT NULL DEFAULT 0, body text NOT NULL, data bytea NOT NULL);
CREATE TABLE spans (
    id bigint PRIMARY KEY,
    rev integer NOT NULL DEFAULT 0,
    during tstzrange NOT NULL,
    days daterange NOT NULL,
    local tsrange NOT NULL,
    nums int4range NOT NULL
);
"#;

// ---------------------------------------------------------------------------
// Scalars: integers, numeric, text, bool, uuid, bytea, money, renames
// ---------------------------------------------------------------------------

diesel::table! {
    scalars (id) {
        id -> BigInt,
        rev -> Integer,
        i2 -> SmallInt,
        i4 -> Integer,
        i8 -> BigInt,
        i4_n -> Nullable<Integer>,
        num -> Numeric,
        num_n -> Nullable<Numeric>,
        txt -> Text,
        vc -> Varchar,
        ch -> Bpchar,
        ch_n -> Nullable<Bpchar>,
        flag -> Bool,
        flag_n -> Nullable<Bool>,
        uid -> Uuid,
        uid_n -> Nullable<Uuid>,
        bin -> Bytea,
        bin_n -> Nullable<Bytea>,
        cash -> Money,
        label -> Text,
        #[sql_name = "Display Name"]
        display_name -> Nullable<Text>,
    }
}

#[derive(Queryable, Selectable, Identifiable, Insertable, Debug, Clone, PartialEq)]
#[diesel(table_name = scalars, check_for_backend(diesel::pg::Pg))]
pub struct Scalar {
    pub id: i64,
    pub rev: i32,
    pub i2: i16,
    pub i4: i32,
    pub i8: i64,
    pub i4_n: Option<i32>,
    pub num: BigDecimal,
    pub num_n: Option<BigDecimal>,
    pub txt: String,
    pub vc: String,
    pub ch: String,
    pub ch_n: Option<String>,
    pub flag: bool,
    pub flag_n: Option<bool>,
    pub uid: Uuid,
    pub uid_n: Option<Uuid>,
    pub bin: Vec<u8>,
    pub bin_n: Option<Vec<u8>>,
    pub cash: PgMoney,
    /// A Diesel rename: the SQL column is `label`.
    #[diesel(column_name = label)]
    pub title: String,
    /// A column whose SQL name needs quoting.
    pub display_name: Option<String>,
}

#[pgpubsub::trigger_channel(model = Scalar, lock_notifications)]
pub struct ScalarChannel;

static SCALARS: Store<Scalar> = Mutex::new(Vec::new());

#[pgpubsub::post_save_listener(ScalarChannel)]
fn scalar_saved(old: Option<Scalar>, new: Scalar, conn: &mut PgConnection) -> QueryResult<()> {
    remember(&SCALARS, conn, old, new)
}

fn decimal(text: &str) -> BigDecimal {
    BigDecimal::from_str(text).unwrap()
}

/// `BigDecimal`'s `==` compares values (`1.5 == 1.500`); the display scale
/// PostgreSQL keeps must survive too.
fn same_decimal(a: &BigDecimal, b: &BigDecimal) -> bool {
    a == b && a.to_string() == b.to_string()
}

fn same_scalar(a: &Scalar, b: &Scalar) -> bool {
    a == b
        && same_decimal(&a.num, &b.num)
        && match (&a.num_n, &b.num_n) {
            (Some(a), Some(b)) => same_decimal(a, b),
            (None, None) => true,
            _ => false,
        }
}

const NUMERICS: [&str; 10] = [
    // 30 significant digits.
    "123456789012345.678901234567890",
    "-0.000000000000000000000000000001",
    "1e400",
    "-1.5e399",
    "0",
    "1.500",
    "99999999999999999999999999999.9",
    "-987654321098765432109876543210",
    "0.000",
    "3.141592653589793238462643383279",
];

const TEXTS: [&str; 10] = [
    "",
    "plain",
    "quote \" and backslash \\ and \\x41",
    "unicode é ✓ 😀 \u{200b}",
    "  leading and trailing  ",
    "line\nbreak\ttab\rreturn",
    "control \u{1} \u{7f}",
    "{\"looks\": \"like json\"}",
    "NULL",
    "'single' quotes",
];

fn bytes_cases() -> Vec<Vec<u8>> {
    vec![
        vec![0x00, 0xff, 0x80],
        Vec::new(),
        b"\\x41".to_vec(),
        b"\\\\".to_vec(),
        (0..=255).collect(),
        vec![0xc3, 0x28, 0xa0, 0xa1],
        vec![0x80; 10],
        b"'\"".to_vec(),
    ]
}

fn scalar_cases(batch: usize) -> Vec<Scalar> {
    let i2s = [i16::MIN, i16::MAX, 0, -1, 1];
    let i4s = [i32::MIN, i32::MAX, 0, -1, 1, 42];
    let i8s = [i64::MIN, i64::MAX, 0, -1, 1, 9_007_199_254_740_993];
    let chars = ["ab      ", "        ", "12345678", "é       ", "a b     "];
    let uuids = [
        Uuid::nil(),
        Uuid::max(),
        Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
    ];
    let money = [i64::MIN, i64::MAX, 0, -1, 123_456];
    let bytes = bytes_cases();
    (0..12)
        .map(|case| {
            let some = case % 2 == 0;
            Scalar {
                id: id(batch, case),
                rev: 0,
                i2: pick(&i2s, case),
                i4: pick(&i4s, case),
                i8: pick(&i8s, case),
                i4_n: some.then_some(pick(&i4s, case + 1)),
                num: decimal(pick(&NUMERICS, case)),
                num_n: some.then(|| decimal(pick(&NUMERICS, case + 3))),
                txt: pick(&TEXTS, case).to_owned(),
                vc: pick(&TEXTS, case + 1).to_owned(),
                ch: pick(&chars, case).to_owned(),
                ch_n: some.then(|| "x  ".to_owned()),
                flag: some,
                flag_n: [Some(true), Some(false), None][case % 3],
                uid: pick(&uuids, case),
                uid_n: some.then(|| pick(&uuids, case + 1)),
                bin: pick(&bytes, case),
                bin_n: some.then(|| pick(&bytes, case + 1)),
                cash: PgMoney(pick(&money, case)),
                title: pick(&TEXTS, case + 2).to_owned(),
                display_name: (!some).then(|| pick(&TEXTS, case + 3).to_owned()),
            }
        })
        .collect()
}

/// The case written as SQL text (not bound in binary): padding added by
/// `char(n)`, numeric literals, bytea literals, money text.
const SCALAR_LITERAL: &str = r#"INSERT INTO scalars
    (id, label, i2, i4, i8, num, txt, vc, ch, ch_n, flag, uid, bin, cash, "Display Name")
VALUES ($1, 'literal', -32768, 2147483647, -9223372036854775808, 1e400, 'tab	here', 'vc', 'ab', 'x',
    true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff80', '-92233720368547758.08', 'Ünïcödé')"#;

#[test]
fn integers_numerics_text_bool_uuid_bytea_and_money_round_trip() {
    let db = TestDb::new(SCHEMA);
    let table = Fixture {
        name: "scalars",
        batch: "id / 1000",
        store: &SCALARS,
        load: |conn| scalars::table.select(Scalar::as_select()).load(conn),
        key: |row| row.id,
        expect: identity,
        same: same_scalar,
    };
    let before = round_trip(&db, &table, &SESSIONS, |conn, batch| {
        diesel::insert_into(scalars::table)
            .values(&scalar_cases(batch))
            .execute(conn)
            .unwrap();
        diesel::sql_query(SCALAR_LITERAL)
            .bind::<BigInt, _>(id(batch, 999))
            .execute(conn)
            .unwrap();
    });
    // The cases are what was meant (so the comparison above means something).
    for batch in 0..SESSIONS.len() {
        for case in scalar_cases(batch) {
            // By value: `1e400` is stored with scale 0, not BigDecimal's -400.
            assert_eq!(before[&case.id], case, "the table holds the case exactly");
        }
        // The display scale is in the table, so the round trip's scale
        // comparison means something.
        assert_eq!(before[&id(batch, 5)].num.to_string(), "1.500");
        let literal = &before[&id(batch, 999)];
        assert_eq!(literal.ch, "ab      ", "char(8) pads");
        assert_eq!(literal.ch_n.as_deref(), Some("x  "), "char(3) pads");
        assert_eq!(literal.num, decimal("1e400"));
        assert_eq!(literal.bin, vec![0x00, 0xff, 0x80]);
        assert_eq!(literal.cash, PgMoney(i64::MIN));
        assert_eq!(literal.display_name.as_deref(), Some("Ünïcödé"));
    }
}

// ---------------------------------------------------------------------------
// Floats
// ---------------------------------------------------------------------------

diesel::table! {
    floats (id) {
        id -> BigInt,
        rev -> Integer,
        f4 -> Float,
        f8 -> Double,
        f4_n -> Nullable<Float>,
        f8_n -> Nullable<Double>,
        f4_list -> Array<Float>,
        f8_list -> Array<Double>,
    }
}

#[derive(Queryable, Selectable, Identifiable, Insertable, Debug, Clone)]
#[diesel(table_name = floats, check_for_backend(diesel::pg::Pg))]
pub struct FloatRow {
    pub id: i64,
    pub rev: i32,
    pub f4: f32,
    pub f8: f64,
    pub f4_n: Option<f32>,
    pub f8_n: Option<f64>,
    pub f4_list: Vec<f32>,
    pub f8_list: Vec<f64>,
}

fn same_f32(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

fn same_f64(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// Bit for bit (so `0.0 != -0.0`), NaN equal to NaN.
impl PartialEq for FloatRow {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.rev == other.rev
            && same_f32(self.f4, other.f4)
            && same_f64(self.f8, other.f8)
            && match (self.f4_n, other.f4_n) {
                (Some(a), Some(b)) => same_f32(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
            && match (self.f8_n, other.f8_n) {
                (Some(a), Some(b)) => same_f64(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
            && self.f4_list.len() == other.f4_list.len()
            && self
                .f4_list
                .iter()
                .zip(&other.f4_list)
                .all(|(a, b)| same_f32(*a, *b))
            && self.f8_list.len() == other.f8_list.len()
            && self
                .f8_list
                .iter()
                .zip(&other.f8_list)
                .all(|(a, b)| same_f64(*a, *b))
    }
}

#[pgpubsub::trigger_channel(model = FloatRow, lock_notifications)]
pub struct FloatChannel;

static FLOATS: Store<FloatRow> = Mutex::new(Vec::new());

#[pgpubsub::post_save_listener(FloatChannel)]
fn float_saved(old: Option<FloatRow>, new: FloatRow, conn: &mut PgConnection) -> QueryResult<()> {
    remember(&FLOATS, conn, old, new)
}

const F8S: [f64; 18] = [
    0.0,
    -0.0,
    1.5,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::MAX,
    f64::MIN,
    f64::MIN_POSITIVE,
    5e-324,
    -5e-324,
    0.300_000_000_000_000_04,
    f64::EPSILON,
    1e-310,
    1.0 / 3.0,
    123_456_789.123_456_78,
    9_007_199_254_740_992.0,
    -2.5e-300,
];

const F4S: [f32; 14] = [
    0.0,
    -0.0,
    1.5,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MAX,
    f32::MIN,
    f32::MIN_POSITIVE,
    1e-45,
    0.1,
    1.0 / 3.0,
    16_777_216.0,
    f32::EPSILON,
];

fn float_cases(batch: usize) -> Vec<FloatRow> {
    (0..F8S.len())
        .map(|case| FloatRow {
            id: id(batch, case),
            rev: 0,
            f4: pick(&F4S, case),
            f8: pick(&F8S, case),
            f4_n: (case % 3 != 0).then(|| pick(&F4S, case + 5)),
            f8_n: (case % 3 != 0).then(|| pick(&F8S, case + 7)),
            f4_list: vec![pick(&F4S, case), pick(&F4S, case + 1), f32::NAN],
            f8_list: vec![pick(&F8S, case), pick(&F8S, case + 1), f64::NAN, 1.0],
        })
        .collect()
}

/// The documented exception: the trigger's `to_jsonb` turns a float into a
/// JSON number (a PostgreSQL `numeric`, which has no negative zero), so
/// `-0.0` arrives as `0.0`. Every other value, NaN and the infinities
/// included, arrives bit for bit.
fn without_negative_zero(row: &FloatRow) -> FloatRow {
    fn f4(value: f32) -> f32 {
        if value == 0.0 {
            0.0
        } else {
            value
        }
    }
    fn f8(value: f64) -> f64 {
        if value == 0.0 {
            0.0
        } else {
            value
        }
    }
    FloatRow {
        f4: f4(row.f4),
        f8: f8(row.f8),
        f4_n: row.f4_n.map(f4),
        f8_n: row.f8_n.map(f8),
        f4_list: row.f4_list.iter().copied().map(f4).collect(),
        f8_list: row.f8_list.iter().copied().map(f8).collect(),
        ..row.clone()
    }
}

fn float_table() -> Fixture<FloatRow, i64> {
    Fixture {
        name: "floats",
        batch: "id / 1000",
        store: &FLOATS,
        load: |conn| floats::table.select(FloatRow::as_select()).load(conn),
        key: |row| row.id,
        expect: without_negative_zero,
        same: equal,
    }
}

fn write_floats(conn: &mut PgConnection, batch: usize) {
    diesel::insert_into(floats::table)
        .values(&float_cases(batch))
        .execute(conn)
        .unwrap();
}

#[test]
fn floats_round_trip_bit_for_bit_but_for_negative_zero() {
    let db = TestDb::new(SCHEMA);
    let before = round_trip(&db, &float_table(), &SESSIONS, write_floats);
    for batch in 0..SESSIONS.len() {
        for case in float_cases(batch) {
            assert_eq!(before[&case.id], case, "the table holds the case exactly");
        }
        // -0.0 really is stored with its sign: the exception is real.
        assert_eq!(before[&id(batch, 1)].f8.to_bits(), (-0.0f64).to_bits());
        assert_eq!(before[&id(batch, 1)].f4.to_bits(), (-0.0f32).to_bits());
    }
}

/// `extra_float_digits` is a session setting like the others (clients such
/// as pg_dump set it, some drivers set it to 0): float output under
/// `extra_float_digits <= 0` is rounded to 15 (`double`) or 6 (`real`)
/// significant digits, so `to_jsonb` in the trigger loses bits (and rounds
/// `f64::MAX` up past the range of `double precision`).
#[test]
fn floats_written_with_extra_float_digits_0_keep_every_bit() {
    let db = TestDb::new(SCHEMA);
    let sessions = [
        "SET TimeZone = 'UTC'; SET extra_float_digits = 0",
        "SET TimeZone = 'Asia/Kolkata'; SET extra_float_digits = 0",
    ];
    round_trip(&db, &float_table(), &sessions, write_floats);
}

// ---------------------------------------------------------------------------
// Dates, times, timestamps, intervals
// ---------------------------------------------------------------------------

diesel::table! {
    moments (id) {
        id -> BigInt,
        rev -> Integer,
        at -> Timestamptz,
        at_n -> Nullable<Timestamptz>,
        local -> Timestamp,
        day -> Date,
        day_n -> Nullable<Date>,
        clock -> Time,
        span -> Interval,
        span_n -> Nullable<Interval>,
        spans -> Array<Interval>,
        at_raw -> Timestamptz,
        local_raw -> Timestamp,
        day_raw -> Date,
    }
}

#[derive(Queryable, Selectable, Identifiable, Insertable, Debug, Clone, PartialEq)]
#[diesel(table_name = moments, check_for_backend(diesel::pg::Pg))]
pub struct Moment {
    pub id: i64,
    pub rev: i32,
    pub at: DateTime<Utc>,
    pub at_n: Option<DateTime<Utc>>,
    pub local: NaiveDateTime,
    pub day: NaiveDate,
    pub day_n: Option<NaiveDate>,
    pub clock: NaiveTime,
    pub span: PgInterval,
    pub span_n: Option<PgInterval>,
    pub spans: Vec<PgInterval>,
    /// Raw microseconds: `infinity`/`-infinity`, which chrono cannot hold.
    pub at_raw: PgTimestamp,
    pub local_raw: PgTimestamp,
    pub day_raw: PgDate,
}

#[pgpubsub::trigger_channel(model = Moment, lock_notifications)]
pub struct MomentChannel;

static MOMENTS: Store<Moment> = Mutex::new(Vec::new());

#[pgpubsub::post_save_listener(MomentChannel)]
fn moment_saved(old: Option<Moment>, new: Moment, conn: &mut PgConnection) -> QueryResult<()> {
    remember(&MOMENTS, conn, old, new)
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap()
}

fn time(hour: u32, minute: u32, second: u32, micro: u32) -> NaiveTime {
    NaiveTime::from_hms_micro_opt(hour, minute, second, micro).unwrap()
}

fn datetime(day: NaiveDate, clock: NaiveTime) -> NaiveDateTime {
    day.and_time(clock)
}

fn interval(months: i32, days: i32, microseconds: i64) -> PgInterval {
    PgInterval::new(microseconds, days, months)
}

const SECOND: i64 = 1_000_000;

fn local_cases() -> Vec<NaiveDateTime> {
    vec![
        datetime(date(2024, 2, 29), time(12, 34, 56, 789_012)),
        // 1850: Asia/Kolkata's offset was +05:53:28 (local mean time).
        datetime(date(1850, 1, 1), time(0, 0, 0, 0)),
        // 44 BC (year -43 in chrono's proleptic count).
        datetime(date(-43, 3, 15), time(12, 0, 0, 1)),
        datetime(date(1, 1, 1), time(0, 0, 0, 0)),
        // 1 BC.
        datetime(date(0, 12, 31), time(23, 59, 59, 999_999)),
        // PostgreSQL's first day: 4714-11-24 BC.
        datetime(date(-4713, 11, 24), time(0, 0, 0, 0)),
        datetime(date(9999, 12, 31), time(23, 59, 59, 999_999)),
        datetime(date(12345, 6, 7), time(1, 2, 3, 1)),
        datetime(date(1970, 1, 1), time(0, 0, 0, 0)),
        datetime(date(2021, 3, 28), time(1, 30, 0, 0)),
        datetime(date(2000, 1, 1), time(0, 0, 0, 0)),
        datetime(date(262_142, 12, 31), time(23, 59, 59, 999_999)),
    ]
}

fn span_cases() -> Vec<PgInterval> {
    vec![
        // '-1 day -02:03:04'
        interval(0, -1, -(2 * 3600 + 3 * 60 + 4) * SECOND),
        // '-1 year +2 months -3 days'
        interval(-10, -3, 0),
        // '1 day -02:03:04.5'
        interval(0, 1, -(2 * 3600 + 3 * 60 + 4) * SECOND - SECOND / 2),
        // '-1 day +02:03:04'
        interval(0, -1, (2 * 3600 + 3 * 60 + 4) * SECOND),
        // '1 year 2 mons 3 days 04:05:06.789012'
        interval(14, 3, (4 * 3600 + 5 * 60 + 6) * SECOND + 789_012),
        interval(0, 0, -1),
        interval(0, 0, 0),
        // '-178000000 years', '178000000 years'
        interval(-2_136_000_000, 0, 0),
        interval(2_136_000_000, 0, 0),
        interval(0, i32::MAX, 0),
        interval(0, 0, i64::MAX),
        interval(0, 0, -i64::MAX),
        // '-1 mon +1 day -00:00:01', '1 mon -1 day +00:00:01'
        interval(-1, 1, -SECOND),
        interval(1, -1, SECOND),
        // '-1.5 years'
        interval(-18, 0, 0),
        interval(0, 0, -SECOND / 2),
    ]
}

fn moment_cases(batch: usize) -> Vec<Moment> {
    let locals = local_cases();
    let days = [
        date(2000, 2, 29),
        date(-43, 3, 15),
        date(-4713, 11, 24),
        date(1, 1, 1),
        date(0, 1, 1),
        date(262_142, 12, 31),
        date(1582, 10, 10),
        date(9999, 12, 31),
    ];
    let clocks = [
        time(0, 0, 0, 0),
        time(23, 59, 59, 999_999),
        time(12, 34, 56, 1),
        time(4, 5, 6, 500_000),
    ];
    let spans = span_cases();
    let raw_stamps = [
        PgTimestamp(i64::MAX),
        PgTimestamp(i64::MIN),
        PgTimestamp(0),
        PgTimestamp(-1),
    ];
    let raw_days = [PgDate(i32::MAX), PgDate(i32::MIN), PgDate(0), PgDate(-1)];
    (0..spans.len())
        .map(|case| {
            let some = case % 2 == 1;
            Moment {
                id: id(batch, case),
                rev: 0,
                at: pick(&locals, case).and_utc(),
                at_n: some.then(|| pick(&locals, case + 1).and_utc()),
                local: pick(&locals, case + 2),
                day: pick(&days, case),
                day_n: some.then(|| pick(&days, case + 1)),
                clock: pick(&clocks, case),
                span: pick(&spans, case),
                span_n: some.then(|| pick(&spans, case + 1)),
                spans: vec![pick(&spans, case + 2), pick(&spans, case + 3)],
                at_raw: pick(&raw_stamps, case),
                local_raw: pick(&raw_stamps, case + 1),
                day_raw: pick(&raw_days, case),
            }
        })
        .collect()
}

/// A row written as SQL text: the literals are read in the writer's session
/// (the timestamptz in its time zone), and the intervals are written as
/// unambiguous literals that parse alike under every IntervalStyle.
const MOMENT_LITERAL: &str = "INSERT INTO moments
    (id, at, local, day, clock, span, span_n, spans, at_raw, local_raw, day_raw)
VALUES ($1, '1850-01-01 00:00:00', '0044-03-15 12:00:00 BC', '0044-03-15 BC', '23:59:59.999999',
    '-1 day -02:03:04', '-1 year +2 months -3 days',
    ARRAY['-1 day -02:03:04', '1 day -02:03:04.5', '@ 1 hour ago']::interval[],
    'infinity', '-infinity', '-infinity')";

fn moment_table() -> Fixture<Moment, i64> {
    Fixture {
        name: "moments",
        batch: "id / 1000",
        store: &MOMENTS,
        load: |conn| moments::table.select(Moment::as_select()).load(conn),
        key: |row| row.id,
        expect: identity,
        same: equal,
    }
}

#[test]
fn timestamps_dates_times_and_intervals_round_trip() {
    let db = TestDb::new(SCHEMA);
    let before = round_trip(&db, &moment_table(), &SESSIONS, |conn, batch| {
        diesel::insert_into(moments::table)
            .values(&moment_cases(batch))
            .execute(conn)
            .unwrap();
        diesel::sql_query(MOMENT_LITERAL)
            .bind::<BigInt, _>(id(batch, 999))
            .execute(conn)
            .unwrap();
    });
    for batch in 0..SESSIONS.len() {
        for case in moment_cases(batch) {
            assert_eq!(before[&case.id], case, "the table holds the case exactly");
        }
        let literal = &before[&id(batch, 999)];
        assert_eq!(
            literal.span,
            interval(0, -1, -(2 * 3600 + 3 * 60 + 4) * SECOND)
        );
        assert_eq!(literal.span_n, Some(interval(-10, -3, 0)));
        assert_eq!(literal.local, datetime(date(-43, 3, 15), time(12, 0, 0, 0)));
        assert_eq!(literal.at_raw, PgTimestamp(i64::MAX));
        assert_eq!(literal.day_raw, PgDate(i32::MIN));
    }
    // The 1850 literal was read in each writer's zone: the instants differ.
    let kolkata = before[&id(1, 999)].at;
    assert_eq!(
        kolkata,
        datetime(date(1849, 12, 31), time(18, 6, 32, 0)).and_utc()
    );
}

/// `postgres_verbose` prints an interval of `i32::MIN` days as
/// `@ 2147483648 days ago`, which PostgreSQL's interval input rejects
/// ("interval field value out of range"): the row can be written but its
/// notification never decodes. The other styles print it readably.
#[test]
fn an_interval_of_i32_min_days_round_trips_under_every_interval_style() {
    let db = TestDb::new(SCHEMA);
    round_trip(&db, &moment_table(), &SESSIONS, |conn, batch| {
        let mut row = moment_cases(batch).remove(0);
        row.span = interval(0, i32::MIN, 0);
        row.span_n = Some(interval(i32::MIN, i32::MIN, -i64::MAX));
        diesel::insert_into(moments::table)
            .values(&row)
            .execute(conn)
            .unwrap();
    });
}

// ---------------------------------------------------------------------------
// json and jsonb
// ---------------------------------------------------------------------------

diesel::table! {
    documents (id) {
        id -> BigInt,
        rev -> Integer,
        doc -> Json,
        doc_b -> Jsonb,
        doc_n -> Nullable<Json>,
        doc_bn -> Nullable<Jsonb>,
    }
}

#[derive(Queryable, Selectable, Identifiable, Debug, Clone, PartialEq)]
#[diesel(table_name = documents, check_for_backend(diesel::pg::Pg))]
pub struct Document {
    pub id: i64,
    pub rev: i32,
    pub doc: Value,
    pub doc_b: Value,
    pub doc_n: Option<Value>,
    pub doc_bn: Option<Value>,
}

#[pgpubsub::trigger_channel(model = Document, lock_notifications)]
pub struct DocumentChannel;

static DOCUMENTS: Store<Document> = Mutex::new(Vec::new());

#[pgpubsub::post_save_listener(DocumentChannel)]
fn document_saved(
    old: Option<Document>,
    new: Document,
    conn: &mut PgConnection,
) -> QueryResult<()> {
    remember(&DOCUMENTS, conn, old, new)
}

const JSON_TEXTS: [&str; 12] = [
    r#"{"a": 1e2}"#,
    "null",
    "-0",
    r#"{"a": 1, "a": 2}"#,
    r#"[1, 2.50, "x", true, null]"#,
    r#""\u00e9\ud83d\ude00""#,
    "12345678901234567890",
    r#"{ "nested" : { "deep" : [ [ ] ] } }"#,
    "1.0",
    r#""null""#,
    "0.1",
    "-1.5E-7",
];

/// `(doc_n, doc_bn)`: SQL NULL, JSON null, and a value.
const NULLABLE_JSON: [(Option<&str>, Option<&str>); 3] = [
    (None, None),
    (Some("null"), Some("null")),
    (Some(r#"{"b": 2E+1}"#), Some("[]")),
];

fn document_table() -> Fixture<Document, i64> {
    Fixture {
        name: "documents",
        batch: "id / 1000",
        store: &DOCUMENTS,
        load: |conn| documents::table.select(Document::as_select()).load(conn),
        key: |row| row.id,
        expect: identity,
        same: equal,
    }
}

fn insert_document(
    conn: &mut PgConnection,
    id: i64,
    doc: &str,
    doc_b: &str,
    nullable: (Option<&str>, Option<&str>),
) -> QueryResult<usize> {
    diesel::sql_query(
        "INSERT INTO documents (id, doc, doc_b, doc_n, doc_bn) VALUES ($1, $2::json, $3::jsonb, $4::json, $5::jsonb)",
    )
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(doc)
    .bind::<Text, _>(doc_b)
    .bind::<Nullable<Text>, _>(nullable.0)
    .bind::<Nullable<Text>, _>(nullable.1)
    .execute(conn)
}

#[test]
fn json_and_jsonb_arrive_as_diesel_loads_them_json_null_apart_from_sql_null() {
    let db = TestDb::new(SCHEMA);
    let before = round_trip(&db, &document_table(), &SESSIONS, |conn, batch| {
        for case in 0..JSON_TEXTS.len() {
            insert_document(
                conn,
                id(batch, case),
                pick(&JSON_TEXTS, case),
                pick(&JSON_TEXTS, case + 5),
                pick(&NULLABLE_JSON, case),
            )
            .unwrap();
        }
    });
    // The cases mean what they say: `1e2` in a json column is a float to
    // Diesel (jsonb would have made it the integer 100), JSON null is
    // `Some(Value::Null)`, SQL NULL is `None`.
    let first = &before[&id(0, 0)];
    assert!(first.doc["a"].is_f64(), "{:?}", first.doc);
    assert_eq!(first.doc_n, None);
    assert_eq!(first.doc_bn, None);
    let second = &before[&id(0, 1)];
    assert_eq!(second.doc, Value::Null);
    assert_eq!(second.doc_n, Some(Value::Null));
    assert_eq!(second.doc_bn, Some(Value::Null));
}

/// `json` keeps its text, and `"\u0000"` is valid JSON that a `json` column
/// accepts, but `to_jsonb(NEW)` in the trigger converts the column to jsonb,
/// which rejects it ("unsupported Unicode escape sequence"): the writer's
/// INSERT itself fails.
#[test]
fn a_json_column_holding_a_u0000_escape_can_be_written_and_arrives_intact() {
    let db = TestDb::new(SCHEMA);
    round_trip(&db, &document_table(), &SESSIONS[..2], |conn, batch| {
        insert_document(
            conn,
            id(batch, 0),
            r#"{"a": "nul \u0000 inside"}"#,
            "{}",
            (Some(r#""\u0000""#), None),
        )
        .unwrap_or_else(|err| {
            panic!("the write of a json value with \\u0000 failed (the trigger's to_jsonb): {err}")
        });
    });
}

diesel::table! {
    json_lists (id) {
        id -> BigInt,
        rev -> Integer,
        docs -> Array<Nullable<Json>>,
        docs_b -> Array<Nullable<Jsonb>>,
    }
}

#[derive(Queryable, Selectable, Identifiable, Debug, Clone, PartialEq)]
#[diesel(table_name = json_lists, check_for_backend(diesel::pg::Pg))]
pub struct JsonList {
    pub id: i64,
    pub rev: i32,
    pub docs: Vec<Option<Value>>,
    pub docs_b: Vec<Option<Value>>,
}

#[pgpubsub::trigger_channel(model = JsonList, lock_notifications)]
pub struct JsonListChannel;

static JSON_LISTS: Store<JsonList> = Mutex::new(Vec::new());

#[pgpubsub::post_save_listener(JsonListChannel)]
fn json_list_saved(
    old: Option<JsonList>,
    new: JsonList,
    conn: &mut PgConnection,
) -> QueryResult<()> {
    remember(&JSON_LISTS, conn, old, new)
}

/// Arrays of `json`/`jsonb` get no exact text: `to_jsonb` turns a JSON
/// `null` element into the same `null` as an SQL NULL element (so
/// `Some(Value::Null)` arrives as `None`), and normalizes `json` elements
/// (`1e2` becomes `100`, an integer to serde_json, not the float Diesel
/// loads).
#[test]
fn json_and_jsonb_arrays_keep_json_null_elements_and_number_text() {
    let db = TestDb::new(SCHEMA);
    let table = Fixture {
        name: "json_lists",
        batch: "id / 1000",
        store: &JSON_LISTS,
        load: |conn| json_lists::table.select(JsonList::as_select()).load(conn),
        key: |row| row.id,
        expect: identity,
        same: equal,
    };
    let before = round_trip(&db, &table, &SESSIONS[..2], |conn, batch| {
        diesel::sql_query(
            r#"INSERT INTO json_lists (id, docs, docs_b) VALUES
                ($1, ARRAY['{"a": 1e2}'::json, 'null'::json, NULL], ARRAY['null'::jsonb, NULL, '{"b": [1.50]}'::jsonb]),
                ($1 + 1, ARRAY[]::json[], ARRAY[]::jsonb[])"#,
        )
        .bind::<BigInt, _>(id(batch, 0))
        .execute(conn)
        .unwrap();
    });
    assert_eq!(before[&id(0, 0)].docs[1], Some(Value::Null));
    assert_eq!(before[&id(0, 0)].docs[2], None);
}

// ---------------------------------------------------------------------------
// Network addresses
// ---------------------------------------------------------------------------

diesel::table! {
    addresses (id) {
        id -> BigInt,
        rev -> Integer,
        net -> Inet,
        net_c -> Cidr,
        ip -> Inet,
        ip_c -> Cidr,
        net_n -> Nullable<Inet>,
        mac -> MacAddr,
        mac8 -> MacAddr8,
    }
}

#[derive(Queryable, Selectable, Identifiable, Insertable, Debug, Clone, PartialEq)]
#[diesel(table_name = addresses, check_for_backend(diesel::pg::Pg))]
pub struct Address {
    pub id: i64,
    pub rev: i32,
    /// `inet` through ipnetwork.
    pub net: IpNetwork,
    /// `cidr` through ipnetwork.
    pub net_c: IpNetwork,
    /// `inet` through ipnet.
    pub ip: IpNet,
    /// `cidr` through ipnet.
    pub ip_c: IpNet,
    pub net_n: Option<IpNetwork>,
    pub mac: [u8; 6],
    pub mac8: [u8; 8],
}

#[pgpubsub::trigger_channel(model = Address, lock_notifications)]
pub struct AddressChannel;

static ADDRESSES: Store<Address> = Mutex::new(Vec::new());

#[pgpubsub::post_save_listener(AddressChannel)]
fn address_saved(old: Option<Address>, new: Address, conn: &mut PgConnection) -> QueryResult<()> {
    remember(&ADDRESSES, conn, old, new)
}

const INETS: [&str; 8] = [
    "10.0.0.1/32",
    "10.1.2.3/8",
    "0.0.0.0/0",
    "255.255.255.255/32",
    "::1/128",
    "2001:db8::1/64",
    "::ffff:1.2.3.4/128",
    "fe80::/10",
];

const CIDRS: [&str; 7] = [
    "10.0.0.0/8",
    "192.168.1.0/24",
    "0.0.0.0/0",
    "10.0.0.1/32",
    "2001:db8::/32",
    "::/0",
    "::1/128",
];

fn address_cases(batch: usize) -> Vec<Address> {
    let macs = [
        [0, 0, 0, 0, 0, 0],
        [0xff; 6],
        [0x08, 0x00, 0x2b, 0x01, 0x02, 0x03],
    ];
    let mac8s = [
        [0; 8],
        [0xff; 8],
        [0x08, 0x00, 0x2b, 0x01, 0x02, 0x03, 0x04, 0x05],
    ];
    (0..INETS.len())
        .map(|case| Address {
            id: id(batch, case),
            rev: 0,
            net: pick(&INETS, case).parse().unwrap(),
            net_c: pick(&CIDRS, case).parse().unwrap(),
            ip: pick(&INETS, case + 3).parse().unwrap(),
            ip_c: pick(&CIDRS, case + 2).parse().unwrap(),
            net_n: (case % 2 == 0).then(|| pick(&INETS, case + 1).parse().unwrap()),
            mac: pick(&macs, case),
            mac8: pick(&mac8s, case),
        })
        .collect()
}

#[test]
fn inet_cidr_and_macaddr_round_trip_through_ipnetwork_and_ipnet() {
    let db = TestDb::new(SCHEMA);
    let table = Fixture {
        name: "addresses",
        batch: "id / 1000",
        store: &ADDRESSES,
        load: |conn| addresses::table.select(Address::as_select()).load(conn),
        key: |row| row.id,
        expect: identity,
        same: equal,
    };
    let before = round_trip(&db, &table, &SESSIONS, |conn, batch| {
        diesel::insert_into(addresses::table)
            .values(&address_cases(batch))
            .execute(conn)
            .unwrap();
    });
    for case in address_cases(0) {
        assert_eq!(before[&case.id], case, "the table holds the case exactly");
    }
    // A host address keeps its /32 (`to_jsonb` prints it as "10.0.0.1").
    assert_eq!(before[&id(0, 0)].net.prefix(), 32);
}

// ---------------------------------------------------------------------------
// Arrays and enums
// ---------------------------------------------------------------------------

/// A PostgreSQL enum whose labels are not the variants' snake case.
#[derive(diesel_derive_enum::DbEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[ExistingTypePath = "MoodType"]
pub enum Mood {
    Happy,
    #[db_rename = "so-so"]
    SoSo,
    #[db_rename = "Sad Face"]
    Sad,
    #[db_rename = "NULL"]
    Null,
}

/// The SQL type `mood`.
#[derive(diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
#[diesel(postgres_type(name = "mood"))]
pub struct MoodType;

diesel::table! {
    use diesel::sql_types::*;
    use super::MoodType;

    collections (id) {
        id -> BigInt,
        rev -> Integer,
        ints -> Array<Nullable<Integer>>,
        words -> Array<Nullable<Text>>,
        longs -> Nullable<Array<BigInt>>,
        mood -> MoodType,
        moods -> Array<MoodType>,
        mood_n -> Nullable<MoodType>,
    }
}

#[derive(Queryable, Selectable, Identifiable, Insertable, Debug, Clone, PartialEq)]
#[diesel(table_name = collections, check_for_backend(diesel::pg::Pg))]
pub struct Collection {
    pub id: i64,
    pub rev: i32,
    pub ints: Vec<Option<i32>>,
    pub words: Vec<Option<String>>,
    pub longs: Option<Vec<i64>>,
    pub mood: Mood,
    pub moods: Vec<Mood>,
    pub mood_n: Option<Mood>,
}

#[pgpubsub::trigger_channel(model = Collection, lock_notifications)]
pub struct CollectionChannel;

static COLLECTIONS: Store<Collection> = Mutex::new(Vec::new());

#[pgpubsub::post_save_listener(CollectionChannel)]
fn collection_saved(
    old: Option<Collection>,
    new: Collection,
    conn: &mut PgConnection,
) -> QueryResult<()> {
    remember(&COLLECTIONS, conn, old, new)
}

fn collection_cases(batch: usize) -> Vec<Collection> {
    let ints: Vec<Vec<Option<i32>>> = vec![
        vec![Some(1), None, Some(3)],
        Vec::new(),
        vec![None],
        vec![Some(i32::MIN), Some(i32::MAX)],
    ];
    let word = |text: &str| Some(text.to_owned());
    let words: Vec<Vec<Option<String>>> = vec![
        vec![word("NULL"), None, word("")],
        vec![word("a,b"), word("{}"), word("\"q\""), word("back\\slash")],
        Vec::new(),
        vec![word(" spaced "), word("é ✓"), word("{1,2}"), word("null")],
    ];
    let longs = [Some(vec![i64::MIN, 0, i64::MAX]), None, Some(Vec::new())];
    let moods = [Mood::Happy, Mood::SoSo, Mood::Sad, Mood::Null];
    (0..8)
        .map(|case| Collection {
            id: id(batch, case),
            rev: 0,
            ints: pick(&ints, case),
            words: pick(&words, case),
            longs: pick(&longs, case),
            mood: pick(&moods, case),
            moods: vec![pick(&moods, case + 1), pick(&moods, case + 2)],
            mood_n: (case % 2 == 1).then(|| pick(&moods, case + 3)),
        })
        .collect()
}

#[test]
fn arrays_with_null_elements_and_lower_bounds_and_renamed_enum_labels_round_trip() {
    let db = TestDb::new(SCHEMA);
    let table = Fixture {
        name: "collections",
        batch: "id / 1000",
        store: &COLLECTIONS,
        load: |conn| {
            collections::table
                .select(Collection::as_select())
                .load(conn)
        },
        key: |row| row.id,
        expect: identity,
        same: equal,
    };
    let before = round_trip(&db, &table, &SESSIONS, |conn, batch| {
        diesel::insert_into(collections::table)
            .values(&collection_cases(batch))
            .execute(conn)
            .unwrap();
        // Non-default lower bounds (Diesel's Vec ignores them).
        diesel::sql_query(
            "INSERT INTO collections (id, ints, words, longs, mood, moods, mood_n) VALUES \
             ($1, '[0:2]={1,2,3}', '[-5:-3]={a,NULL,\"NULL\"}', '[2:2]={7}', 'Sad Face', '{so-so,\"Sad Face\",\"NULL\"}', 'NULL')",
        )
        .bind::<BigInt, _>(id(batch, 999))
        .execute(conn)
        .unwrap();
    });
    for case in collection_cases(0) {
        assert_eq!(before[&case.id], case, "the table holds the case exactly");
    }
    let literal = &before[&id(0, 999)];
    assert_eq!(literal.ints, vec![Some(1), Some(2), Some(3)]);
    assert_eq!(
        literal.words,
        vec![Some("a".to_owned()), None, Some("NULL".to_owned())]
    );
    assert_eq!(literal.moods, vec![Mood::SoSo, Mood::Sad, Mood::Null]);
    assert_eq!(literal.mood_n, Some(Mood::Null));
    let mut conn = db.conn();
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM collections WHERE array_lower(ints, 1) = 0 AND array_lower(words, 1) = -5"
        ),
        i64::try_from(SESSIONS.len()).unwrap(),
        "the lower bounds are in the table"
    );
}

// ---------------------------------------------------------------------------
// Composite primary key and renamed columns
// ---------------------------------------------------------------------------

diesel::table! {
    pairs (tenant, seq) {
        tenant -> Integer,
        seq -> BigInt,
        rev -> Integer,
        label -> Text,
        note -> Nullable<Text>,
    }
}

#[derive(Queryable, Selectable, Identifiable, Insertable, Debug, Clone, PartialEq)]
#[diesel(table_name = pairs, primary_key(tenant, seq), check_for_backend(diesel::pg::Pg))]
pub struct Pair {
    pub tenant: i32,
    pub seq: i64,
    pub rev: i32,
    #[diesel(column_name = label)]
    pub name: String,
    pub note: Option<String>,
}

#[pgpubsub::trigger_channel(model = Pair, lock_notifications)]
pub struct PairChannel;

static PAIRS: Store<Pair> = Mutex::new(Vec::new());

#[pgpubsub::post_save_listener(PairChannel)]
fn pair_saved(old: Option<Pair>, new: Pair, conn: &mut PgConnection) -> QueryResult<()> {
    remember(&PAIRS, conn, old, new)
}

#[test]
fn a_composite_primary_key_and_a_renamed_field_round_trip() {
    let db = TestDb::new(SCHEMA);
    let table = Fixture {
        name: "pairs",
        batch: "tenant",
        store: &PAIRS,
        load: |conn| pairs::table.select(Pair::as_select()).load(conn),
        key: |row| (row.tenant, row.seq),
        expect: identity,
        same: equal,
    };
    let cases = |batch: usize| -> Vec<Pair> {
        [i64::MIN, -1, 0, 1, i64::MAX]
            .into_iter()
            .enumerate()
            .map(|(case, seq)| Pair {
                tenant: i32::try_from(batch).unwrap(),
                seq,
                rev: 0,
                name: pick(&TEXTS, case).to_owned(),
                note: (case % 2 == 0).then(|| pick(&TEXTS, case + 4).to_owned()),
            })
            .collect()
    };
    let before = round_trip(&db, &table, &SESSIONS, |conn, batch| {
        diesel::insert_into(pairs::table)
            .values(&cases(batch))
            .execute(conn)
            .unwrap();
    });
    for batch in 0..SESSIONS.len() {
        for case in cases(batch) {
            assert_eq!(before[&(case.tenant, case.seq)], case);
        }
    }
}

// ---------------------------------------------------------------------------
// 1 MB rows: lockable and broadcast
// ---------------------------------------------------------------------------

diesel::table! {
    blobs (id) {
        id -> BigInt,
        rev -> Integer,
        body -> Text,
        data -> Bytea,
    }
}

diesel::table! {
    casts (id) {
        id -> BigInt,
        rev -> Integer,
        body -> Text,
        data -> Bytea,
    }
}

/// Summarizes a megabyte instead of printing it.
fn summary(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    id: i64,
    rev: i32,
    body: &str,
    data: &[u8],
) -> fmt::Result {
    let checksum = |bytes: &[u8]| {
        bytes.iter().fold(0u64, |acc, byte| {
            acc.wrapping_mul(31).wrapping_add(u64::from(*byte))
        })
    };
    f.debug_struct(name)
        .field("id", &id)
        .field("rev", &rev)
        .field("body_len", &body.len())
        .field("body_checksum", &checksum(body.as_bytes()))
        .field("data_len", &data.len())
        .field("data_checksum", &checksum(data))
        .finish()
}

#[derive(Queryable, Selectable, Identifiable, Insertable, Clone, PartialEq)]
#[diesel(table_name = blobs, check_for_backend(diesel::pg::Pg))]
pub struct Blob {
    pub id: i64,
    pub rev: i32,
    pub body: String,
    pub data: Vec<u8>,
}

impl Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        summary(f, "Blob", self.id, self.rev, &self.body, &self.data)
    }
}

#[derive(Queryable, Selectable, Identifiable, Insertable, Clone, PartialEq)]
#[diesel(table_name = casts, check_for_backend(diesel::pg::Pg))]
pub struct Cast {
    pub id: i64,
    pub rev: i32,
    pub body: String,
    pub data: Vec<u8>,
}

impl Debug for Cast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        summary(f, "Cast", self.id, self.rev, &self.body, &self.data)
    }
}

#[pgpubsub::trigger_channel(model = Blob, lock_notifications)]
pub struct BlobChannel;

/// Not lockable: a broadcast, whose large payloads are stored and referenced.
#[pgpubsub::trigger_channel(model = Cast)]
pub struct CastChannel;

static BLOBS: Store<Blob> = Mutex::new(Vec::new());
static CASTS: Store<Cast> = Mutex::new(Vec::new());

#[pgpubsub::post_save_listener(BlobChannel)]
fn blob_saved(old: Option<Blob>, new: Blob, conn: &mut PgConnection) -> QueryResult<()> {
    remember(&BLOBS, conn, old, new)
}

#[pgpubsub::post_save_listener(CastChannel)]
fn cast_saved(old: Option<Cast>, new: Cast, conn: &mut PgConnection) -> QueryResult<()> {
    remember(&CASTS, conn, old, new)
}

const MEGABYTE: usize = 1 << 20;

/// 1 MiB of text: ASCII, quotes, backslashes, newlines and multi-byte
/// characters.
fn megabyte_text(seed: usize) -> String {
    let pieces = ["abc", "é", "\"", "\\", "\n", "✓", "😀", "x\ty", "{}"];
    let mut text = String::with_capacity(MEGABYTE + 8);
    let mut index = seed;
    while text.len() < MEGABYTE {
        text.push_str(pieces[index % pieces.len()]);
        index += 1;
    }
    while text.len() > MEGABYTE {
        text.pop();
    }
    while text.len() < MEGABYTE {
        text.push('.');
    }
    text
}

/// 1 MiB of bytes, every value from 0x00 to 0xff (not UTF-8).
fn megabyte_bytes(seed: usize) -> Vec<u8> {
    (0..MEGABYTE)
        .map(|i| u8::try_from((i * 7 + seed) % 256).unwrap())
        .collect()
}

/// hex and escape `bytea_output`.
const BLOB_SESSIONS: [&str; 2] = [SESSIONS[0], SESSIONS[1]];

#[test]
fn one_megabyte_text_and_bytea_round_trip_through_a_lockable_channel() {
    let db = TestDb::new(SCHEMA);
    let table = Fixture {
        name: "blobs",
        batch: "id / 1000",
        store: &BLOBS,
        load: |conn| blobs::table.select(Blob::as_select()).load(conn),
        key: |row| row.id,
        expect: identity,
        same: equal,
    };
    let before = round_trip(&db, &table, &BLOB_SESSIONS, |conn, batch| {
        diesel::insert_into(blobs::table)
            .values(&Blob {
                id: id(batch, 0),
                rev: 0,
                body: megabyte_text(batch),
                data: megabyte_bytes(batch),
            })
            .execute(conn)
            .unwrap();
    });
    assert_eq!(before[&id(1, 0)].body, megabyte_text(1));
    assert_eq!(before[&id(1, 0)].data, megabyte_bytes(1));
}

#[test]
fn one_megabyte_text_and_bytea_round_trip_through_a_broadcast_channel() {
    let db = TestDb::new(SCHEMA);
    let table = Fixture {
        name: "casts",
        batch: "id / 1000",
        store: &CASTS,
        load: |conn| casts::table.select(Cast::as_select()).load(conn),
        key: |row| row.id,
        expect: identity,
        same: equal,
    };
    let before = round_trip(&db, &table, &BLOB_SESSIONS, |conn, batch| {
        diesel::insert_into(casts::table)
            .values(&Cast {
                id: id(batch, 0),
                rev: 0,
                body: megabyte_text(batch + 3),
                data: megabyte_bytes(batch + 3),
            })
            .execute(conn)
            .unwrap();
    });
    assert_eq!(before[&id(0, 0)].data, megabyte_bytes(3));
    // Too large for NOTIFY: they went through stored broadcast rows.
    assert!(
        count(
            &mut db.conn(),
            "SELECT count(*) AS n FROM pgpubsub_notification WHERE broadcast AND channel = 'cast_channel'"
        ) >= 1
    );
}

// ---------------------------------------------------------------------------
// Ranges
// ---------------------------------------------------------------------------

diesel::table! {
    spans (id) {
        id -> BigInt,
        rev -> Integer,
        during -> Tstzrange,
        days -> Daterange,
        local -> Tsrange,
        nums -> Int4range,
    }
}

type Bounds<T> = (Bound<T>, Bound<T>);

#[derive(Queryable, Selectable, Identifiable, Insertable, Debug, Clone, PartialEq)]
#[diesel(table_name = spans, check_for_backend(diesel::pg::Pg))]
pub struct Span {
    pub id: i64,
    pub rev: i32,
    pub during: Bounds<DateTime<Utc>>,
    pub days: Bounds<NaiveDate>,
    pub local: Bounds<NaiveDateTime>,
    pub nums: Bounds<i32>,
}

#[pgpubsub::trigger_channel(model = Span, lock_notifications)]
pub struct SpanChannel;

static SPANS: Store<Span> = Mutex::new(Vec::new());

#[pgpubsub::post_save_listener(SpanChannel)]
fn span_saved(old: Option<Span>, new: Span, conn: &mut PgConnection) -> QueryResult<()> {
    remember(&SPANS, conn, old, new)
}

/// Canonical forms only (what PostgreSQL stores), so the table holds the
/// cases exactly: discrete ranges are `[a,b)`.
fn range_cases(batch: usize) -> Vec<Span> {
    let stamp = |y, m, d, h, us| datetime(date(y, m, d), time(h, 0, 0, us));
    vec![
        Span {
            id: id(batch, 0),
            rev: 0,
            during: (
                Bound::Included(stamp(2020, 1, 2, 0, 0).and_utc()),
                Bound::Excluded(stamp(2020, 3, 4, 5, 123_456).and_utc()),
            ),
            days: (
                Bound::Included(date(2020, 1, 2)),
                Bound::Excluded(date(2020, 3, 4)),
            ),
            local: (
                Bound::Excluded(stamp(2020, 1, 2, 3, 1)),
                Bound::Included(stamp(2020, 11, 12, 13, 0)),
            ),
            nums: (Bound::Included(-5), Bound::Excluded(10)),
        },
        Span {
            id: id(batch, 1),
            rev: 0,
            during: (
                Bound::Unbounded,
                Bound::Included(stamp(1850, 1, 25, 12, 0).and_utc()),
            ),
            days: (Bound::Included(date(-43, 3, 15)), Bound::Unbounded),
            local: (Bound::Included(stamp(2021, 12, 25, 0, 0)), Bound::Unbounded),
            nums: (Bound::Unbounded, Bound::Unbounded),
        },
    ]
}

fn span_table() -> Fixture<Span, i64> {
    Fixture {
        name: "spans",
        batch: "id / 1000",
        store: &SPANS,
        load: |conn| spans::table.select(Span::as_select()).load(conn),
        key: |row| row.id,
        expect: identity,
        same: equal,
    }
}

fn write_spans(conn: &mut PgConnection, batch: usize) {
    diesel::insert_into(spans::table)
        .values(&range_cases(batch))
        .execute(conn)
        .unwrap();
}

#[test]
fn ranges_round_trip_under_iso_datestyle_in_any_time_zone() {
    let db = TestDb::new(SCHEMA);
    let sessions = [
        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'",
        "SET TimeZone = 'Asia/Kolkata'; SET DateStyle = 'ISO, DMY'",
        "SET TimeZone = 'Pacific/Chatham'; SET DateStyle = 'ISO, YMD'",
    ];
    let before = round_trip(&db, &span_table(), &sessions, write_spans);
    for case in range_cases(1) {
        assert_eq!(before[&case.id], case, "the table holds the case exactly");
    }
}

/// A range's `to_jsonb` is its text output, which follows the writer's
/// DateStyle (`SQL, DMY`: `["02/01/2020 05:30:00 IST", ...)`; `German`:
/// `02.01.2020`) and prints time zone abbreviations; the listener reads it
/// under its own DateStyle (`ISO, MDY`) and abbreviations (`IST` is Israel's
/// +02 in the default set), so days and months swap, or fail to parse.
#[test]
fn ranges_round_trip_under_every_writer_datestyle() {
    let db = TestDb::new(SCHEMA);
    round_trip(&db, &span_table(), &SESSIONS, write_spans);
}
