-- billingd's schema: records, webhook event ids and tombstones. Applied
-- once, in one transaction, by the first replica that starts on an empty
-- database.

-- One row per (caller, request_id). data is the record in billingd's stored
-- encoding (storage.EncodeRecord: a format byte and the storagev1.Record
-- protobuf), the same bytes bbolt stores; the other columns index it. Times
-- are unix nanoseconds, as in the record. COLLATE "C": keys sort bytewise,
-- as in bbolt, whatever the database's locale.
CREATE TABLE records (
    caller      text COLLATE "C" NOT NULL,
    request_id  text COLLATE "C" NOT NULL,
    -- service.State: PENDING 1, SUCCEEDED 2, FAILED 3, INDETERMINATE 4, and
    -- the followed states REQUIRES_ACTION 5, PROCESSING 6, AUTHORIZED 7.
    state       smallint NOT NULL CHECK (state BETWEEN 1 AND 7),
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
-- final ones oldest update first. Each index holds only its own states: open
-- is every state but SUCCEEDED and FAILED.
CREATE INDEX records_open ON records (created_ns, caller, request_id) WHERE state NOT IN (2, 3);
CREATE INDEX records_final ON records (updated_ns, caller, request_id) WHERE state IN (2, 3);
-- Webhooks find a record by the request key in the Stripe object's metadata.
CREATE INDEX records_request_key ON records (request_key) WHERE request_key IS NOT NULL;

-- Stripe event ids already handled: a redelivered webhook is handled once.
CREATE TABLE events (
    id      text COLLATE "C" PRIMARY KEY,
    seen_ns bigint NOT NULL
);
CREATE INDEX events_seen ON events (seen_ns, id);

-- Tombstones of swept records. The sweep that deletes a final record leaves
-- its tombstone in the same transaction; a claim of a request_id with a
-- tombstone and no record is refused (REQUEST_ID_EXPIRED) until the
-- tombstone is swept, --tombstone-retention after its sweep.
--
-- name_hash is SHA-256(caller 0x00 request_id), the hash in the record's
-- request key, so tombstones are per caller and name no caller or id.
-- fingerprint is the SHA-256 of the record's fingerprint.
CREATE TABLE tombstones (
    name_hash   bytea PRIMARY KEY CHECK (length(name_hash) = 32),
    state       smallint NOT NULL CHECK (state IN (2, 3)),
    swept_ns    bigint NOT NULL,
    fingerprint bytea NOT NULL CHECK (length(fingerprint) = 32),
    object_id   text COLLATE "C" NOT NULL
);
-- The sweep deletes tombstones oldest sweep first.
CREATE INDEX tombstones_swept ON tombstones (swept_ns);

-- billingd_claim inserts a new record unless (caller, request_id) has one or
-- a tombstone, and answers whether it did and the tombstone it found. In
-- READ COMMITTED an INSERT's NOT EXISTS reads the statement's snapshot, but
-- its unique check waits for a concurrent sweep deleting the same key and
-- then inserts: the insert could succeed while the tombstone committed with
-- that delete stays invisible to it. Every statement of a VOLATILE function
-- takes a new snapshot, so the SELECT after the insert sees such a sweep,
-- and the insert is undone in the same transaction: a claim sees the record
-- or its tombstone, never neither. A claim that finds its record (created
-- false, no tombstone) reads it afterwards.
CREATE FUNCTION billingd_claim(
    p_caller text, p_request_id text, p_name_hash bytea, p_state smallint,
    p_created_ns bigint, p_updated_ns bigint, p_request_key text,
    p_owner text, p_ttl_seconds float8, p_data bytea,
    OUT created boolean, OUT t_state smallint, OUT t_swept_ns bigint,
    OUT t_fingerprint bytea, OUT t_object_id text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n bigint;
BEGIN
    INSERT INTO records (caller, request_id, state, created_ns, updated_ns, request_key, lease_owner, lease_until, data)
    SELECT p_caller, p_request_id, p_state, p_created_ns, p_updated_ns, p_request_key, p_owner,
           CASE WHEN p_owner = '' THEN '-infinity'::timestamptz
                ELSE now() + p_ttl_seconds * interval '1 second' END,
           p_data
    WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE name_hash = p_name_hash)
    ON CONFLICT (caller, request_id) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    SELECT t.state, t.swept_ns, t.fingerprint, t.object_id
      INTO t_state, t_swept_ns, t_fingerprint, t_object_id
      FROM tombstones t WHERE t.name_hash = p_name_hash;
    created := n = 1 AND NOT FOUND;
    IF n = 1 AND FOUND THEN
        DELETE FROM records WHERE caller = p_caller AND request_id = p_request_id;
    END IF;
END
$$;
