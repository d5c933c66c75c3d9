-- The PostgreSQL twin of migrations/sqlite/0004_uploads.sql: one row per
-- tus upload while its bytes come in; the offset is compare-and-set by the
-- PATCH that holds the row, times come from the database's clock.
CREATE TABLE uploads (
    id              TEXT COLLATE "C" PRIMARY KEY,
    user_id         TEXT COLLATE "C" NOT NULL,
    length          BIGINT NOT NULL,
    upload_offset   BIGINT NOT NULL DEFAULT 0,
    expires_at      TIMESTAMPTZ NOT NULL,
    state           TEXT NOT NULL,
    holder          TEXT,
    holder_until    TIMESTAMPTZ
);
CREATE INDEX uploads_by_expiry ON uploads (expires_at);
CREATE INDEX imports_uploading ON imports (user_id) WHERE status = 'uploading';
