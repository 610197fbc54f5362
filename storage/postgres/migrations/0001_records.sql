-- billingd records and webhook event ids. Applied once, in one transaction,
-- by the first replica that starts on an empty database.

-- One row per (caller, request_id). data is the record in billingd's stored
-- encoding (storage.EncodeRecord: a format byte and the storagev1.Record
-- protobuf), the same bytes bbolt stores; the other columns index it. Times
-- are unix nanoseconds, as in the record. COLLATE "C": keys sort bytewise,
-- as in bbolt, whatever the database's locale.
CREATE TABLE records (
    caller      text COLLATE "C" NOT NULL,
    request_id  text COLLATE "C" NOT NULL,
    state       smallint NOT NULL CHECK (state BETWEEN 1 AND 4),
    created_ns  bigint NOT NULL,
    updated_ns  bigint NOT NULL,
    request_key text COLLATE "C",
    -- The replica (store handle) driving the record, '' for none, and until
    -- when; lease times are the database's clock, so replicas' clocks may
    -- disagree. Only open records hold leases.
    lease_owner text NOT NULL DEFAULT '',
    lease_until timestamptz NOT NULL DEFAULT '-infinity',
    data        bytea NOT NULL,
    PRIMARY KEY (caller, request_id)
);

-- The reconciler lists open records oldest claim first; the sweeper deletes
-- final ones oldest update first. Each index holds only its own states.
CREATE INDEX records_open ON records (created_ns, caller, request_id) WHERE state IN (1, 4);
CREATE INDEX records_final ON records (updated_ns, caller, request_id) WHERE state IN (2, 3);
-- Webhooks find a record by the request key in the Stripe object's metadata.
CREATE INDEX records_request_key ON records (request_key) WHERE request_key IS NOT NULL;

-- Stripe event ids already handled: a redelivered webhook is handled once.
CREATE TABLE events (
    id      text COLLATE "C" PRIMARY KEY,
    seen_ns bigint NOT NULL
);
CREATE INDEX events_seen ON events (seen_ns, id);
