//! The reference control plane as a standalone server on loopback, for manual tests
//! and for tests that run the agent in another process or container.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use hostbeat_refplane::{ControlPlane, PlaneConfig};

/// Reference control plane for hostbeat (a test tool: no persistence, no TLS).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// A client as ID:SECRET (repeatable).
    #[arg(
        long = "client",
        value_name = "ID:SECRET",
        default_value = "hostbeat:demo-secret"
    )]
    clients: Vec<String>,
    /// Lifetime of access tokens, like 15m.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    token_lifetime: Duration,
    /// Ask agents for this interval (seconds) in heartbeat answers.
    #[arg(long)]
    next_heartbeat_in: Option<f64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let plane = ControlPlane::new(PlaneConfig {
        token_lifetime: args.token_lifetime,
        next_heartbeat_in: args.next_heartbeat_in,
        ..PlaneConfig::default()
    });
    for client in &args.clients {
        let Some((id, secret)) = client.split_once(':') else {
            eprintln!("--client takes ID:SECRET, got {client:?}");
            std::process::exit(2);
        };
        plane.add_client(id, secret);
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "hostbeat-refplane listening on http://{}",
        listener.local_addr()?
    );
    tokio::select! {
        () = plane.serve(listener, None) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
