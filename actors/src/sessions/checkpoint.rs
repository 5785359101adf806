//! The rooms' checkpoint: every room's epoch and latest offset, written at a
//! graceful shutdown and read at the next start.

/// A room's epoch and latest offset, as checkpointed.
#[derive(
    Clone, Debug, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = crate::db::schema::rooms, treat_none_as_default_value = false)]
pub struct RoomRow {
    /// The room.
    pub name: String,
    /// Its epoch.
    pub epoch: String,
    /// Its latest offset.
    pub last_offset: i64,
    /// Written by a graceful shutdown.
    pub clean: bool,
    /// When, Unix ms.
    pub updated_at: i64,
}

/// Loads the rooms a graceful shutdown checkpointed, and marks every row
/// unclean: should this process crash, they must not be trusted again.
///
/// # Errors
/// The database is down.
pub async fn load_room_checkpoint(db: &crate::db::Db) -> Result<Vec<RoomRow>, crate::db::DbError> {
    use crate::db::schema::rooms::dsl;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let rows = crate::with_conn!(db, |conn| {
        let rows: Vec<RoomRow> = dsl::rooms
            .filter(dsl::clean.eq(true))
            .select(RoomRow::as_select())
            .load(conn)
            .await?;
        diesel::update(dsl::rooms)
            .set(dsl::clean.eq(false))
            .execute(conn)
            .await?;
        rows
    });
    Ok(rows)
}

/// Writes every room's epoch and latest offset, marked clean.
///
/// # Errors
/// The database is down.
pub async fn save_room_checkpoint(
    db: &crate::db::Db,
    rows: Vec<RoomRow>,
) -> Result<usize, crate::db::DbError> {
    use crate::db::schema::rooms::dsl;
    use diesel::prelude::*;
    use diesel::upsert::excluded;
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let n = rows.len();
    crate::with_conn!(db, |conn| {
        let rows = rows.clone();
        conn.transaction(async |conn| {
            for row in &rows {
                diesel::insert_into(dsl::rooms)
                    .values(row)
                    .on_conflict(dsl::name)
                    .do_update()
                    .set((
                        dsl::epoch.eq(excluded(dsl::epoch)),
                        dsl::last_offset.eq(excluded(dsl::last_offset)),
                        dsl::clean.eq(excluded(dsl::clean)),
                        dsl::updated_at.eq(excluded(dsl::updated_at)),
                    ))
                    .execute(conn)
                    .await?;
            }
            Ok::<_, crate::db::DbError>(())
        })
        .await?;
    });
    Ok(n)
}
