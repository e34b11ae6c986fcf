-- tandem's PostgreSQL store, schema version 1.
--
-- Every table's primary key starts with user_id and every statement the
-- store runs names its users, so the tables could be distributed by
-- user_id (e.g. Citus) without a cross-user constraint. Keys and IDs are
-- text in the "C" collation (byte order, independent of the OS's locale
-- data, so an upgrade of the C library cannot reorder an index); payloads
-- are bytea. Seqs, epochs and times are bigint.

-- One row per activated user: the ownership epoch and the high-water mark
-- of the log (the last seq ever appended, also once those entries have
-- aged out and been deleted). Every commit that moves a user's log
-- updates last_seq; fillfactor leaves room for those updates to stay HOT.
CREATE TABLE tandem_users (
    user_id  text COLLATE "C" NOT NULL,
    epoch    bigint NOT NULL,
    owner    text NOT NULL,
    last_seq bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id)
) WITH (fillfactor = 70);

-- The sync log. time_ms is non-decreasing along seq within a user;
-- tandem_log_time finds the first entry at or after a time (retention,
-- FirstSeqSince) and lets the sweeper delete aged-out entries per user.
CREATE TABLE tandem_log (
    user_id text COLLATE "C" NOT NULL,
    seq     bigint NOT NULL,
    time_ms bigint NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX tandem_log_time ON tandem_log (user_id, time_ms, seq);

-- Idempotency keys. time_ms is the newest entry time of the append that
-- wrote the key (or the store's clock then, if later): with retention the
-- sweeper deletes the key some time after that.
CREATE TABLE tandem_dedup (
    user_id   text COLLATE "C" NOT NULL,
    dedup_key text COLLATE "C" NOT NULL,
    seq       bigint NOT NULL,
    time_ms   bigint NOT NULL,
    PRIMARY KEY (user_id, dedup_key)
);

-- Pending fan-outs (the outbox rule): written with the entry, deleted by a
-- later append.
CREATE TABLE tandem_outbox (
    user_id    text COLLATE "C" NOT NULL,
    seq        bigint NOT NULL,
    outbox_key text COLLATE "C" NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (user_id, seq, outbox_key)
);

-- Device records and cursors. data is NULL for a device whose cursor was
-- stored but never its record.
CREATE TABLE tandem_devices (
    user_id    text COLLATE "C" NOT NULL,
    device_id  text COLLATE "C" NOT NULL,
    data       bytea,
    cursor_seq bigint NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Conversation states.
CREATE TABLE tandem_convs (
    user_id  text COLLATE "C" NOT NULL,
    conv_key text COLLATE "C" NOT NULL,
    data     bytea NOT NULL,
    PRIMARY KEY (user_id, conv_key)
);

-- tandem_check fails the statement (and so the transaction) unless ok:
-- the group-commit statement checks with it that every user passed the
-- fence, so its COMMIT can be sent in the same round trip.
CREATE FUNCTION tandem_check(ok boolean, what text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'tandem: check failed: %', what;
    END IF;
    RETURN true;
END
$$;
