-- SPEC §3 "Replay": the digest of every request JWE of every job the station
-- accepted, kept for good. The purge clears a job's requests; this table keeps
-- only their digests (SHA-256 of the compact JWE, base64url: the responses'
-- requestDigest), never a request.
CREATE TABLE seen_requests (
    digest      TEXT PRIMARY KEY,
    shipment_id TEXT NOT NULL,                 -- the job it first came in
    seen_at     INTEGER NOT NULL               -- unix seconds
) WITHOUT ROWID;

-- Jobs imported before this migration: their digests were kept on the job row
-- (request_digests), also after the purge. Rows refused at intake carry '[]'.
INSERT OR IGNORE INTO seen_requests (digest, shipment_id, seen_at)
    SELECT d.value, j.shipment_id, j.imported_at
    FROM jobs AS j,
         json_each(CASE WHEN json_valid(j.request_digests) THEN j.request_digests ELSE '[]' END) AS d
    ORDER BY j.imported_at, j.rowid;
