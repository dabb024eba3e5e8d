//! The checked-in generated code must match what the `.proto` files produce today.

use std::path::Path;

#[test]
fn generated_code_matches_proto_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().expect("create temp dir");
    let fds = protox::compile(["evident/v1/evident.proto"], [root]).expect("compile .proto files");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("generate Rust code");

    let fresh = std::fs::read_to_string(out.path().join("evident.v1.rs")).expect("read generated");
    let checked_in_path = root.join("src/gen/evident.v1.rs");
    let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
    if fresh != checked_in {
        if std::env::var_os("EVIDENT_REGENERATE_PROTO").is_some() {
            std::fs::write(&checked_in_path, &fresh).expect("write generated code");
            return;
        }
        panic!(
            "src/gen/evident.v1.rs is out of date with evident/v1/evident.proto; \
             regenerate it with: EVIDENT_REGENERATE_PROTO=1 cargo test -p evident-proto"
        );
    }
}
