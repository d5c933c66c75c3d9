-- The PostgreSQL twin of migrations/sqlite/0003_tombstones.sql: deletes
-- leave a tombstone row (`status` 'deleted', `data` {"id","version"}) with
-- the time of the delete here, purged after `store::TOMBSTONE_RETENTION`.
ALTER TABLE imports ADD COLUMN deleted_at TIMESTAMPTZ;
CREATE INDEX imports_removed_by_user ON imports (user_id, deleted_at DESC)
    WHERE deleted_at IS NOT NULL;
CREATE INDEX imports_removed ON imports (deleted_at) WHERE deleted_at IS NOT NULL;
