//! Every RPC of every service, called with hostile requests built from the contracts' own
//! descriptors — an empty message, oversized strings, control characters (NUL included),
//! extreme integers, out-of-range times and unknown enum values, at every level of nesting —
//! never answers UNKNOWN, INTERNAL or UNIMPLEMENTED, never sends more than 8 KiB of error
//! metadata, and leaves every server answering health.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut};
use custops_common::error::metadata_bytes;
use custops_common::service::ServiceKind;
use custops_e2e::TestSuite;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Sends and receives messages as the bytes they are: the test builds the encodings itself.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

/// One way of filling every field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hostility {
    /// No field set at all.
    Empty,
    /// Strings of 100,000 characters.
    LongStrings,
    /// Control characters, NUL and a right-to-left override in every string.
    ControlCharacters,
    /// Every number at its maximum, enums at an unknown 999, times far in the future.
    Highest,
    /// Every number at its minimum, enums at -1, times in year 1.
    Lowest,
}

const HOSTILITIES: [Hostility; 5] = [
    Hostility::Empty,
    Hostility::LongStrings,
    Hostility::ControlCharacters,
    Hostility::Highest,
    Hostility::Lowest,
];

/// The messages of the descriptor set, by fully qualified name.
struct Messages(HashMap<String, DescriptorProto>);

impl Messages {
    fn of(set: &FileDescriptorSet) -> Self {
        fn add(map: &mut HashMap<String, DescriptorProto>, prefix: &str, m: &DescriptorProto) {
            let name = format!("{prefix}.{}", m.name());
            for nested in &m.nested_type {
                add(map, &name, nested);
            }
            map.insert(name, m.clone());
        }
        let mut map = HashMap::new();
        for file in &set.file {
            for message in &file.message_type {
                add(&mut map, &format!(".{}", file.package()), message);
            }
        }
        Self(map)
    }

    /// An encoding of `type_name` with every field filled the `hostility` way, nested messages
    /// to `depth` levels.
    fn encode(&self, type_name: &str, hostility: Hostility, depth: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        if hostility == Hostility::Empty {
            return buf;
        }
        let Some(message) = self.0.get(type_name) else {
            return buf;
        };
        for field in &message.field {
            let Ok(tag) = u32::try_from(field.number()) else {
                continue;
            };
            let count = if field.label() == Label::Repeated {
                2
            } else {
                1
            };
            for _ in 0..count {
                self.encode_field(field, tag, hostility, depth, &mut buf);
            }
        }
        buf
    }

