-- Metrics rollup: per survey, channel, touchpoint kind and 15-minute UTC bucket, the number of
-- responses and of each score and omission. Maintained in the transaction of every response
-- (an upsert), so GetSurveyMetrics reads a few thousand rollup rows instead of a million
-- responses; raw responses are read only at the edges of a range that does not fall on a
-- 15-minute boundary. 15 minutes because every time zone's offset is a multiple of it, so a
-- bucket never straddles a local day, week or month.
CREATE TABLE response_rollup (
    survey_id       uuid        NOT NULL,
    bucket          timestamptz NOT NULL,
    channel         text        NOT NULL,
    touchpoint_kind text        NOT NULL,
    responses       bigint      NOT NULL DEFAULT 0,
    nps0            bigint      NOT NULL DEFAULT 0,
    nps1            bigint      NOT NULL DEFAULT 0,
    nps2            bigint      NOT NULL DEFAULT 0,
    nps3            bigint      NOT NULL DEFAULT 0,
    nps4            bigint      NOT NULL DEFAULT 0,
    nps5            bigint      NOT NULL DEFAULT 0,
    nps6            bigint      NOT NULL DEFAULT 0,
    nps7            bigint      NOT NULL DEFAULT 0,
    nps8            bigint      NOT NULL DEFAULT 0,
    nps9            bigint      NOT NULL DEFAULT 0,
    nps10           bigint      NOT NULL DEFAULT 0,
    nps_omitted     bigint      NOT NULL DEFAULT 0,
    csat1           bigint      NOT NULL DEFAULT 0,
    csat2           bigint      NOT NULL DEFAULT 0,
    csat3           bigint      NOT NULL DEFAULT 0,
    csat4           bigint      NOT NULL DEFAULT 0,
    csat5           bigint      NOT NULL DEFAULT 0,
    csat_omitted    bigint      NOT NULL DEFAULT 0,
    ces1            bigint      NOT NULL DEFAULT 0,
    ces2            bigint      NOT NULL DEFAULT 0,
    ces3            bigint      NOT NULL DEFAULT 0,
    ces4            bigint      NOT NULL DEFAULT 0,
    ces5            bigint      NOT NULL DEFAULT 0,
    ces6            bigint      NOT NULL DEFAULT 0,
    ces7            bigint      NOT NULL DEFAULT 0,
    ces_omitted     bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (survey_id, bucket, channel, touchpoint_kind)
);
CREATE INDEX response_rollup_by_bucket ON response_rollup (bucket);

INSERT INTO response_rollup (survey_id, bucket, channel, touchpoint_kind, responses, nps0, nps1, nps2, nps3, nps4, nps5, nps6, nps7, nps8, nps9, nps10, nps_omitted, csat1, csat2, csat3, csat4, csat5, csat_omitted, ces1, ces2, ces3, ces4, ces5, ces6, ces7, ces_omitted)
SELECT survey_id, date_bin('15 minutes', submit_time, timestamptz '2000-01-01 00:00:00+00'),
       channel, touchpoint_kind,
       sum(1),
       sum(COALESCE(nps_score = 0, false)::int),
       sum(COALESCE(nps_score = 1, false)::int),
       sum(COALESCE(nps_score = 2, false)::int),
       sum(COALESCE(nps_score = 3, false)::int),
       sum(COALESCE(nps_score = 4, false)::int),
       sum(COALESCE(nps_score = 5, false)::int),
       sum(COALESCE(nps_score = 6, false)::int),
       sum(COALESCE(nps_score = 7, false)::int),
       sum(COALESCE(nps_score = 8, false)::int),
       sum(COALESCE(nps_score = 9, false)::int),
       sum(COALESCE(nps_score = 10, false)::int),
       sum(nps_omitted::int),
       sum(COALESCE(csat_score = 1, false)::int),
       sum(COALESCE(csat_score = 2, false)::int),
       sum(COALESCE(csat_score = 3, false)::int),
       sum(COALESCE(csat_score = 4, false)::int),
       sum(COALESCE(csat_score = 5, false)::int),
       sum(csat_omitted::int),
       sum(COALESCE(ces_score = 1, false)::int),
       sum(COALESCE(ces_score = 2, false)::int),
       sum(COALESCE(ces_score = 3, false)::int),
       sum(COALESCE(ces_score = 4, false)::int),
       sum(COALESCE(ces_score = 5, false)::int),
       sum(COALESCE(ces_score = 6, false)::int),
       sum(COALESCE(ces_score = 7, false)::int),
       sum(ces_omitted::int)
FROM responses
GROUP BY 1, 2, 3, 4;
