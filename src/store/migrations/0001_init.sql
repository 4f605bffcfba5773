-- Jobs: one row per shipment (one physical key). Requests stay encrypted (JWE to the
-- station's transport key) and are cleared at purge; no PII and no plaintext, ever.
CREATE TABLE jobs (
    shipment_id      TEXT PRIMARY KEY,
    product_id       INTEGER NOT NULL,
    inventory_product_id INTEGER NOT NULL,
    customization_id TEXT NOT NULL,
    pin_request      TEXT NOT NULL,
    cred_requests    TEXT NOT NULL,            -- JSON array of compact JWEs
    request_digests  TEXT NOT NULL,            -- JSON array, PIN request first
    state            TEXT NOT NULL CHECK (state IN
                       ('queued','leased','programmed','delivered','purged','refused','failed')),
    reason           TEXT,                     -- named reason for refused/failed/requeued
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires    INTEGER,                  -- unix seconds
    imported_at      INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX jobs_queue ON jobs (state, imported_at);

-- Encrypted responses (SPEC §6 result JSON) awaiting the sink's acknowledgement.
CREATE TABLE outbox (
    shipment_id TEXT PRIMARY KEY REFERENCES jobs (shipment_id),
    result_json TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- A key being programmed right now: written before setPIN, removed in the same
-- transaction that stores its responses. A row found at start-up is a key that
-- stopped half-way: it is quarantined and its job requeued.
CREATE TABLE in_flight (
    slot        TEXT PRIMARY KEY,
    shipment_id TEXT NOT NULL,
    serial      TEXT NOT NULL,
    step        TEXT NOT NULL,
    started_at  INTEGER NOT NULL
);

-- Keys that must never ship, by serial.
CREATE TABLE quarantine (
    serial      TEXT PRIMARY KEY,
    shipment_id TEXT,
    step        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    at          INTEGER NOT NULL
);

-- Audit trail: what happened, never a secret.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    shipment_id TEXT,
    event       TEXT NOT NULL,
    slot        TEXT,
    serial      TEXT,
    firmware    TEXT,
    detail      TEXT
);
CREATE INDEX audit_shipment ON audit (shipment_id);
