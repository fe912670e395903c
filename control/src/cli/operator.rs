//! `meshctl operator raft list-peers | remove-peer`.

use clap::Subcommand;

use super::{ApiClient, CliError, Format, client::encode, table};

#[derive(Subcommand)]
pub enum OperatorCmd {
    /// Raft operations.
    Raft {
        #[command(subcommand)]
        command: RaftCmd,
    },
}

#[derive(Subcommand)]
pub enum RaftCmd {
    /// Show the Raft configuration: servers, their roles and the leader.
    ListPeers {
        /// Answer from the contacted server's own view, without asking the leader.
        #[arg(long)]
        stale: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove a server from the Raft configuration.
    RemovePeer {
        /// Node ID or name of the server.
        #[arg(long, conflicts_with = "address", required_unless_present = "address")]
        id: Option<String>,
        /// RPC address of the server.
        #[arg(long)]
        address: Option<String>,
    },
}

pub async fn run(api: &ApiClient, cmd: OperatorCmd) -> Result<i32, CliError> {
    let OperatorCmd::Raft { command } = cmd;
    match command {
        RaftCmd::ListPeers { stale, format } => {
            let path = if stale {
                "/v1/operator/raft/configuration?stale"
            } else {
                "/v1/operator/raft/configuration"
            };
            let v = api.get_json(path).await?;
            table::print(&v, format, |v| {
                let rows = table::rows(&v["Servers"], |s| {
                    let state = if s["Leader"].as_bool() == Some(true) {
                        "leader"
                    } else if s["Voter"].as_bool() == Some(true) {
                        "follower"
                    } else {
                        "non-voter"
                    };
                    vec![
                        table::text(&s["Node"]),
                        table::text(&s["ID"]),
                        table::text(&s["Address"]),
                        state.to_string(),
                        s["Voter"].as_bool().unwrap_or(false).to_string(),
                        s["ProtocolVersion"].as_str().unwrap_or("3").to_string(),
                    ]
                });
                let header = ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"];
                table::render(&header, &rows)
            });
            Ok(0)
        }
        RaftCmd::RemovePeer { id, address } => {
            let q = match (&id, &address) {
                (Some(id), _) => format!("id={}", encode(id)),
                (_, Some(a)) => format!("address={}", encode(a)),
                _ => return Err(CliError::Usage("give --id or --address".into())),
            };
            api.call(
                http::Method::DELETE,
                &format!("/v1/operator/raft/peer?{q}"),
                None,
            )
            .await?;
            println!(
                "Removed peer with {}",
                id.map(|i| format!("id {i:?}"))
                    .unwrap_or_else(|| format!("address {:?}", address.unwrap_or_default()))
            );
            Ok(0)
        }
    }
}
