//! Checks every request message against its contract before any handler decodes it, once for
//! all services: what Postgres cannot store, what prost would refuse as INTERNAL, and times out
//! of any sensible range all become INVALID_ARGUMENT naming the field, whatever RPC carries
//! them.
//!
//! The check walks the protobuf wire bytes with the schema from the contracts' descriptor set
//! (so a new field or RPC is covered with no code change) and refuses, with one field
//! violation each:
//! - a string holding a NUL character (Postgres text cannot store it) or invalid UTF-8;
//! - messages nested deeper than [`MAX_DEPTH`] (prost stops at 100 and answers INTERNAL);
//! - a `google.protobuf.Timestamp` before 1970-01-01T00:00:00Z or after
//!   9999-12-31T23:59:59Z, or with nanoseconds outside 0..1e9 (the documented range of every
//!   time a caller supplies), and a `google.protobuf.Duration` outside the type's own range
//!   (±10,000 years, nanoseconds of the seconds' sign);
//! - bytes that are not a protobuf encoding at all.
//!
//! Unary and server-streaming requests are buffered (one message, at most the server's message
//! limit) and checked before the handler runs; client streams are checked message by message
//! as they arrive, and a bad message ends the stream with INVALID_ARGUMENT. Compressed messages
//! pass unchecked (the servers accept none).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::BodyExt;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use tonic::Status;
use tonic::body::Body;
use tower::Service;

use crate::error::{FieldViolation, ServiceError};
use crate::layers::{BoxFuture, CallKind, Middleware};
use crate::server::MAX_MESSAGE_BYTES;

/// Deepest nesting of messages a request may have (the deepest contract, a segment rule at its
/// limit of 8 levels, needs about 30).
pub const MAX_DEPTH: usize = 64;
/// Earliest time a caller may supply: 1970-01-01T00:00:00Z.
pub const MIN_TIMESTAMP_SECONDS: i64 = 0;
/// Latest time a caller may supply: 9999-12-31T23:59:59Z (the end of Timestamp's own range).
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
/// Violations reported per request; the error module counts the rest.
const MAX_REPORTED: usize = 20;

/// What the walker knows of one field.
#[derive(Debug, Clone)]
enum FieldKind {
    /// A string: checked for NUL and UTF-8.
    Text,
    /// A message: walked, by its fully qualified name (".pkg.Name").
    Message(String),
    /// Bytes: not looked into.
    Bytes,
    /// A scalar encoded with this wire type (0 varint, 1 fixed 64-bit, 5 fixed 32-bit).
    Scalar(u64),
}

impl FieldKind {
    /// Whether a value of this field may arrive with `wire_type` (repeated scalars also
    /// packed, as one length-delimited run).
    fn accepts(&self, wire_type: u64, repeated: bool) -> bool {
        match self {
            FieldKind::Text | FieldKind::Message(_) | FieldKind::Bytes => wire_type == 2,
            FieldKind::Scalar(native) => wire_type == *native || (repeated && wire_type == 2),
        }
    }
}

#[derive(Debug, Clone)]
struct FieldInfo {
    name: String,
    kind: FieldKind,
    repeated: bool,
}

/// Request types of every RPC and the fields of every message, from the descriptor set.
#[derive(Debug, Default)]
struct Schema {
    /// `/package.Service/Method` → fully qualified input type.
    methods: HashMap<String, String>,
    /// Fully qualified message name → field number → field.
    messages: HashMap<String, HashMap<u32, FieldInfo>>,
}

const TIMESTAMP: &str = ".google.protobuf.Timestamp";
const DURATION: &str = ".google.protobuf.Duration";
/// The largest magnitude of a Duration's seconds (10,000 years), per duration.proto.
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut schema = Schema::default();
        // A descriptor set that cannot be read is a build defect; checking nothing then is
        // the old behaviour, not an outage.
        let Ok(set) =
            prost_types::FileDescriptorSet::decode(custops_contracts::FILE_DESCRIPTOR_SET)
        else {
            tracing::error!("the contracts' descriptor set cannot be read: requests go unchecked");
            return schema;
        };
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    schema.methods.insert(
                        format!("/{package}.{}/{}", service.name(), method.name()),
                        method.input_type().to_owned(),
                    );
                }
            }
            let prefix = if package.is_empty() {
                String::new()
            } else {
                format!(".{package}")
            };
            for message in &file.message_type {
                add_message(&mut schema.messages, &prefix, message);
            }
        }
        schema
    })
}

