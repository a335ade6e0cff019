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

    let includes = [proto_root.clone(), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("custops_descriptor.bin"))
        .include_file("custops.rs")
        // RPCs a service has not implemented yet answer UNIMPLEMENTED instead of failing the
        // build; each service's issue lists the RPCs it must implement.
        .generate_default_stubs(true)
        .compile_with_config(config, &protos, &includes)?;

    println!("cargo:rerun-if-changed={}", proto_root.display());
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    Ok(())
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
