-- The latest follow-up outcome of each follow-up ticket, kept beside first_outcome_time so the
-- closed-loop report (GetFollowUpReport) is one aggregate over `tickets_follow_ups`.
ALTER TABLE tickets ADD COLUMN last_outcome text
    CHECK (last_outcome IN ('contacted', 'resolved', 'no_answer'));