fn add_message(
    messages: &mut HashMap<String, HashMap<u32, FieldInfo>>,
    prefix: &str,
    message: &prost_types::DescriptorProto,
) {
    let name = format!("{prefix}.{}", message.name());
    let fields = message
        .field
        .iter()
        .filter_map(|field| {
            let number = u32::try_from(field.number()).ok()?;
            let kind = match field.r#type() {
                Type::String => FieldKind::Text,
                Type::Message | Type::Group => FieldKind::Message(field.type_name().to_owned()),
                Type::Bytes => FieldKind::Bytes,
                Type::Double | Type::Fixed64 | Type::Sfixed64 => FieldKind::Scalar(1),
                Type::Float | Type::Fixed32 | Type::Sfixed32 => FieldKind::Scalar(5),
                Type::Int64
                | Type::Uint64
                | Type::Int32
                | Type::Uint32
                | Type::Bool
                | Type::Enum
                | Type::Sint32
                | Type::Sint64 => FieldKind::Scalar(0),
            };
            Some((
                number,
                FieldInfo {
                    name: field.name().to_owned(),
                    kind,
                    repeated: field.label() == Label::Repeated,
                },
            ))
        })
        .collect();
    for nested in &message.nested_type {
        add_message(messages, &name, nested);
    }
    messages.insert(name, fields);
}

/// The wire bytes are not a protobuf encoding.
#[derive(Debug)]
struct Malformed;

/// Where the walker is, rendered into a field path (`rule.all.conditions[2]`) only when a
/// violation is found: checking a good request allocates nothing for paths.
enum Path<'a> {
    /// The request itself, or the n-th message of a stream (`[n]`).
    Root(&'a str),
    /// A field of the message at `parent`, with its index when repeated.
    Field {
        parent: &'a Path<'a>,
        name: &'a str,
        index: Option<usize>,
    },
}

impl Path<'_> {
    fn render(&self) -> String {
        match self {
            Path::Root(prefix) => (*prefix).to_owned(),
            Path::Field {
                parent,
                name,
                index,
            } => {
                let mut path = parent.render();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                if let Some(index) = index {
                    path.push_str(&format!("[{index}]"));
                }
                path
            }
        }
    }
}

/// Walks one message.
struct Walker<'s> {
    schema: &'s Schema,
    violations: Vec<FieldViolation>,
    /// Violations beyond [`MAX_REPORTED`], counted only.
    more: usize,
}

impl Walker<'_> {
    fn violation(&mut self, field: &Path<'_>, description: &str) {
        if self.violations.len() < MAX_REPORTED {
            self.violations.push(FieldViolation {
                field: field.render(),
                description: description.to_owned(),
            });
        } else {
            self.more += 1;
        }
    }

    fn message(
        &mut self,
        type_name: &str,
        mut bytes: &[u8],
        path: &Path<'_>,
        depth: usize,
    ) -> Result<(), Malformed> {
        if type_name == TIMESTAMP {
            return self.timestamp(bytes, path);
        }
        if type_name == DURATION {
            return self.duration(bytes, path);
        }
        let fields = self.schema.messages.get(type_name);
        // Occurrences of repeated fields so far, for their indices (most messages have none).
        let mut seen: Vec<(u32, usize)> = Vec::new();
        while bytes.has_remaining() {
            let key = prost::encoding::decode_varint(&mut bytes).map_err(|_| Malformed)?;
            let number = u32::try_from(key >> 3).map_err(|_| Malformed)?;
            let wire_type = key & 7;
            let field = fields.and_then(|fields| fields.get(&number));
            let field_path = field.map(|field| {
                let index =
                    field
                        .repeated
                        .then(|| match seen.iter_mut().find(|(n, _)| *n == number) {
                            Some((_, count)) => {
                                *count += 1;
                                *count - 1
                            }
                            None => {
                                seen.push((number, 1));
                                0
                            }
                        });
                Path::Field {
                    parent: path,
                    name: &field.name,
                    index,
                }
            });
            if let (Some(field), Some(field_path)) = (field, &field_path)
                && !field.kind.accepts(wire_type, field.repeated)
            {
                // prost would refuse the whole message as INTERNAL.
                self.violation(field_path, "is not encoded as its declared type");
            }
            match wire_type {
                0 => {
                    prost::encoding::decode_varint(&mut bytes).map_err(|_| Malformed)?;
                }
                1 | 5 => {
                    let width = if wire_type == 1 { 8 } else { 4 };
                    if bytes.remaining() < width {
                        return Err(Malformed);
                    }
                    bytes.advance(width);
                }
                2 => {
                    let len = prost::encoding::decode_varint(&mut bytes).map_err(|_| Malformed)?;
                    let len = usize::try_from(len).map_err(|_| Malformed)?;
                    if bytes.remaining() < len {
                        return Err(Malformed);
                    }
                    let (value, rest) = bytes.split_at(len);
                    bytes = rest;
                    let (Some(field), Some(field_path)) = (field, field_path) else {
                        continue;
                    };
                    match &field.kind {
                        FieldKind::Text => match std::str::from_utf8(value) {
                            Err(_) => self.violation(&field_path, "is not valid UTF-8"),
                            Ok(text) if text.contains('\0') => {
                                self.violation(&field_path, "must not contain a NUL character");
                            }
                            Ok(_) => {}
                        },
                        FieldKind::Message(type_name) => {
                            if depth >= MAX_DEPTH {
                                self.violation(
                                    &field_path,
                                    &format!("is nested more than {MAX_DEPTH} messages deep"),
                                );
                            } else if let Err(Malformed) =
                                self.message(type_name, value, &field_path, depth + 1)
                            {
                                self.violation(&field_path, "is not a valid protobuf message");
                            }
                        }
                        // Bytes, and packed repeated numbers.
                        FieldKind::Bytes | FieldKind::Scalar(_) => {}
                    }
                }
                // Groups (3, 4) do not exist in proto3; anything else is not protobuf.
                _ => return Err(Malformed),
            }
        }
        Ok(())
    }

    fn duration(&mut self, bytes: &[u8], path: &Path<'_>) -> Result<(), Malformed> {
        let Ok(d) = prost_types::Duration::decode(bytes) else {
            return Err(Malformed);
        };
        let in_range = (-MAX_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(&d.seconds)
            && (-999_999_999..=999_999_999).contains(&d.nanos)
            && (d.seconds == 0 || d.nanos == 0 || (d.seconds > 0) == (d.nanos > 0));
        if !in_range {
            self.violation(path, "is not a valid duration");
        }
        Ok(())
    }

    fn timestamp(&mut self, bytes: &[u8], path: &Path<'_>) -> Result<(), Malformed> {
        let Ok(time) = prost_types::Timestamp::decode(bytes) else {
            return Err(Malformed);
        };
        let in_range = (MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&time.seconds)
            && (0..1_000_000_000).contains(&time.nanos);
        if !in_range {
            self.violation(
                path,
                "must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
            );
        }
        Ok(())
    }
}