    fn encode_field(
        &self,
        field: &FieldDescriptorProto,
        tag: u32,
        hostility: Hostility,
        depth: usize,
        buf: &mut Vec<u8>,
    ) {
        let high = hostility != Hostility::Lowest;
        let varint = |buf: &mut Vec<u8>, value: u64| {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(value, buf);
        };
        match field.r#type() {
            Type::String | Type::Bytes => {
                let text = match hostility {
                    Hostility::LongStrings => "x".repeat(100_000),
                    Hostility::ControlCharacters => {
                        "a\u{0}b\u{1}\u{1b}[31m\u{7f}\u{202e}é\n".to_owned()
                    }
                    _ => "1".to_owned(),
                };
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(text.len() as u64, buf);
                buf.put_slice(text.as_bytes());
            }
            Type::Message | Type::Group => {
                if depth == 0 {
                    return;
                }
                let inner = if field.type_name() == ".google.protobuf.Timestamp" {
                    let seconds: i64 = if high {
                        253_402_300_800
                    } else {
                        -62_135_596_800
                    };
                    prost_types::Timestamp {
                        seconds,
                        nanos: if high { 1_500_000_000 } else { -1 },
                    }
                    .encode_to_vec()
                } else {
                    self.encode(field.type_name(), hostility, depth - 1)
                };
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(inner.len() as u64, buf);
                buf.put_slice(&inner);
            }
            Type::Enum => varint(buf, if high { 999 } else { (-1_i64) as u64 }),
            Type::Bool => varint(buf, 1),
            Type::Int64 | Type::Sint64 => {
                let value = if high { i64::MAX } else { i64::MIN };
                if field.r#type() == Type::Sint64 {
                    varint(buf, ((value << 1) ^ (value >> 63)) as u64);
                } else {
                    varint(buf, value as u64);
                }
            }
            Type::Int32 | Type::Sint32 => {
                let value = i64::from(if high { i32::MAX } else { i32::MIN });
                if field.r#type() == Type::Sint32 {
                    varint(buf, ((value << 1) ^ (value >> 63)) as u64);
                } else {
                    varint(buf, value as u64);
                }
            }
            Type::Uint64 => varint(buf, if high { u64::MAX } else { 0 }),
            Type::Uint32 => varint(buf, if high { u64::from(u32::MAX) } else { 0 }),
            Type::Double | Type::Fixed64 | Type::Sfixed64 => {
                encode_key(tag, WireType::SixtyFourBit, buf);
                let bits = match field.r#type() {
                    Type::Double => if high { f64::INFINITY } else { f64::NAN }.to_bits(),
                    _ => {
                        if high {
                            u64::MAX
                        } else {
                            0
                        }
                    }
                };
                buf.put_u64_le(bits);
            }
            Type::Float | Type::Fixed32 | Type::Sfixed32 => {
                encode_key(tag, WireType::ThirtyTwoBit, buf);
                let bits = match field.r#type() {
                    Type::Float => if high { f32::INFINITY } else { f32::NAN }.to_bits(),
                    _ => {
                        if high {
                            u32::MAX
                        } else {
                            0
                        }
                    }
                };
                buf.put_u32_le(bits);
            }
        }
    }
}

/// Every RPC a service serves: path, input type, and whether requests / responses stream.
fn rpcs_of(set: &FileDescriptorSet, service: ServiceKind) -> Vec<(String, String, bool, bool)> {
    let package = format!("custops.{}.v1", service.schema());
    let mut rpcs = Vec::new();
    for file in &set.file {
        let own = file.package() == package;
        let feed = file.package() == "custops.common.v1";
        if !own && !feed {
            continue;
        }
        for api in &file.service {
            for method in &api.method {
                rpcs.push((
                    format!("/{}.{}/{}", file.package(), api.name(), method.name()),
                    method.input_type().to_owned(),
                    method.client_streaming(),
                    method.server_streaming(),
                ));
            }
        }
    }
    rpcs
}

/// The call's status: OK, or the error it ended with (for a stream: its first item, or the
/// error it ended with; a stream still open after a moment counts as OK).
async fn call(
    channel: tonic::transport::Channel,
    path: &str,
    request: Vec<u8>,
    client_streaming: bool,
    server_streaming: bool,
) -> anyhow::Result<tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let path: http::uri::PathAndQuery = path.parse()?;
    let outcome = if client_streaming {
        let stream = tokio_stream::iter([request.clone(), request]);
        grpc.client_streaming(tonic::Request::new(stream), path, RawCodec)
            .await
            .map(|_| ())
    } else if server_streaming {
        match grpc
            .server_streaming(tonic::Request::new(request), path, RawCodec)
            .await
        {
            Ok(response) => {
                let mut stream = response.into_inner();
                match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                    Ok(Err(status)) => Err(status),
                    _ => Ok(()),
                }
            }
            Err(status) => Err(status),
        }
    } else {
        grpc.unary(tonic::Request::new(request), path, RawCodec)
            .await
            .map(|_| ())
    };
    Ok(outcome.err().unwrap_or_else(|| tonic::Status::ok("")))
}

