-- Least-privilege grants for the fleet database (docs/operations.md, "Fleet database").
-- Run as the owner role (prereg_owner) after `prereg-station store migrate`, in the
-- fleet's database. The runtime role can read and write job state but cannot change
-- the schema, delete jobs, or rewrite the audit trail, the replay digests or the
-- quarantine list (it can add to them, and refresh a quarantine record).
GRANT CONNECT ON DATABASE prereg TO prereg_station;
GRANT USAGE ON SCHEMA public TO prereg_station;
GRANT SELECT ON schema_migrations TO prereg_station;
GRANT SELECT, INSERT, UPDATE ON jobs, quarantine, stations TO prereg_station;
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox, in_flight TO prereg_station;
GRANT SELECT, INSERT ON audit, seen_requests TO prereg_station;
GRANT USAGE ON SEQUENCE jobs_seq_seq, outbox_seq_seq, audit_id_seq TO prereg_station;
