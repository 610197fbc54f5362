-- The followed states: REQUIRES_ACTION 5, PROCESSING 6, AUTHORIZED 7. Their
-- Stripe object exists but is not paid yet; they are open like PENDING and
-- INDETERMINATE (the reconciler lists them, leases guard their writes).
ALTER TABLE records DROP CONSTRAINT records_state_check;
ALTER TABLE records ADD CONSTRAINT records_state_check CHECK (state BETWEEN 1 AND 7);

DROP INDEX records_open;
CREATE INDEX records_open ON records (created_ns, caller, request_id) WHERE state NOT IN (2, 3);
