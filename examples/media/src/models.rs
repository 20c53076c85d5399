//! Ordinary Diesel models.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::schema::media;

/// An uploaded file.
#[derive(Queryable, Selectable, Identifiable, Debug)]
#[diesel(table_name = media)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct Media {
    /// The primary key.
    pub id: i64,
    /// The file name.
    pub name: String,
    /// Its size in bytes.
    pub size: i64,
    /// When the row was inserted.
    pub created_at: DateTime<Utc>,
}

/// A `media` row to insert.
#[derive(Insertable, Debug)]
#[diesel(table_name = media)]
pub struct NewMedia<'a> {
    /// The file name.
    pub name: &'a str,
    /// Its size in bytes.
    pub size: i64,
}
