//! Compiles the public and peer protos with a vendored protoc (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(
            config,
            &[
                "proto/engram/v1/error.proto",
                "proto/engram/v1/engram.proto",
                "proto/engram/peer/v1/peer.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