/// The violations of one encoded request of `type_name`, with `prefix` before every path
/// (`[3]` for the fourth message of a stream); empty when it passes.
fn check_message(type_name: &str, bytes: &[u8], prefix: &str) -> Option<ServiceError> {
    let mut walker = Walker {
        schema: schema(),
        violations: Vec::new(),
        more: 0,
    };
    if walker
        .message(type_name, bytes, &Path::Root(prefix), 0)
        .is_err()
    {
        let whole = if prefix.is_empty() { "request" } else { prefix };
        walker.violation(&Path::Root(whole), "is not a valid protobuf message");
    }
    if walker.violations.is_empty() {
        return None;
    }
    if walker.more > 0 {
        let more = format!("and {} more bad fields", walker.more);
        walker.violation(&Path::Root("request"), &more);
    }
    Some(ServiceError::InvalidArgument(walker.violations))
}

/// Splits complete gRPC frames (1-byte compressed flag, 4-byte big-endian length, message) off
/// the front of `buf`.
fn next_frame(buf: &mut BytesMut) -> Option<(bool, Bytes)> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    let compressed = buf[0] != 0;
    let frame = buf.split_to(5 + len).freeze();
    Some((compressed, frame))
}

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct RequestCheckMiddleware;

impl Middleware for RequestCheckMiddleware {
    fn handle<S>(
        &self,
        mut inner: S,
        request: Request<Body>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let path = request.uri().path().to_owned();
        let Some(type_name) = schema().methods.get(&path).cloned() else {
            return Box::pin(inner.call(request));
        };
        if CallKind::of(&path) == CallKind::ClientStream {
            let request = request.map(|body| Body::new(CheckedStream::new(body, type_name)));
            return Box::pin(inner.call(request));
        }
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = match read_limited(body).await {
                Ok(bytes) => bytes,
                Err(status) => return Ok(status.into_http()),
            };
            // Walked in place: the body is not copied.
            let mut rest: &[u8] = &bytes;
            while rest.len() >= 5 {
                let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
                let Some(message) = rest.get(5..5 + len) else {
                    // An incomplete frame is left for tonic to refuse.
                    break;
                };
                if rest[0] == 0
                    && let Some(error) = check_message(&type_name, message, "")
                {
                    return Ok(Status::from(error).into_http());
                }
                rest = &rest[5 + len..];
            }
            let request = Request::from_parts(parts, Body::new(http_body_util::Full::new(bytes)));
            inner.call(request).await
        })
    }
}

/// The whole request body, refused past the server's message limit (plus framing).
async fn read_limited(body: Body) -> Result<Bytes, Status> {
    let limited = http_body_util::Limited::new(body, MAX_MESSAGE_BYTES + 5);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(Status::resource_exhausted(format!(
                "the request is larger than the {MAX_MESSAGE_BYTES} bytes a message may have"
            )))
        }
        Err(error) => Err(Status::from_error(error)),
    }
}

