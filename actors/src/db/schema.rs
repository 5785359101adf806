//! Table definitions, as the migrations in `migrations/` create them.
#![allow(missing_docs)]

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        rooms -> Text,
        created_at -> BigInt,
        last_seen -> BigInt,
        expires_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    rooms (name) {
        name -> Text,
        epoch -> Text,
        last_offset -> BigInt,
        clean -> Bool,
        updated_at -> BigInt,
    }
}

diesel::table! {
    files (path) {
        path -> Text,
        directory -> Text,
        size -> BigInt,
        modified_at -> BigInt,
        sha256 -> Text,
        indexed_at -> BigInt,
    }
}
