-- What a service needs to write many outbox events with one INSERT … SELECT (see
-- `outbox::append_selected`) instead of building each one in the application: event ids and
-- Protocol Buffers payloads made in SQL. A payload is assembled from parts the application
-- encodes once with prost (the fields every row shares) and the per-row fields encoded by the
-- functions below, which write exactly the bytes prost writes (tested byte for byte against
-- prost in libs/common/tests/outbox/set_based.rs). Each is one expression, so the planner
-- inlines it into the statement instead of calling it per row (which is also why those that
-- call Postgres' STABLE convert_to / extract are declared STABLE, not IMMUTABLE).

-- A fresh UUIDv7 for the `n`-th row (from 1) a statement appends: 48 bits of Unix
-- milliseconds, the version, then `n` (32 bits) and 42 random bits. The feed orders rows by
-- (appended_at, id), and rows of one statement can share appended_at's microsecond: with `n`
-- ahead of the random bits, such rows still come in the order they were inserted.
CREATE FUNCTION outbox_event_id(n bigint) RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
        -- Version 7, then the high 12 bits of n.
        || int2send((28672 | ((n >> 20) & 4095))::smallint)
        -- Variant 10, the low 20 bits of n, 42 random bits.
        || int8send((-9223372036854775808) | ((n & 1048575) << 42)
                    | floor(random() * 4398046511104)::bigint),
        'hex')::uuid
$$;

-- The base-128 varint of a non-negative integer: seven bits per byte, low first, the high bit
-- set on every byte but the last. NULL for a negative one (nothing written set-based encodes
-- negatives; a NULL payload fails the outbox's NOT NULL instead of writing wrong bytes).
CREATE FUNCTION pb_varint(v bigint) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT substring(
        set_byte(set_byte(set_byte(set_byte(set_byte(set_byte(set_byte(set_byte(set_byte(
            '\x000000000000000000'::bytea,
            0, ((v & 127) | CASE WHEN v >> 7 > 0 THEN 128 ELSE 0 END)::integer),
            1, (((v >> 7) & 127) | CASE WHEN v >> 14 > 0 THEN 128 ELSE 0 END)::integer),
            2, (((v >> 14) & 127) | CASE WHEN v >> 21 > 0 THEN 128 ELSE 0 END)::integer),
            3, (((v >> 21) & 127) | CASE WHEN v >> 28 > 0 THEN 128 ELSE 0 END)::integer),
            4, (((v >> 28) & 127) | CASE WHEN v >> 35 > 0 THEN 128 ELSE 0 END)::integer),
            5, (((v >> 35) & 127) | CASE WHEN v >> 42 > 0 THEN 128 ELSE 0 END)::integer),
            6, (((v >> 42) & 127) | CASE WHEN v >> 49 > 0 THEN 128 ELSE 0 END)::integer),
            7, (((v >> 49) & 127) | CASE WHEN v >> 56 > 0 THEN 128 ELSE 0 END)::integer),
            8, ((v >> 56) & 127)::integer),
        1,
        CASE WHEN v < 0 THEN NULL
             WHEN v >> 7 = 0 THEN 1 WHEN v >> 14 = 0 THEN 2 WHEN v >> 21 = 0 THEN 3
             WHEN v >> 28 = 0 THEN 4 WHEN v >> 35 = 0 THEN 5 WHEN v >> 42 = 0 THEN 6
             WHEN v >> 49 = 0 THEN 7 WHEN v >> 56 = 0 THEN 8 ELSE 9 END)
$$;

-- A `string` field: tag, length, UTF-8 bytes; nothing for the empty string (proto3 omits
-- default values). Lengths under 128 (one varint byte: every id) take the short branch, which
-- spares the inlined pb_varint's repeated evaluation of its argument.
CREATE FUNCTION pb_string(field integer, value text) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN value = '' THEN ''::bytea
        WHEN octet_length(convert_to(value, 'UTF8')) < 128
        THEN pb_varint(field * 8 + 2)
             || set_byte('\x00'::bytea, 0, octet_length(convert_to(value, 'UTF8')))
             || convert_to(value, 'UTF8')
        ELSE pb_varint(field * 8 + 2)
             || pb_varint(octet_length(convert_to(value, 'UTF8')))
             || convert_to(value, 'UTF8')
    END
$$;

-- The body of a Timestamp message from its seconds and nanos.
CREATE FUNCTION pb_timestamp_body(seconds bigint, nanos bigint) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN seconds = 0 THEN ''::bytea ELSE '\x08'::bytea || pb_varint(seconds) END
        || CASE WHEN nanos = 0 THEN ''::bytea ELSE '\x10'::bytea || pb_varint(nanos) END
$$;

-- A `google.protobuf.Timestamp` field that is set: tag, length, then seconds (field 1) and
-- nanos (field 2), each omitted when zero. Postgres keeps microseconds, so nanos are whole
-- microseconds. NULL before 1970 (negative seconds; see pb_varint).
CREATE FUNCTION pb_timestamp(field integer, t timestamptz) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT pb_varint(field * 8 + 2)
        || pb_varint(octet_length(pb_timestamp_body(floor(extract(epoch FROM t))::bigint,
                                                    (extract(microseconds FROM t)::bigint % 1000000) * 1000)))
        || pb_timestamp_body(floor(extract(epoch FROM t))::bigint,
                             (extract(microseconds FROM t)::bigint % 1000000) * 1000)
$$;
