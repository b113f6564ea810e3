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

/// Firmware delivery from a commit to a fleet: gated CI, signed bundles,
/// trust roots, the delivery server and its client, rollout rehearsal.
#[derive(Parser)]
#[command(
    name = "updraft",
    version,
    after_help = "Exit codes: 0 done, 1 refused (the reason is printed), 2 error.\n\n\
Examples:\n  updraft demo\n  updraft bundle verify fw.bundle --trust root.json\n  \
updraft rollout status stable-2.3.1 --watch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--quiet`, on the commands that draw progress.
#[derive(clap::Args, Clone, Copy, Default)]
struct QuietArg {
    /// No progress bars (also NO_PROGRESS=1).
    #[arg(long, short, global = true)]
    quiet: bool,
}

/// A command group that draws progress bars.
#[derive(clap::Args)]
struct WithProgress<C: clap::Subcommand> {
    #[command(subcommand)]
    cmd: C,
    #[command(flatten)]
    quiet: QuietArg,
}

/// A server command group whose commands may draw progress.
#[derive(clap::Args)]
struct OnServerWithProgress<C: clap::Subcommand> {
    #[command(subcommand)]
    cmd: C,
    #[command(flatten)]
    client: client::ClientArgs,
    #[command(flatten)]
    quiet: QuietArg,
}

/// A command group that talks to a server: its subcommands take
/// `--server` and `--token`.
#[derive(clap::Args)]
struct OnServer<C: clap::Subcommand> {
    #[command(subcommand)]
    cmd: C,
    #[command(flatten)]
    client: client::ClientArgs,
}

/// A command that may talk to a server, and draws progress.
#[derive(clap::Args)]
struct WithServer<A: clap::Args> {
    #[command(flatten)]
    args: A,
    #[command(flatten)]
    client: client::ClientArgs,
    #[command(flatten)]
    quiet: QuietArg,
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
    Bundle(WithProgress<cmd_bundle::BundleCmd>),
    /// Run the delivery server (SQLite and a blob folder under ./updraft-data by default).
    #[command(after_help = "Examples:\n  updraft serve --trust root.json\n  \
updraft serve --trust root.json --database-url postgres://updraft@db/updraft --blob-store s3://fw-bucket/blobs\n  \
updraft serve --check --data-dir updraft-data\n  updraft serve admin-token --reset --data-dir updraft-data")]
    Serve(Box<cmd_serve::ServeArgs>),
    /// Check rollout plans; create, watch and steer rollouts on a server.
    Rollout(OnServerWithProgress<cmd_rollout::RolloutCmd>),
    /// Publish, list and show releases on a server.
    Release(OnServerWithProgress<cmd_server_client::ReleaseCmd>),
    /// Promote releases between channels.
    Channel(OnServer<cmd_server_client::ChannelCmd>),
    /// List, show, accept, tag and decommission devices.
    Devices(OnServer<cmd_server_client::DevicesCmd>),
    /// Create enrollment tokens for devices.
    #[command(name = "enroll-token")]
    EnrollToken(OnServer<cmd_server_client::EnrollTokenCmd>),
    /// Create, list and revoke API tokens.
    Token(OnServer<cmd_server_client::TokenCmd>),
    /// Open the server's web dashboard: prints a one-time sign-in link for your token.
    #[command(
        after_help = "Examples:\n  updraft dashboard\n  xdg-open \"$(updraft dashboard)\"\n  updraft dashboard --json"
    )]
    Dashboard {
        /// Print the link as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Query the server's audit log.
    #[command(after_help = "Examples:\n  updraft audit\n  updraft audit --action device.decommission --json")]
    Audit {
        /// Only this action (e.g. release.publish, device.enroll, rollout.command).
        #[arg(long)]
        action: Option<String>,
        /// Entries after this id (the last id a previous page printed).
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Entries to print.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print the entries as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Gated firmware CI from updraft.toml: stage graph, reproducible builds.
    Pipeline(OnServerWithProgress<cmd_pipeline::PipelineCmd>),
    /// Rehearse a rollout plan on a simulated fleet (deterministic, no server).
    #[command(
        after_help = "Examples:\n  updraft simulate --fleet examples/sim/fleet.toml --plan examples/sim/plan.toml --seed 1\n  \
updraft simulate --fleet examples/sim/fleet.toml --plan examples/sim/plan.toml --release examples/sim/release-bad.toml --seed 2 --compare\n  \
updraft simulate --fleet examples/sim/meters.toml --plan examples/sim/meters-plan.toml --release examples/sim/meters-rare-bad.toml --sweep 1..50\n  \
updraft simulate --against http://127.0.0.1:8080 --fleet examples/sim/fleet.toml"
    )]
    Simulate(Box<WithServer<cmd_simulate::SimulateArgs>>),
    /// Updraft end to end on embedded defaults: bundles, then a server, a virtual fleet and two rollouts.
    #[command(after_help = "Examples:\n  updraft demo\n  updraft demo --devices 1000 --image-mib 4 --json\n  \
