-- tus uploads (docs/protocol.md, "Uploads"): one row per upload, keyed by
-- its import's id, while its bytes come in. The offset lives here, never in
-- a node's memory, so a restart or another node resumes from it; a PATCH
-- takes the row (`holder`, until `holder_until`, unix milliseconds) with a
-- compare-and-set on `upload_offset`, so of two racing PATCHes one wins and
-- the other gets 409. `state` is JSON: the metadata, the first bytes (for
-- the sniff), and where the bytes are (the S3 multipart upload and its
-- parts). The row goes when the upload is complete, cancelled or expired.
CREATE TABLE uploads (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    length          INTEGER NOT NULL,
    upload_offset   INTEGER NOT NULL DEFAULT 0,
    expires_at      INTEGER NOT NULL,
    state           TEXT NOT NULL,
    holder          TEXT,
    holder_until    INTEGER
);
CREATE INDEX uploads_by_expiry ON uploads (expires_at);
-- How many uploads a user has in progress (REELTIME_MAX_UPLOADS_PER_USER).
CREATE INDEX imports_uploading ON imports (user_id) WHERE status = 'uploading';
