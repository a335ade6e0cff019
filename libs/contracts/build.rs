//! Compiles every `.proto` under the workspace's `proto/` folder into one module tree, and
//! writes the encoded file descriptor set that the services' reflection endpoints serve.
//!
//! protoc comes from the `protoc-bin-vendored` crate, together with the well-known-type
//! includes (`google/protobuf/*.proto`), so a fresh machine needs nothing installed by hand.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto_root = proto_root.canonicalize()?;
    let mut protos = Vec::new();
    collect_protos(&proto_root, &mut protos)?;
    protos.sort();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Every message implements `prost::Name`, so an event can be packed into the feed's
    // `google.protobuf.Any` (and unpacked with `Any::to_msg`) under the standard type URL
    // `type.googleapis.com/<full name>`.
    config
        .enable_type_names()
        .type_name_domain([".custops"], "type.googleapis.com");
    // Maps are ordered, so a message always encodes to the same bytes: request fingerprints
    // (idempotency) and page tokens are taken over the encoding, and a `HashMap` would encode
    // one request in a different order on each decoding.
    config.btree_map(["."]);

    let includes = [proto_root.clone(), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("custops_descriptor.bin"))
        .include_file("custops.rs")
        // RPCs a service has not implemented yet answer UNIMPLEMENTED instead of failing the
        // build; each service's issue lists the RPCs it must implement.
        .generate_default_stubs(true)
        .compile_with_config(config, &protos, &includes)?;
    write_method_scopes(
        &out_dir.join("custops_descriptor.bin"),
        &out_dir.join("method_scopes.rs"),
    )?;

    println!("cargo:rerun-if-changed={}", proto_root.display());
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    Ok(())
}

/// Reads the scope each RPC declares in its doc comment ("Scope `loyalty.points.write`.") and
/// writes them as a table, so the contract is the one place an RPC's required scope is stated.
/// An RPC without exactly one such declaration fails the build: no method can be left
/// unprotected by forgetting it.
fn write_method_scopes(descriptor: &Path, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use prost::Message;

    let set = prost_types::FileDescriptorSet::decode(std::fs::read(descriptor)?.as_slice())?;
    let mut rows = Vec::new();
    let mut client_streaming = Vec::new();
    let mut server_streaming = Vec::new();
    for file in &set.file {
        let comments = file
            .source_code_info
            .as_ref()
            .map(|info| info.location.as_slice())
            .unwrap_or_default();
        for (service_index, service) in file.service.iter().enumerate() {
            for (method_index, method) in service.method.iter().enumerate() {
                // Source path of a method: 6 = FileDescriptorProto.service, 2 = .method.
                let path = [6, service_index as i32, 2, method_index as i32];
                let comment = comments
                    .iter()
                    .find(|location| location.path == path)
                    .and_then(|location| location.leading_comments.clone())
                    .unwrap_or_default();
                let rpc = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                let scopes = declared_scopes(&comment);
                if scopes.len() != 1 {
                    return Err(format!(
                        "{rpc}: its doc comment must declare exactly one scope as \"Scope `name`\", found {scopes:?}"
                    )
                    .into());
                }
                rows.push(format!("    ({rpc:?}, {:?}),\n", scopes[0]));
                if method.client_streaming() {
                    client_streaming.push(format!("    {rpc:?},\n"));
                }
                if method.server_streaming() {
                    server_streaming.push(format!("    {rpc:?},\n"));
                }
            }
        }
    }
    rows.sort();
    client_streaming.sort();
    server_streaming.sort();
    let table = format!(
        "/// Every RPC's full path and the scope its doc comment declares. `{{service}}` stands for\n\
         /// the name of the serving service (the shared event feed).\n\
         pub const METHOD_SCOPES: &[(&str, &str)] = &[\n{}];\n\n\
         /// The full paths of the RPCs whose request is a stream (the servers give them their\n\
         /// own call budget and an idle timeout).\n\
         pub const CLIENT_STREAMING_METHODS: &[&str] = &[\n{}];\n\n\
         /// The full paths of the RPCs whose response is a stream (their slot is held until the\n\
         /// stream ends).\n\
         pub const SERVER_STREAMING_METHODS: &[&str] = &[\n{}];\n",
        rows.concat(),
        client_streaming.concat(),
        server_streaming.concat()
    );
    std::fs::write(out, table)?;
    Ok(())
}

/// The distinct scopes named as "Scope `x`" or "Scope: `x`" in a comment (line breaks allowed).
fn declared_scopes(comment: &str) -> Vec<String> {
    let text = comment.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut scopes = Vec::new();
    for marker in ["Scope `", "Scope: `"] {
        for (at, _) in text.match_indices(marker) {
            let rest = &text[at + marker.len()..];
            if let Some(end) = rest.find('`') {
                let scope = rest[..end].to_owned();
                if !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
        }
    }
    scopes
}

/// Finds every `.proto` file below `dir`, so a new contract file needs no build change.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
