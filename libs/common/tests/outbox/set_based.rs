//! Events written set-based (`outbox::append_selected`) with payloads encoded in SQL: the
//! `pb_*` functions of the shared migration write exactly the bytes prost writes, and the
//! rows land in the outbox in the source's order, with UUIDv7 ids and a notification.

use chrono::{DateTime, TimeZone, Utc};
use custops_common::outbox;
use custops_testkit::TestDatabase;
use prost::encoding::{encode_varint, message, string};
use sqlx::PgPool;

use crate::support::{PRODUCER, schema_pool};

/// A producer schema with the shared migrations.
async fn database() -> anyhow::Result<(TestDatabase, PgPool)> {
    let db = TestDatabase::create().await?;
    let pool = schema_pool(&db, PRODUCER.schema()).await?;
    Ok((db, pool))
}

/// Deterministic pseudo-random numbers (xorshift64*), so a failure reproduces.
struct Numbers(u64);

impl Numbers {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[tokio::test]
async fn varints_are_the_bytes_prost_writes_for_every_length() -> anyhow::Result<()> {
    // Arrange: each boundary of the 1–9 byte encodings, and random values of every bit length.
    let (_db, pool) = database().await?;
    let mut values: Vec<i64> = vec![0, 1, i64::MAX];
    for bits in (7..63).step_by(7) {
        values.extend([(1_i64 << bits) - 1, 1_i64 << bits]);
    }
    let mut numbers = Numbers(0x9e37_79b9_7f4a_7c15);
    for bits in 1..=63 {
        for _ in 0..20 {
            values.push(i64::try_from(numbers.next() >> (64 - bits))?);
        }
    }

    // Act
    let encoded: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT pb_varint(v) FROM unnest($1::bigint[]) WITH ORDINALITY AS u(v, n) ORDER BY n",
    )
    .bind(&values)
    .fetch_all(&pool)
    .await?;
    let negative: Option<Vec<u8>> = sqlx::query_scalar("SELECT pb_varint(-1)")
        .fetch_one(&pool)
        .await?;

    // Assert
    for (value, sql) in values.iter().zip(&encoded) {
        let mut prost = Vec::new();
        encode_varint(u64::try_from(*value)?, &mut prost);
        assert_eq!(sql, &prost, "varint of {value}");
    }
    assert_eq!(negative, None, "a negative value has no encoding here");
    Ok(())
}

#[tokio::test]
async fn strings_are_the_bytes_prost_writes_including_long_and_multibyte_ones() -> anyhow::Result<()>
{
    // Arrange: empty (omitted), ASCII ids, the 127/128-byte length boundary, multi-byte text
    // whose byte length differs from its character count, a 20,000-byte value (3-byte length).
    let (_db, pool) = database().await?;
    let values: Vec<String> = vec![
        String::new(),
        "c-1".to_owned(),
        "0190f6f5-0000-7000-8000-000000000001".to_owned(),
        "a".repeat(127),
        "a".repeat(128),
        "é".repeat(64),
        "客户运营".to_owned(),
        "🙂x".repeat(40),
        "z".repeat(20_000),
    ];

    // Act
    let encoded: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT pb_string(3, v) FROM unnest($1::text[]) WITH ORDINALITY AS u(v, n) ORDER BY n",
    )
    .bind(&values)
    .fetch_all(&pool)
    .await?;

    // Assert
    for (value, sql) in values.iter().zip(&encoded) {
        let mut prost = Vec::new();
        if !value.is_empty() {
            string::encode(3, value, &mut prost);
        }
        assert_eq!(sql, &prost, "string of {} bytes", value.len());
    }
    Ok(())
}

#[tokio::test]
async fn timestamps_are_the_bytes_prost_writes_down_to_the_microsecond() -> anyhow::Result<()> {
    // Arrange: the epoch (an empty body), whole seconds (no nanos), random microseconds over
    // 1970–2100.
    let (_db, pool) = database().await?;
    let mut times: Vec<DateTime<Utc>> = vec![
        Utc.timestamp_opt(0, 0).single().unwrap_or_default(),
        Utc.timestamp_opt(1_733_000_000, 0)
            .single()
            .unwrap_or_default(),
        Utc.timestamp_opt(0, 1_000).single().unwrap_or_default(),
    ];
    let mut numbers = Numbers(0x2545_f491_4f6c_dd1d);
    for _ in 0..500 {
        let micros = i64::try_from(numbers.next() % 4_102_444_800_000_000)?;
        times.push(DateTime::from_timestamp_micros(micros).unwrap_or_default());
    }

    // Act
    let encoded: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT pb_timestamp(6, t) FROM unnest($1::timestamptz[]) WITH ORDINALITY AS u(t, n) \
         ORDER BY n",
    )
    .bind(&times)
    .fetch_all(&pool)
    .await?;

    // Assert
    for (time, sql) in times.iter().zip(&encoded) {
        let mut prost = Vec::new();
        message::encode(6, &custops_common::time::to_timestamp(*time), &mut prost);
        assert_eq!(sql, &prost, "timestamp {time:?}");
    }
    Ok(())
}

#[tokio::test]
async fn selected_rows_are_appended_in_order_with_uuid_v7_ids() -> anyhow::Result<()> {
    // Arrange
    let (_db, pool) = database().await?;
    let customers: Vec<String> = (0..2_000).map(|n| format!("c-{n:05}")).collect();

    // Act: payload = a shared head, the id in SQL, a parameter tail.
    let mut tx = pool.begin().await?;
    let appended = outbox::append_selected(
        &mut tx,
        "customer",
        "custops.test.Thing",
        "SELECT c AS aggregate_id, $4 || pb_string(1, c) || $5 AS payload \
         FROM unnest($6::text[]) AS c ORDER BY c DESC",
        |query| {
            query
                .bind(vec![0x10_u8, 0x01])
                .bind(vec![0x18_u8, 0x02])
                .bind(&customers)
        },
    )
    .await?;
    let nothing = outbox::append_selected(
        &mut tx,
        "customer",
        "custops.test.Thing",
        "SELECT c AS aggregate_id, ''::bytea AS payload FROM unnest($4::text[]) AS c",
        |query| query.bind(Vec::<String>::new()),
    )
    .await?;
    tx.commit().await?;

    // Assert
    assert_eq!((appended, nothing), (2_000, 0));
    let rows: Vec<(uuid::Uuid, String, String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT id, aggregatetype, aggregateid, type, payload FROM outbox \
         ORDER BY appended_at, id",
    )
    .fetch_all(&pool)
    .await?;
    let order: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    let mut expected: Vec<&str> = customers.iter().map(String::as_str).collect();
    expected.reverse();
    assert_eq!(order, expected, "the source's order is the feed's order");
    for (id, aggregate_type, customer, event_type, payload) in &rows {
        assert_eq!(id.get_version_num(), 7, "{id}");
        assert_eq!(
            (aggregate_type.as_str(), event_type.as_str()),
            ("customer", "custops.test.Thing")
        );
        let mut body = vec![0x10, 0x01];
        string::encode(1, customer, &mut body);
        body.extend([0x18, 0x02]);
        assert_eq!(payload, &body);
    }
    let distinct: std::collections::BTreeSet<_> = rows.iter().map(|r| r.0).collect();
    assert_eq!(distinct.len(), rows.len(), "ids are unique");
    Ok(())
}
