-- Job leases: the node running an import holds it until `lease_until` and
-- renews it; when a node dies, the lease runs out and another node claims
-- the import (FOR UPDATE SKIP LOCKED: each import goes to exactly one).
-- Times come from the database's clock, so node clocks need not agree.
ALTER TABLE imports ADD COLUMN lease_owner TEXT;
ALTER TABLE imports ADD COLUMN lease_until TIMESTAMPTZ;
