//! The write-behind's statement: an upsert of many `sessions` rows in one
//! statement, the same SQL for PostgreSQL and SQLite (both take
//! `ON CONFLICT ... DO UPDATE` over a multi-row `VALUES`).
//!
//! Written by hand because diesel never caches the statement its upsert
//! DSL builds (`DoUpdate` marks itself unsafe to cache), so each would be
//! parsed and planned again; this one is cached per connection, once per
//! row count.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Nullable, Text};
use diesel::QueryResult;

use super::persistent::Row;

/// Rows per statement: far below either database's limit on bound
/// parameters (six per row).
pub(super) const ROWS: usize = 100;

/// Inserts `rows`, or updates the rows of their ids (all but `created_at`).
/// At most [`ROWS`], each id once.
pub(super) struct Upsert<'a>(pub(super) &'a [Row]);

impl QueryId for Upsert<'_> {
    type QueryId = ();
    // Cached by its SQL, which depends on the number of rows only.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> QueryFragment<DB> for Upsert<'_>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<BigInt> + HasSqlType<Nullable<BigInt>>,
    String: ToSql<Text, DB>,
    i64: ToSql<BigInt, DB>,
    Option<i64>: ToSql<Nullable<BigInt>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO sessions (id, user_id, rooms, created_at, last_seen, expires_at) VALUES ",
        );
        for (i, row) in self.0.iter().enumerate() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            out.push_bind_param::<Text, _>(&row.id)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.user_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&row.rooms)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(&row.created_at)?;
            out.push_sql(", ");
            out.push_bind_param::<BigInt, _>(&row.last_seen)?;
            out.push_sql(", ");
            out.push_bind_param::<Nullable<BigInt>, _>(&row.expires_at)?;
            out.push_sql(")");
        }
        out.push_sql(
            " ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
             rooms = excluded.rooms, last_seen = excluded.last_seen, \
             expires_at = excluded.expires_at",
        );
        Ok(())
    }
}

impl<C> diesel::RunQueryDsl<C> for Upsert<'_> {}
