//! `updraft`: the command line. Glue only: it parses flags, calls the
//! library crates, and prints through [`output`].

mod client;
mod cmd_bundle;
mod cmd_keys;
mod cmd_pipeline;
mod cmd_rollout;
mod cmd_serve;
mod cmd_server_client;
mod cmd_simulate;
mod cmd_simulate_against;
mod cmd_trust;
mod demo;
mod demo_fleet;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Firmware delivery from a commit to a fleet: signed bundles, trust roots, keys.
#[derive(Parser)]
#[command(name = "updraft", version, about)]
struct Cli {
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(flatten)]
    client: client::ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate signing keys and show key ids.
    #[command(subcommand)]
    Keys(cmd_keys::KeysCmd),
    /// Create, rotate, co-sign and check trust roots.
    #[command(subcommand)]
    Trust(cmd_trust::TrustCmd),
    /// Create, co-sign, verify and inspect firmware bundles.
    #[command(subcommand)]
    Bundle(cmd_bundle::BundleCmd),
    /// Run the delivery server (SQLite and a blob folder under ./updraft-data by default).
    Serve(Box<cmd_serve::ServeArgs>),
    /// Check rollout plans; create, watch and steer rollouts on a server.
    #[command(subcommand)]
    Rollout(cmd_rollout::RolloutCmd),
    /// Publish, list and show releases on a server.
    #[command(subcommand)]
    Release(cmd_server_client::ReleaseCmd),
    /// Promote releases between channels.
    #[command(subcommand)]
    Channel(cmd_server_client::ChannelCmd),
    /// List and show enrolled devices.
    #[command(subcommand)]
    Devices(cmd_server_client::DevicesCmd),
    /// Create enrollment tokens for devices.
    #[command(subcommand, name = "enroll-token")]
    EnrollToken(cmd_server_client::EnrollTokenCmd),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(cmd_server_client::TokenCmd),
    /// Query the server's audit log.
    Audit {
        /// Only this action (e.g. release.publish).
        #[arg(long)]
        action: Option<String>,
        /// Entries after this id.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Gated firmware CI from updraft.toml: stage graph, reproducible builds.
    #[command(subcommand)]
    Pipeline(cmd_pipeline::PipelineCmd),
    /// Rehearse a rollout plan on a simulated fleet (deterministic, no server).
    Simulate(Box<cmd_simulate::SimulateArgs>),
    /// Updraft end to end on embedded defaults: bundles, then a server, a virtual fleet and two rollouts.
    Demo(demo::DemoArgs),
}

/// Global options every command sees.
pub struct Ctx {
    pub quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx { quiet: cli.quiet };
    let result = match cli.command {
        Command::Keys(c) => cmd_keys::run(c, &ctx),
        Command::Trust(c) => cmd_trust::run(c, &ctx),
        Command::Bundle(c) => cmd_bundle::run(c, &ctx),
        Command::Rollout(c) => cmd_rollout::run(c, &cli.client, &ctx),
        Command::Release(c) => cmd_server_client::release(c, &cli.client, &ctx),
        Command::Channel(c) => cmd_server_client::channel(c, &cli.client, &ctx),
        Command::Devices(c) => cmd_server_client::devices(c, &cli.client, &ctx),
        Command::EnrollToken(c) => cmd_server_client::enroll_token(c, &cli.client, &ctx),
        Command::Token(c) => cmd_server_client::token(c, &cli.client, &ctx),
        Command::Audit { action, after, limit, json } => {
            cmd_server_client::audit(action, after, limit, json, &cli.client)
        }
        Command::Serve(a) => cmd_serve::run(*a, &ctx),
        Command::Pipeline(c) => cmd_pipeline::run(c, &cli.client, &ctx),
        Command::Simulate(a) => cmd_simulate::run(*a, &cli.client, &ctx),
        Command::Demo(a) => demo::run(a, &ctx),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let rejected = e.chain().any(|c| {
                c.downcast_ref::<updraft_bundle::Error>().is_some_and(|e| e.rejection().is_some())
                    || c.downcast_ref::<updraft_bundle::Rejection>().is_some()
                    || c.downcast_ref::<client::Refused>().is_some_and(|r| r.status < 500)
            });
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(if rejected { 1 } else { 2 })
        }
    }
}

/// Exit code 1: the input was rejected.
pub const REJECTED: u8 = 1;

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
