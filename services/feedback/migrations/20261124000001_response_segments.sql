-- The segments a customer belonged to when they responded (SurveyResponse.segment_ids), as
-- segmentation reported them, for the metrics `segment_id` filter. The GIN index serves
-- `segment_ids @> ARRAY[…]`.
ALTER TABLE responses ADD COLUMN segment_ids text[] NOT NULL DEFAULT '{}';
CREATE INDEX responses_segment_ids ON responses USING gin (segment_ids);
