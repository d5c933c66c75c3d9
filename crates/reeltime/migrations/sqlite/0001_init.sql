-- Users are keyed by the token's `sub`.
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    email       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- The import object lives in `data` (JSON) so that new fields need no
-- migration; the columns beside it are what queries filter and order on.
CREATE TABLE imports (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    status      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    finished    INTEGER NOT NULL DEFAULT 0,
    data        TEXT NOT NULL
);

CREATE INDEX imports_by_user ON imports (user_id, id DESC);
CREATE INDEX imports_by_user_finished ON imports (user_id, finished, id DESC);
CREATE INDEX imports_unfinished ON imports (finished, id);
