-- The PostgreSQL twin of migrations/sqlite/0001_init.sql: same tables, same
-- meaning, native types. Ids use the "C" collation so that ordering and the
-- `before` cursor compare bytes (UUIDv7 text sorts by creation time), not
-- whatever the cluster's locale would make of the hyphens.

-- Users are keyed by the token's `sub`.
CREATE TABLE users (
    id          TEXT COLLATE "C" PRIMARY KEY,
    email       TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- The import object lives in `data` (JSONB) so that new fields need no
-- migration; the columns beside it are what queries filter and order on.
CREATE TABLE imports (
    id          TEXT COLLATE "C" PRIMARY KEY,
    user_id     TEXT COLLATE "C" NOT NULL,
    status      TEXT NOT NULL,
    version     BIGINT NOT NULL,
    finished    BOOLEAN NOT NULL DEFAULT FALSE,
    data        JSONB NOT NULL
);

CREATE INDEX imports_by_user ON imports (user_id, id DESC);
CREATE INDEX imports_by_user_finished ON imports (user_id, finished, id DESC);
-- Only unfinished rows: what a restart resumes (and, later, what nodes claim).
CREATE INDEX imports_unfinished ON imports (id) WHERE NOT finished;
