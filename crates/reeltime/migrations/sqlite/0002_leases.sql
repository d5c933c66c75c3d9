-- Job leases: the node running an import holds it until `lease_until`
-- (unix milliseconds) and renews it; when a node dies, the lease runs out
-- and another node claims the import.
ALTER TABLE imports ADD COLUMN lease_owner TEXT;
ALTER TABLE imports ADD COLUMN lease_until INTEGER;
