-- The fleet schema (SPEC §13): the SQLite schema of migrations 0001-0003 for
-- many stations sharing one queue. Times are unix seconds as in SQLite, except
-- the *_ms columns, which are unix milliseconds on the database's clock (leases
-- and delivery claims are compared across stations, whose clocks may drift).
CREATE TABLE jobs (
    shipment_id          TEXT PRIMARY KEY,
    seq                  BIGSERIAL UNIQUE,        -- import order (SQLite's rowid)
    product_id           BIGINT NOT NULL,
    inventory_product_id BIGINT NOT NULL,
    customization_id     TEXT NOT NULL,
    pin_request          TEXT NOT NULL,
    cred_requests        TEXT NOT NULL,           -- JSON array of compact JWEs
    request_digests      TEXT NOT NULL,           -- JSON array, PIN request first
    state                TEXT NOT NULL CHECK (state IN
                           ('queued','leased','programmed','delivered','purged','refused','failed')),
    reason               TEXT,
    attempts             BIGINT NOT NULL DEFAULT 0,
    lease_owner          TEXT,                    -- the slot
    lease_station        TEXT,                    -- the station holding the lease
    lease_expires_ms     BIGINT,
    lease_gen            BIGINT NOT NULL DEFAULT 0, -- fencing number, bumped by every lease
    imported_at          BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
-- The lease query reads the queue head only: cost flat with queue depth.
CREATE INDEX jobs_queue ON jobs (imported_at, seq) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_expires_ms) WHERE state = 'leased';
CREATE INDEX jobs_state ON jobs (state);

CREATE TABLE outbox (
    shipment_id      TEXT PRIMARY KEY REFERENCES jobs (shipment_id),
    seq              BIGSERIAL,
    result_json      TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms  BIGINT NOT NULL DEFAULT 0,
    reason           TEXT,
    error            TEXT,
    claim_station    TEXT,                        -- the station delivering it now
    claim_expires_ms BIGINT
);
CREATE INDEX outbox_due ON outbox (next_attempt_ms);

-- A key being programmed right now, per station and slot.
CREATE TABLE in_flight (
    station     TEXT NOT NULL,
    slot        TEXT NOT NULL,
    shipment_id TEXT NOT NULL,
    serial      TEXT NOT NULL,
    step        TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    PRIMARY KEY (station, slot)
);
CREATE INDEX in_flight_job ON in_flight (shipment_id);

-- Keys that must never ship, by serial, for the whole fleet.
CREATE TABLE quarantine (
    serial      TEXT PRIMARY KEY,
    shipment_id TEXT,
    step        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    at          BIGINT NOT NULL,
    station     TEXT
);

CREATE TABLE audit (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    station     TEXT,
    shipment_id TEXT,
    event       TEXT NOT NULL,
    slot        TEXT,
    serial      TEXT,
    firmware    TEXT,
    detail      TEXT
);
CREATE INDEX audit_shipment ON audit (shipment_id);
CREATE INDEX audit_event ON audit (event);
-- "Ever programmed" is asked for every key that is not blank.
CREATE INDEX audit_programmed ON audit (serial) WHERE event = 'programmed';

CREATE TABLE seen_requests (
    digest      TEXT PRIMARY KEY,
    shipment_id TEXT NOT NULL,
    seen_at     BIGINT NOT NULL
);

-- The stations of the fleet (`fleet status`).
CREATE TABLE stations (
    id                TEXT PRIMARY KEY,
    version           TEXT NOT NULL,
    slots             BIGINT NOT NULL,
    started_at_ms     BIGINT NOT NULL,
    last_heartbeat_ms BIGINT NOT NULL
);
