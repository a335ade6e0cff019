-- Custom events from the profiles feed (issue 21): each ActivityRecorded whose activity is a
-- custom event, kept like `customer_activities` (keyed by the profiles activity id, so a
-- redelivered event changes nothing; moved by merges remembering the merge; deleted by
-- erasure; not stored when older than `activity_retention_days` on arrival). `properties` holds
-- the values the feed carries: those of properties not declared `contains_pii` (profiles never
-- sends the others), as a JSON object of property name → {"string": …} / {"number": …} /
-- {"bool": …} / {"time": "<RFC 3339>"} / {"money": {"amount_minor": …, "currency": …}}.
-- No rule reads them yet: rule conditions over events are a later step.
CREATE TABLE customer_events (
    activity_id  text PRIMARY KEY,
    customer_id  text        NOT NULL,
    event_type   text        NOT NULL,
    occur_time   timestamptz NOT NULL,
    properties   jsonb       NOT NULL DEFAULT '{}',
    channel      text        NOT NULL DEFAULT '',
    -- The customer the event was recorded on before a merge moved it, and that merge, so
    -- CustomerUnmerged moves exactly these back.
    merged_from  text,
    merge_id     text
);
CREATE INDEX customer_events_customer ON customer_events (customer_id, event_type, occur_time);
CREATE INDEX customer_events_merge ON customer_events (merge_id) WHERE merge_id IS NOT NULL;

-- The event type catalog learnt from profiles' EventTypeDefined, so rules over event
-- properties can be validated later. Each event replaces the row whole (it carries the whole
-- type), unless an event of a later feed position was already applied. `properties` is the
-- list of {"name", "type" (string, number, bool, time, money), "contains_pii", "required",
-- "description"}; PII properties are listed (their values never arrive).
CREATE TABLE event_types (
    name             text PRIMARY KEY,
    description      text   NOT NULL DEFAULT '',
    properties       jsonb  NOT NULL DEFAULT '[]',
    profiles_sequence bigint NOT NULL
);