updraft demo --keep   # leaves the server running; Ctrl-C stops it")]
    Demo(WithProgressArgs<demo::DemoArgs>),
}

/// A command that draws progress bars.
#[derive(clap::Args)]
struct WithProgressArgs<A: clap::Args> {
    #[command(flatten)]
    args: A,
    #[command(flatten)]
    quiet: QuietArg,
}

/// Global options every command sees.
pub struct Ctx {
    pub quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = |q: QuietArg| Ctx { quiet: q.quiet };
    let none = Ctx { quiet: false };
    let result = match cli.command {
        Command::Keys(c) => cmd_keys::run(c, &none),
        Command::Trust(c) => cmd_trust::run(c, &none),
        Command::Bundle(s) => cmd_bundle::run(s.cmd, &ctx(s.quiet)),
        Command::Rollout(s) => cmd_rollout::run(s.cmd, &s.client, &ctx(s.quiet)),
        Command::Release(s) => cmd_server_client::release(s.cmd, &s.client, &ctx(s.quiet)),
        Command::Channel(s) => cmd_server_client::channel(s.cmd, &s.client, &none),
        Command::Devices(s) => cmd_server_client::devices(s.cmd, &s.client, &none),
        Command::EnrollToken(s) => cmd_server_client::enroll_token(s.cmd, &s.client, &none),
        Command::Token(s) => cmd_server_client::token(s.cmd, &s.client, &none),
        Command::Dashboard { json, client } => cmd_server_client::dashboard(json, &client),
        Command::Audit { action, after, limit, json, client } => {
            cmd_server_client::audit(action, after, limit, json, &client)
        }
        Command::Serve(a) => cmd_serve::run(*a, &none),
        Command::Pipeline(s) => cmd_pipeline::run(s.cmd, &s.client, &ctx(s.quiet)),
        Command::Simulate(a) => {
            let a = *a;
            cmd_simulate::run(a.args, &a.client, &ctx(a.quiet))
        }
        Command::Demo(a) => demo::run(a.args, &ctx(a.quiet)),
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

    /// Every command says what it does and shows an example; every flag
    /// and argument says what it is; server flags only where a server is used.
    #[test]
    fn every_command_explains_itself() {
        fn walk(cmd: &clap::Command, path: &str, problems: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name()).trim().to_owned();
            if cmd.get_about().is_none() {
                problems.push(format!("{path}: no description"));
            }
            let leaf = !cmd.has_subcommands();
            if leaf && !cmd.get_after_help().is_some_and(|h| h.to_string().contains("updraft")) {
                problems.push(format!("{path}: no example in --help"));
            }
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(id, "help" | "version") || a.is_hide_set() {
                    continue;
                }
                if a.get_help().is_none() {
                    problems.push(format!("{path}: {id} has no description"));
                }
                let offline = ["keys", "trust", "bundle", "serve", "demo"];
                if matches!(id, "server" | "token") && offline.iter().any(|o| path.starts_with(&format!("updraft {o}")))
                {
                    problems.push(format!("{path}: --{id} on a command that uses no server"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, problems);
            }
        }
        let mut problems = Vec::new();
        walk(&<super::Cli as clap::CommandFactory>::command(), "", &mut problems);
        assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    }
}
