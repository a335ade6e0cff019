-- Backfill of legacy_merge_moves: the rows merges applied before 20261125000002 moved.
--
-- What can be recovered: the customer each response, ticket and review was created for is in
-- its creation event in feedback's own outbox (ResponseSubmitted.customer_id = field 4,
-- TicketOpened.customer_id = field 3, ReviewSubmitted.customer_id = field 2); a row now held by
-- another (not erased) customer was moved there by merges. An invitation's customer when it
-- was answered is its response's, so an answered invitation moved with its response is found
-- too.
--
-- What cannot: the merge ids (so those merges' own unmerges are matched by customer pair, not
-- id); invitations never answered; a row moved along a chain of merges is listed under the
-- customer it was created for, not under each step; rows whose creation event is missing.
-- And an unmerge that feedback ignored before this migration left its source's rows on the
-- target: they stay there, visible in the target's reads, until the source is erased (the
-- erasure finds them here) or the pair is merged and unmerged again.
--
-- Idempotent (ON CONFLICT DO NOTHING), so it can be run again.

-- The string field `wanted` of a protobuf message (the first occurrence), or NULL. Only what
-- the three payloads need: varint, 64-bit, length-delimited and 32-bit fields. Created in the
-- schema (the migrating role may create there, perhaps not temporary objects) and dropped
-- at the end.
CREATE OR REPLACE FUNCTION feedback_pb_string(payload bytea, wanted integer)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    len   integer := length(payload);
    pos   integer := 0;
    tag   bigint;
    n     bigint;
    shift integer;
    b     integer;
BEGIN
    WHILE pos < len LOOP
        -- The key: a varint of (field number << 3 | wire type).
        tag := 0;
        shift := 0;
        LOOP
            IF pos >= len OR shift > 56 THEN
                RETURN NULL;
            END IF;
            b := get_byte(payload, pos);
            pos := pos + 1;
            tag := tag | ((b & 127)::bigint << shift);
            EXIT WHEN b < 128;
            shift := shift + 7;
        END LOOP;
        CASE tag & 7
            WHEN 0 THEN
                LOOP
                    IF pos >= len THEN
                        RETURN NULL;
                    END IF;
                    b := get_byte(payload, pos);
                    pos := pos + 1;
                    EXIT WHEN b < 128;
                END LOOP;
            WHEN 1 THEN
                pos := pos + 8;
            WHEN 5 THEN
                pos := pos + 4;
            WHEN 2 THEN
                n := 0;
                shift := 0;
                LOOP
                    IF pos >= len OR shift > 56 THEN
                        RETURN NULL;
                    END IF;
                    b := get_byte(payload, pos);
                    pos := pos + 1;
                    n := n | ((b & 127)::bigint << shift);
                    EXIT WHEN b < 128;
                    shift := shift + 7;
                END LOOP;
                IF pos + n > len THEN
                    RETURN NULL;
                END IF;
                IF tag >> 3 = wanted THEN
                    RETURN convert_from(substring(payload FROM pos + 1 FOR n::integer), 'UTF8');
                END IF;
                pos := pos + n::integer;
            ELSE
                RETURN NULL;
        END CASE;
    END LOOP;
    RETURN NULL;
END $$;

INSERT INTO legacy_merge_moves (item_kind, item_id, source_customer_id)
SELECT 'response', r.response_id, c.customer_id
FROM responses r
JOIN (SELECT aggregateid, feedback_pb_string(payload, 4) AS customer_id
      FROM outbox WHERE type = 'custops.feedback.v1.ResponseSubmitted') c
  ON c.aggregateid = r.response_id::text
WHERE r.customer_id <> '' AND c.customer_id <> '' AND c.customer_id <> r.customer_id
ON CONFLICT DO NOTHING;

INSERT INTO legacy_merge_moves (item_kind, item_id, source_customer_id)
SELECT 'ticket', t.ticket_id, c.customer_id
FROM tickets t
JOIN (SELECT aggregateid, feedback_pb_string(payload, 3) AS customer_id
      FROM outbox WHERE type = 'custops.feedback.v1.TicketOpened') c
  ON c.aggregateid = t.ticket_id::text
WHERE t.customer_id <> '' AND c.customer_id <> '' AND c.customer_id <> t.customer_id
ON CONFLICT DO NOTHING;

INSERT INTO legacy_merge_moves (item_kind, item_id, source_customer_id)
SELECT 'review', v.review_id, c.customer_id
FROM reviews v
JOIN (SELECT aggregateid, feedback_pb_string(payload, 2) AS customer_id
      FROM outbox WHERE type = 'custops.feedback.v1.ReviewSubmitted') c
  ON c.aggregateid = v.review_id::text
WHERE v.customer_id <> '' AND c.customer_id <> '' AND c.customer_id <> v.customer_id
ON CONFLICT DO NOTHING;

INSERT INTO legacy_merge_moves (item_kind, item_id, source_customer_id)
SELECT 'invitation', i.invitation_id, m.source_customer_id
FROM invitations i
JOIN legacy_merge_moves m ON m.item_kind = 'response' AND m.item_id = i.response_id
WHERE i.customer_id <> '' AND i.customer_id <> m.source_customer_id
ON CONFLICT DO NOTHING;

DROP FUNCTION feedback_pb_string(bytea, integer);
