-- Deletes leave a tombstone: the row stays, with `status` 'deleted', the
-- version of the delete, `data` cut down to {"id","version"}, and the time
-- of the delete (unix milliseconds) here. Snapshots carry the recent ones
-- so that a tab that was away learns of the delete; they are purged after
-- `store::TOMBSTONE_RETENTION` (docs/protocol.md, "Deletes").
ALTER TABLE imports ADD COLUMN deleted_at INTEGER;
CREATE INDEX imports_removed_by_user ON imports (user_id, deleted_at DESC)
    WHERE deleted_at IS NOT NULL;
CREATE INDEX imports_removed ON imports (deleted_at) WHERE deleted_at IS NOT NULL;
