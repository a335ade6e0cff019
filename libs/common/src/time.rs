//! Instants on the wire: `google.protobuf.Timestamp` to and from `chrono`, written once for
//! every service's conversions.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

/// An instant as a protobuf timestamp.
pub fn to_timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The instant a protobuf timestamp names; `None` when its nanos are out of range or the
/// instant cannot be represented.
pub fn from_timestamp(timestamp: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip_and_bad_nanos_are_refused() {
        let time = DateTime::from_timestamp(1_795_000_000, 123_456_789).unwrap_or_default();
        assert_eq!(from_timestamp(&to_timestamp(time)), Some(time));
        let bad = Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(from_timestamp(&bad), None);
    }
}
