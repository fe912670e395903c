//! Generates the gRPC test service of the L7 proxy tests (`proto/l7test.proto`) without a
//! system `protoc`: protox compiles it to a descriptor set and tonic-prost-build generates
//! from it (the same route as `control/build.rs`).

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=proto/l7test.proto");
    let fds = protox::compile(["proto/l7test.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
