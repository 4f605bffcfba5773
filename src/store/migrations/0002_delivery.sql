-- Delivery per result (SPEC §6, issue #12): each pending result keeps its own
-- retry schedule, so one result that cannot be delivered never delays another.
--   attempts         failed deliveries since the last success (the backoff streak)
--   next_attempt_ms  unix milliseconds before which the result is not tried again
--   reason           named reason of the last failure (e.g. delivery.outbox_conflict)
--   error            one line of detail for that failure (no secret: ids, paths, status)
ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN next_attempt_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN reason TEXT;
ALTER TABLE outbox ADD COLUMN error TEXT;
CREATE INDEX outbox_due ON outbox (next_attempt_ms);
