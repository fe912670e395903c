//! `meshctl`: operator CLI (see `mesh_control::cli`).

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = mesh_control::cli::Cli::parse();
    std::process::exit(mesh_control::cli::run(cli).await);
}
