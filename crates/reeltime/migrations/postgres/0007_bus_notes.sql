-- Notes of changes a node could not publish (bus/redis.rs, store/bus_notes.rs;
-- docs/architecture.md, "A held change outlives its node"). Written only
-- while a node's Redis link is down: one row per import whose stored change
-- the node holds in memory, renewed by that node like a job's lease, deleted
-- once the change (or a newer one) went out. When the node dies first, the
-- lease runs out and any node with a working bus publishes the import's
-- stored state and deletes the row. Times come from the database's clock.
CREATE TABLE bus_notes (
    import_id   TEXT COLLATE "C" PRIMARY KEY,
    user_id     TEXT COLLATE "C" NOT NULL,
    -- Newest stored version held unpublished; a row is deleted only by a
    -- publish at or above it.
    version     BIGINT NOT NULL,
    -- The node that holds it (or the node sweeping it).
    node        TEXT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL
);
CREATE INDEX bus_notes_by_lease ON bus_notes (lease_until);
CREATE INDEX bus_notes_by_node ON bus_notes (node);
