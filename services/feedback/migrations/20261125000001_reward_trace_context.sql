-- The W3C traceparent of the SubmitResponse (or RetryReward) call that queued a reward, so the
-- reward worker's call to loyalty continues that trace (as outbox rows carry their producer's).
-- Empty: no trace to continue (rewards queued before this column, or telemetry off).
ALTER TABLE responses ADD COLUMN reward_traceparent text NOT NULL DEFAULT '';
