//! `meshctl`: operator CLI (see `mesh_control::cli`).

use clap::Parser;
use mesh_control::cli::{Cli, consul_style_args};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse_from(consul_style_args(std::env::args()));
    std::process::exit(mesh_control::cli::run(cli).await);
}
