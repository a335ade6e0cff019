-- The custom event type catalog (issue 21): event types with their typed properties, which
-- RecordActivity and ImportActivities validate custom events against. Custom events are
-- stored in `activities` like every other activity (kind 4 = ACTIVITY_KIND_CUSTOM_EVENT, the
-- event type and property values in `details`), so idempotency, the timeline, merges and
-- erasure treat them as they treat the others.
--
-- `properties` is the list of property definitions in declaration order (the domain's JSON
-- form: name, property_type ("String", "Number", "Bool", "Time", "Money"), description,
-- contains_pii, required). It is always read and written whole, under the row's lock, and
-- only ever grows.
CREATE TABLE event_types (
    event_type_name text PRIMARY KEY,
    description     text        NOT NULL,
    properties      jsonb       NOT NULL DEFAULT '[]',
    create_time     timestamptz NOT NULL,
    update_time     timestamptz NOT NULL
);

