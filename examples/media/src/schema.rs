//! The Diesel schema, as `diesel print-schema` would write it.

diesel::table! {
    media (id) {
        id -> Int8,
        name -> Text,
        size -> Int8,
        created_at -> Timestamptz,
    }
}
