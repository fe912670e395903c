//! Generates the gRPC code from `proto/` without a system `protoc`: protox compiles the files to
//! a descriptor set and tonic-prost-build generates from it.

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=proto/mesh.proto");
    let fds = protox::compile(["proto/mesh.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Forwarded HTTP bodies are passed along as `Bytes`: no copy per retry or hop.
        .bytes(".mesh.v1.HttpRequest.body")
        .bytes(".mesh.v1.HttpReply.body")
        .compile_fds(fds)?;
    Ok(())
}