#[tokio::test]
async fn no_rpc_answers_hostile_requests_with_internal_unknown_or_oversized_errors()
-> anyhow::Result<()> {
    // As their own roles: a call that reaches a statement its role may not run would answer
    // INTERNAL here.
    let suite = TestSuite::start_as_roles().await?;
    let set = FileDescriptorSet::decode(custops_contracts::FILE_DESCRIPTOR_SET)?;
    let messages = Messages::of(&set);
    let mut failures = Vec::new();
    let mut calls = 0;
    let mut codes: HashMap<Code, usize> = HashMap::new();
    for service in ServiceKind::ALL {
        let channel = suite.channel(service).await?;
        for (path, input, client_streaming, server_streaming) in rpcs_of(&set, service) {
            for hostility in HOSTILITIES {
                let request = messages.encode(&input, hostility, 4);
                let status = call(
                    channel.clone(),
                    &path,
                    request,
                    client_streaming,
                    server_streaming,
                )
                .await?;
                calls += 1;
                *codes.entry(status.code()).or_default() += 1;
                let bytes = metadata_bytes(&status);
                if matches!(
                    status.code(),
                    Code::Unknown | Code::Internal | Code::Unimplemented
                ) || bytes >= 8 * 1024
                {
                    failures.push(format!(
                        "{service} {path} {hostility:?}: {:?} ({bytes} bytes of metadata) {}",
                        status.code(),
                        custops_common::error::clip(status.message(), 300)
                    ));
                }
            }
        }
    }
    // Every server still answers health.
    for service in ServiceKind::ALL {
        let status = HealthClient::new(suite.channel(service).await?)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner()
            .status;
        assert_eq!(status, 1, "{service} is not SERVING after the fuzzing");
    }
    // The check can fail: hostile requests were sent and mostly refused.
    assert!(calls > 500, "only {calls} calls");
    assert!(
        codes.get(&Code::InvalidArgument).copied().unwrap_or(0) > calls / 2,
        "{codes:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {calls} calls:\n{}",
        failures.len(),
        failures.join("\n")
    );
    suite.stop().await
}

/// The fields of an INVALID_ARGUMENT's BadRequest (empty for any other answer).
fn bad_fields<T>(result: Result<T, tonic::Status>) -> Vec<String> {
    use tonic_types::StatusExt;
    match result {
        Err(status) if status.code() == Code::InvalidArgument => status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn nul_bytes_deep_nesting_and_times_out_of_range_are_refused_naming_the_field()
-> anyhow::Result<()> {
    use custops_contracts::custops::profiles::v1 as profiles;
    use custops_contracts::custops::segmentation::v1 as segmentation;
    let suite = TestSuite::start().await?;
    let mut clients = suite.clients().await?;

    // A NUL in a key Postgres would be asked to store or compare.
    let nul = clients
        .profiles
        .get_attribute_definition(profiles::GetAttributeDefinitionRequest {
            attribute_name: "vip\0level".to_owned(),
        })
        .await;
    assert_eq!(bad_fields(nul), ["attribute_name"]);

    // A rule nested 100 deep (1 KB) is refused like one nested 10 deep, not INTERNAL.
    let mut rule = segmentation::Condition {
        kind: Some(segmentation::condition::Kind::Predicate(
            segmentation::Predicate {
                field: "tags".to_owned(),
                ..Default::default()
            },
        )),
    };
    for _ in 0..100 {
        rule = segmentation::Condition {
            kind: Some(segmentation::condition::Kind::Not(Box::new(
                segmentation::NotCondition {
                    condition: Some(Box::new(rule)),
                },
            ))),
        };
    }
    let deep = clients
        .segmentation
        .preview_segment(segmentation::PreviewSegmentRequest {
            rule: Some(rule),
            ..Default::default()
        })
        .await;
    let fields = bad_fields(deep);
    assert_eq!(fields.len(), 1, "{fields:?}");
    assert!(fields[0].starts_with("rule.not.condition."), "{fields:?}");

    // A purchase in year 1 is refused naming the time.
    let customer = clients.create_customer("fuzz@example.com").await?;
    let ancient = clients
        .profiles
        .record_activity(profiles::RecordActivityRequest {
            activity: Some(profiles::Activity {
                customer_id: customer,
                source: "order_service".to_owned(),
                event_id: "o-1".to_owned(),
                occur_time: Some(prost_types::Timestamp {
                    seconds: -62_135_596_800,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            customer_identity: None,
        })
        .await;
    assert_eq!(bad_fields(ancient), ["activity.occur_time"]);
    suite.stop().await
}
