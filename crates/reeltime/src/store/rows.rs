//! Row decoding both stores share. The import object is kept whole as JSON
//! text in `data` (PostgreSQL selects `data::text AS data`), and the columns
//! beside it have the same names in both schemas, so one decoder per shape
//! serves both row types.

use std::collections::HashMap;

use reeltime_protocol::{Import, RemovedImport};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{OwnedImport, Snapshot, StoreError};

/// A row with a text column `data` holding an import.
pub(super) fn import<R: Row>(row: &R) -> Result<Import, StoreError>
where
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    let data: String = row.try_get("data")?;
    Ok(serde_json::from_str(&data)?)
}

/// A row with `user_id` and `data`.
pub(super) fn owned<R: Row>(row: &R) -> Result<OwnedImport, StoreError>
where
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(OwnedImport::new(
        row.try_get::<String, _>("user_id")?,
        import(row)?,
    ))
}

/// A row of `SELECT status, COUNT(*) AS n ... GROUP BY status`.
pub(super) fn status_count<R: Row>(row: &R) -> Result<(String, u64), StoreError>
where
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let n: i64 = row.try_get("n")?;
    Ok((row.try_get("status")?, u64::try_from(n).unwrap_or(0)))
}

/// The `data` of a tombstone: the id and the version of the delete, all a
/// client needs, whatever the import carried before.
pub(super) fn tombstone_data(id: &str, version: u64) -> Result<String, StoreError> {
    Ok(serde_json::to_string(&RemovedImport {
        id: id.to_string(),
        version,
    })?)
}

/// Rows of a snapshot query, each with a boolean `removed` and `data` (an
/// import, or a tombstone's `{"id","version"}`), sorted into a snapshot.
pub(super) fn snapshot<R: Row>(rows: &[R]) -> Result<Snapshot, StoreError>
where
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut snapshot = Snapshot::default();
    for row in rows {
        add_to_snapshot(&mut snapshot, row)?;
    }
    Ok(snapshot)
}

/// The snapshots of `user_ids`, in that order, from the rows of one query
/// over all of them (each row names its user in `user_id`). A user named
/// twice gets the same snapshot twice.
pub(super) fn snapshots<R: Row>(
    user_ids: &[String],
    rows: &[R],
) -> Result<Vec<Snapshot>, StoreError>
where
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut first_place: HashMap<&str, usize> = HashMap::with_capacity(user_ids.len());
    for (place, user_id) in user_ids.iter().enumerate() {
        first_place.entry(user_id.as_str()).or_insert(place);
    }
    let mut snapshots = vec![Snapshot::default(); user_ids.len()];
    for row in rows {
        let user_id: String = row.try_get("user_id")?;
        if let Some(&place) = first_place.get(user_id.as_str()) {
            add_to_snapshot(&mut snapshots[place], row)?;
        }
    }
    for (place, user_id) in user_ids.iter().enumerate() {
        let first = first_place[user_id.as_str()];
        if first != place {
            snapshots[place] = snapshots[first].clone();
        }
    }
    Ok(snapshots)
}

fn add_to_snapshot<R: Row>(snapshot: &mut Snapshot, row: &R) -> Result<(), StoreError>
where
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    if row.try_get::<bool, _>("removed")? {
        let data: String = row.try_get("data")?;
        snapshot.removed.push(serde_json::from_str(&data)?);
    } else {
        snapshot.imports.push(import(row)?);
    }
    Ok(())
}