/// A client stream whose messages are checked one by one as they arrive; a bad one ends the
/// stream with INVALID_ARGUMENT naming `[n].field` (n counted from 0).
struct CheckedStream {
    inner: Body,
    type_name: String,
    buf: BytesMut,
    index: usize,
    failed: bool,
}

impl CheckedStream {
    fn new(inner: Body, type_name: String) -> Self {
        Self {
            inner,
            type_name,
            buf: BytesMut::new(),
            index: 0,
            failed: false,
        }
    }
}

impl http_body::Body for CheckedStream {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        loop {
            // Pass on every complete, checked message held.
            let mut out = BytesMut::new();
            while let Some((compressed, frame)) = next_frame(&mut this.buf) {
                if !compressed
                    && let Some(error) =
                        check_message(&this.type_name, &frame[5..], &format!("[{}]", this.index))
                {
                    this.failed = true;
                    return Poll::Ready(Some(Err(Status::from(error))));
                }
                this.index += 1;
                out.extend_from_slice(&frame);
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(http_body::Frame::data(out.freeze()))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.buf.extend_from_slice(&data),
                    // Trailers (none in practice for requests) go through as they are.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(None) => {
                    // An incomplete last frame is left for tonic to refuse.
                    if this.buf.is_empty() {
                        return Poll::Ready(None);
                    }
                    let rest = this.buf.split().freeze();
                    return Poll::Ready(Some(Ok(http_body::Frame::data(rest))));
                }
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buf.is_empty() && self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(error: Option<ServiceError>) -> Vec<String> {
        match error {
            Some(ServiceError::InvalidArgument(violations)) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            _ => Vec::new(),
        }
    }

    #[test]
    fn the_schema_knows_every_rpc_of_the_contracts() {
        assert_eq!(
            schema().methods.len(),
            custops_contracts::METHOD_SCOPES.len()
        );
        assert!(schema().messages.contains_key(TIMESTAMP));
    }

    #[test]
    fn nul_bytes_bad_times_and_garbage_are_named_and_good_requests_pass() {
        use custops_contracts::custops::profiles::v1 as pb;
        let good = pb::RecordActivityRequest {
            activity: Some(pb::Activity {
                customer_id: "0190f6f5-0000-7000-8000-000000000001".to_owned(),
                occur_time: Some(prost_types::Timestamp {
                    seconds: 1_790_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            customer_identity: None,
        };
        let name = ".custops.profiles.v1.RecordActivityRequest";
        assert!(check_message(name, &good.encode_to_vec(), "").is_none());

        let mut bad = good.clone();
        if let Some(activity) = bad.activity.as_mut() {
            activity.source = "order\0service".to_owned();
            activity.occur_time = Some(prost_types::Timestamp {
                seconds: -62_135_596_800, // 0001-01-01
                nanos: 0,
            });
        }
        assert_eq!(
            fields(check_message(name, &bad.encode_to_vec(), "")),
            ["activity.source", "activity.occur_time"]
        );
        // The third message of a client stream.
        assert_eq!(
            fields(check_message(name, &bad.encode_to_vec(), "[2]")),
            ["[2].activity.source", "[2].activity.occur_time"]
        );
        assert_eq!(fields(check_message(name, &[0x07, 0xff], "")), ["request"]);
        // Field 1 (`activity`, a message) sent as a varint.
        assert_eq!(fields(check_message(name, &[0x08, 0x01], "")), ["activity"]);
        assert_eq!(
            fields(check_message(name, &good.encode_to_vec(), "[2]")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn repeated_and_map_fields_are_named_by_index() {
        use custops_contracts::custops::profiles::v1 as pb;
        let request = pb::BatchGetCustomersRequest {
            customer_ids: vec!["a".to_owned(), "b\0".to_owned()],
        };
        assert_eq!(
            fields(check_message(
                ".custops.profiles.v1.BatchGetCustomersRequest",
                &request.encode_to_vec(),
                ""
            )),
            ["customer_ids[1]"]
        );
    }

    #[test]
    fn nesting_past_the_limit_is_refused_at_its_path() {
        use custops_contracts::custops::segmentation::v1 as pb;
        let mut rule = pb::Condition {
            kind: Some(pb::condition::Kind::Predicate(pb::Predicate::default())),
        };
        for _ in 0..100 {
            rule = pb::Condition {
                kind: Some(pb::condition::Kind::Not(Box::new(pb::NotCondition {
                    condition: Some(Box::new(rule)),
                }))),
            };
        }
        let request = pb::PreviewSegmentRequest {
            rule: Some(rule),
            ..Default::default()
        };
        let bad = fields(check_message(
            ".custops.segmentation.v1.PreviewSegmentRequest",
            &request.encode_to_vec(),
            "",
        ));
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].starts_with("rule.not.condition.not.condition."),
            "{bad:?}"
        );
    }
}
