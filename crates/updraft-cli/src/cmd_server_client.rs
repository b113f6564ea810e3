//! Commands that talk to a server: `release`, `channel`, `devices`,
//! `enroll-token`, `token`, `audit` (and `rollout` beyond `check`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{Client, ClientArgs};
use crate::output::{emit, progress_enabled};
use crate::Ctx;

#[derive(Subcommand)]
pub enum ReleaseCmd {
    /// Upload a bundle; the server verifies it against its trust root.
    #[command(after_help = "Example:\n  updraft release publish sensor-fw-2.3.1.bundle --channel beta")]
    Publish {
        /// The bundle file.
        file: PathBuf,
        /// Also promote it into this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// List releases.
    #[command(after_help = "Example:\n  updraft release list")]
    List {
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Show a release (NAME@VERSION).
    #[command(after_help = "Example:\n  updraft release show sensor-fw@2.3.1")]
    Show {
        /// The release, NAME@VERSION.
        id: String,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ChannelCmd {
    /// Put a release (NAME@VERSION) into a channel, without rebuilding it.
    #[command(after_help = "Example:\n  updraft channel promote stable sensor-fw@2.3.1")]
    Promote {
        /// The channel (dev, beta, stable, or any name).
        channel: String,
        /// The release, NAME@VERSION.
        release: String,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// List the releases of a channel.
    #[command(after_help = "Example:\n  updraft channel show stable")]
    Show {
        /// The channel.
        channel: String,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DevicesCmd {
    /// List devices, a page at a time (a total and the next page's cursor are printed).
    #[command(after_help = "Examples:\n  updraft devices list\n  \
updraft devices list --filter hardware=rev-c --filter release=fw@1.2.0 --filter online=false\n  \
updraft devices list --filter attr.site=berlin --filter status=pending --all --json")]
    List {
        /// KEY=VALUE, repeatable (all must hold). Keys: family, hardware, region, release,
        /// channel, status (active, pending, decommissioned), tag, online (true, false),
        /// attr.NAME (operator attributes), inv.NAME (what the device reports), component.NAME.
        #[arg(long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
        /// Devices per page (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Start after this device id (the cursor a previous page printed).
        #[arg(long, default_value = "")]
        after: String,
        /// Every page, one after the other.
        #[arg(long)]
        all: bool,
        /// Print the page as JSON (camelCase keys; milliseconds for times).
        #[arg(long)]
        json: bool,
    },
    /// Show a device: what it reported, its components, attributes, and its
    /// history (check-ins that changed something, assignments, install
    /// events with failure logs).
    #[command(after_help = "Example:\n  updraft devices show meter-0042")]
    Show {
        /// The device id.
        id: String,
        /// Print the device as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Register a device by hand and print its token (shown once). With
    /// --ddi it is a hawkBit DDI client (SWUpdate's suricatta,
    /// rauc-hawkbit-updater) that polls /DEFAULT/controller/v1/ID with
    /// `Authorization: TargetToken <token>`; see docs/hawkbit-ddi.md.
    #[command(
        after_help = "Examples:\n  updraft devices create gw-0042 --ddi --family gateway --hardware rev-b --region eu\n  \
updraft devices create meter-7 --family meter --hardware rev-c --json"
    )]
    Create {
        /// The device id (its hawkBit controller id).
        id: String,
        /// Its device family (releases of this family are for it).
        #[arg(long)]
        family: String,
        /// Its hardware revision (a DDI client may set it later in configData: `hardware`).
        #[arg(long)]
        hardware: String,
        /// Its region.
        #[arg(long, default_value = "")]
        region: String,
        /// It speaks hawkBit DDI rather than running the Updraft agent.
        #[arg(long)]
        ddi: bool,
        /// The release it runs now (becomes its last known good if the server has it).
        #[arg(long)]
        release: Option<String>,
        /// Tags, repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Print the device id, token and protocol as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask a DDI device for its attributes again: its next poll offers configData.
    #[command(name = "request-config", after_help = "Example:\n  updraft devices request-config gw-0042")]
    RequestConfig {
        /// The device id.
        id: String,
        /// Print the device as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Accept a device that enrolled with a token requiring acceptance.
    #[command(after_help = "Example:\n  updraft devices accept meter-0042")]
    Accept {
        /// The device id.
        id: String,
        /// Print the device as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decommission a device: its token stops working, its history stays,
    /// and the id may enroll again.
    #[command(after_help = "Example:\n  updraft devices decommission meter-0042")]
    Decommission {
        /// The device id.
        id: String,
        /// Print the device as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add tags to a device (plans select on tags).
    #[command(after_help = "Example:\n  updraft devices tag meter-0042 canary lab")]
    Tag {
        /// The device id.
        id: String,
        /// Tags to add.
        #[arg(required = true)]
        tags: Vec<String>,
        /// Print the device as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove tags from a device.
    #[command(after_help = "Example:\n  updraft devices untag meter-0042 canary")]
    Untag {
        /// The device id.
        id: String,
        /// Tags to remove.
        #[arg(required = true)]
        tags: Vec<String>,
        /// Print the device as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set (KEY=VALUE) or remove (KEY=) attributes of a device; plans select
    /// on them with `attributes = { KEY = "VALUE" }`.
    #[command(after_help = "Example:\n  updraft devices set-attr meter-0042 site=berlin floor=3 building=")]
    SetAttr {
        /// The device id.
        id: String,
        /// KEY=VALUE to set, KEY= to remove.
        #[arg(required = true, value_name = "KEY=VALUE")]
        attributes: Vec<String>,
        /// Print the device as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum EnrollTokenCmd {
    /// Create an enrollment token for devices (shown once).
    #[command(after_help = "Examples:\n  updraft enroll-token create --uses 100 --expires 7d\n  \
updraft enroll-token create --uses 10 --require-accept   # devices wait for `updraft devices accept`")]
    Create {
        /// How many devices may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it is valid (e.g. 7d).
        #[arg(long, default_value = "7d")]
        expires: String,
        /// Devices enrolled with it wait as pending until an operator accepts them.
        #[arg(long)]
        require_accept: bool,
        /// Print the token as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// An API token's role (least privilege first).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RoleArg {
    /// Read everything.
    Viewer,
    /// Publish releases, promote them, report builds.
    Releaser,
    /// Create and steer rollouts; accept, tag and decommission devices.
    Operator,
    /// Everything, including tokens and the trust root.
    Admin,
}

impl RoleArg {
    fn as_str(self) -> &'static str {
        match self {
            RoleArg::Viewer => "viewer",
            RoleArg::Releaser => "releaser",
            RoleArg::Operator => "operator",
            RoleArg::Admin => "admin",
        }
    }
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create an API token (shown once).
    #[command(after_help = "Example:\n  updraft token create ci --role releaser")]
    Create {
        /// A name for the token (shown in the audit log).
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// List API tokens.
    #[command(after_help = "Example:\n  updraft token list")]
    List {
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API token.
    #[command(after_help = "Example:\n  updraft token revoke 3")]
    Revoke {
        /// The token id (from `updraft token list`).
        id: i64,
        /// Print the result as JSON (camelCase keys).
        #[arg(long)]
        json: bool,
    },
}

fn str_of(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn release_line(r: &Value) -> String {
    format!(
        "{:<28} {:<10} security {:<4} {:>12} bytes  sha256 {}  channels {}\n",
        str_of(r, "id"),
        str_of(r, "family"),
        str_of(r, "securityVersion"),
        str_of(r, "size"),
        &str_of(r, "sha256")[..16.min(str_of(r, "sha256").len())],
        r["channels"]
            .as_array()
            .map(|c| c.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    )
}

/// A reader that advances a progress bar.
struct Counting<'a, R> {
    inner: R,
    bar: &'a indicatif::ProgressBar,
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

pub fn release(cmd: ReleaseCmd, client: &ClientArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    match cmd {
        ReleaseCmd::Publish { file, channel, json } => {
            let f = std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
            let len = f.metadata()?.len();
            let bar = if progress_enabled(ctx.quiet, json) {
                let b = indicatif::ProgressBar::new(len);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("template"),
                );
                b.set_message("uploading");
                b
            } else {
                indicatif::ProgressBar::hidden()
            };
            let mut reader = Counting { inner: std::io::BufReader::with_capacity(1 << 20, f), bar: &bar };
            let r = c.post_stream("/api/v1/releases", &mut reader, len)?;
            bar.finish_and_clear();
            if let Some(ch) = &channel {
                c.post(&format!("/api/v1/channels/{ch}/releases"), &json!({ "release": r["id"] }))?;
            }
            let r = c.get(&format!("/api/v1/releases/{}", str_of(&r, "id")))?;
            emit(json, &r, |s| {
                s.push_str(&format!("published {} (sha256 {})\n", str_of(&r, "id"), str_of(&r, "sha256")));
            })?;
        }
        ReleaseCmd::List { json } => {
            let r = c.get("/api/v1/releases")?;
            emit(json, &r, |s| {
                for rel in r.as_array().into_iter().flatten() {
                    s.push_str(&release_line(rel));
                }
            })?;
        }
        ReleaseCmd::Show { id, json } => {
            let r = c.get(&format!("/api/v1/releases/{id}"))?;
            emit(json, &r, |s| {
                for k in [
                    "id",
                    "family",
                    "hardware",
                    "securityVersion",
                    "size",
                    "sha256",
                    "manifestSha256",
                    "signers",
                    "builderId",
                    "channels",
                    "publishedBy",
                ] {
                    s.push_str(&format!("{k:<16} {}\n", str_of(&r, k)));
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn channel(cmd: ChannelCmd, client: &ClientArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    match cmd {
        ChannelCmd::Promote { channel, release, json } => {
            c.post(&format!("/api/v1/channels/{channel}/releases"), &json!({ "release": release }))?;
            let out = json!({ "channel": channel, "release": release });
            emit(json, &out, |s| s.push_str(&format!("{release} is in {channel}\n")))?;
        }
        ChannelCmd::Show { channel, json } => {
            let r = c.get(&format!("/api/v1/channels/{channel}"))?;
            emit(json, &r, |s| {
                for rel in r.as_array().into_iter().flatten() {
                    s.push_str(&format!("{}\n", rel.as_str().unwrap_or_default()));
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A time in milliseconds since the epoch, as people read it (UTC) and how long ago.
fn when(ms: &Value) -> String {
    let Some(ms) = ms.as_i64() else { return "never".into() };
    let at = updraft_types::Timestamp((ms / 1000).max(0) as u64);
    let ago = updraft_types::Timestamp::now().0.saturating_sub(at.0);
    let ago = match ago {
        0..=59 => format!("{ago}s ago"),
        60..=3599 => format!("{}m ago", ago / 60),
        3600..=86_399 => format!("{}h ago", ago / 3600),
        _ => format!("{}d ago", ago / 86_400),
    };
    format!("{at} ({ago})")
}

fn device_table_header() -> String {
    format!(
        "{:<24} {:<14} {:<8} {:<10} {:<8} {:<26} {:<8} {:<6} {}\n",
        "DEVICE", "STATUS", "PROTOCOL", "FAMILY", "HARDWARE", "RELEASE", "REGION", "ONLINE", "LAST SEEN"
    )
}

fn device_line(d: &Value) -> String {
    format!(
        "{:<24} {:<14} {:<8} {:<10} {:<8} {:<26} {:<8} {:<6} {}\n",
        str_of(d, "id"),
        str_of(d, "status"),
        str_of(d, "protocol"),
        str_of(d, "family"),
        str_of(d, "hardware"),
        str_of(d, "release"),
        if str_of(d, "region").is_empty() { "-".into() } else { str_of(d, "region") },
        if d["online"] == true { "yes" } else { "no" },
        when(&d["lastSeenMs"])
    )
}

fn device_text(d: &Value, s: &mut String) {
    let map = |v: &Value| -> String {
        let m = v.as_object().map(|m| {
            m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(" ")
        });
        m.filter(|m| !m.is_empty()).unwrap_or_else(|| "-".into())
    };
    let tags = d["tags"].as_array().map(|t| t.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "));
    for (k, v) in [
        ("device", str_of(d, "id")),
        ("status", str_of(d, "status")),
        ("protocol", str_of(d, "protocol")),
        ("family", str_of(d, "family")),
        ("hardware", str_of(d, "hardware")),
        ("region", if str_of(d, "region").is_empty() { "-".into() } else { str_of(d, "region") }),
        ("channel", str_of(d, "channel")),
        ("release", str_of(d, "release")),
        ("last known good", str_of(d, "lastKnownGood")),
        ("tags", tags.filter(|t| !t.is_empty()).unwrap_or_else(|| "-".into())),
        ("attributes", map(&d["attributes"])),
        ("components", map(&d["components"])),
        ("inventory", map(&d["inventory"])),
        ("enrolled", when(&d["enrolledMs"])),
        (
            "last seen",
            format!("{}{}", when(&d["lastSeenMs"]), if d["online"] == true { ", online" } else { ", offline" }),
        ),
        ("check-ins", str_of(d, "checkIns")),
    ] {
        s.push_str(&format!("{k:<16} {v}\n"));
    }
    if let Some(h) = d["history"].as_array().filter(|h| !h.is_empty()) {
        s.push_str("history (newest first):\n");
        for e in h {
            let at = updraft_types::Timestamp((e["atMs"].as_i64().unwrap_or(0) / 1000).max(0) as u64);
            let release = e["release"].as_str().map(|r| format!(" {r}")).unwrap_or_default();
            let detail = e["detail"].as_str().unwrap_or_default();
            let mut lines = detail.lines();
            let first = lines.next().map(|l| format!(": {l}")).unwrap_or_default();
            s.push_str(&format!("  {at} {}{release}{first}\n", str_of(e, "kind")));
            for l in lines {
                s.push_str(&format!("      | {l}\n"));
            }
        }
    }
}

pub fn devices(cmd: DevicesCmd, client: &ClientArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    let one = |r: &Value, json: bool| emit(json, r, |s| device_text(r, s));
    match cmd {
        DevicesCmd::List { filters, limit, after, all, json } => {
            for f in &filters {
                if !f.contains('=') {
                    anyhow::bail!("filter {f:?} is not KEY=VALUE, e.g. --filter hardware=rev-c");
                }
            }
            let filter: String = filters.join(",");
            let mut after = after;
            let mut first = true;
            loop {
                let q = format!("/api/v1/devices?limit={limit}&after={}&filter={}", encode(&after), encode(&filter));
                let r = c.get(&q)?;
                let next = r["next"].as_str().map(str::to_owned);
                if json {
                    // One page per line with --all (JSON Lines); one document otherwise.
                    if all {
                        let mut out = std::io::stdout().lock();
                        use std::io::Write;
                        let _ = writeln!(out, "{}", serde_json::to_string(&r)?);
                    } else {
                        emit(true, &r, |_| {})?;
                    }
                } else {
                    emit(false, &r, |s| {
                        if first {
                            s.push_str(&device_table_header());
                        }
                        for d in r["devices"].as_array().into_iter().flatten() {
                            s.push_str(&device_line(d));
                        }
                        if !all || next.is_none() {
                            let shown = r["devices"].as_array().map_or(0, Vec::len);
                            match &next {
                                Some(n) if !all => s.push_str(&format!(
                                    "{shown} shown of {} matching; next page: --after {n}\n",
                                    str_of(&r, "total")
                                )),
                                _ => s.push_str(&format!("{} matching\n", str_of(&r, "total"))),
                            }
                        }
                    })?;
                }
                first = false;
                match next {
                    Some(n) if all => after = n,
                    _ => break,
                }
            }
        }
        DevicesCmd::Show { id, json } => one(&c.get(&format!("/api/v1/devices/{}", encode(&id)))?, json)?,
        DevicesCmd::Create { id, family, hardware, region, ddi, release, tags, json } => {
            let body = json!({
                "deviceId": id, "family": family, "hardware": hardware, "region": region,
                "protocol": if ddi { "ddi" } else { "updraft" }, "release": release, "tags": tags,
            });
            let r = c.post("/api/v1/devices", &body)?;
            emit(json, &r, |s| {
                s.push_str(&format!("device {} registered ({})\n", str_of(&r, "deviceId"), str_of(&r, "protocol")));
                s.push_str(&format!("token: {}\n", str_of(&r, "deviceToken")));
                if ddi {
                    s.push_str("the client sends it as `Authorization: TargetToken <token>` (SWUpdate: -k TOKEN; RAUC: auth_token)\n");
                }
                s.push_str("it is shown once; keep it with the device\n");
            })?
        }
        DevicesCmd::RequestConfig { id, json } => {
            one(&c.post_empty(&format!("/api/v1/devices/{}/request-config", encode(&id)))?, json)?
        }
        DevicesCmd::Accept { id, json } => {
            one(&c.post_empty(&format!("/api/v1/devices/{}/accept", encode(&id)))?, json)?
        }
        DevicesCmd::Decommission { id, json } => {
            one(&c.post_empty(&format!("/api/v1/devices/{}/decommission", encode(&id)))?, json)?
        }
        DevicesCmd::Tag { id, tags, json } => {
            one(&c.patch(&format!("/api/v1/devices/{}", encode(&id)), &json!({ "addTags": tags }))?, json)?
        }
        DevicesCmd::Untag { id, tags, json } => {
            one(&c.patch(&format!("/api/v1/devices/{}", encode(&id)), &json!({ "removeTags": tags }))?, json)?
        }
        DevicesCmd::SetAttr { id, attributes, json } => {
            let mut set = serde_json::Map::new();
            let mut remove = Vec::new();
            for a in &attributes {
                match a.split_once('=') {
                    Some((k, "")) => remove.push(k.to_owned()),
                    Some((k, v)) => {
                        set.insert(k.to_owned(), Value::String(v.to_owned()));
                    }
                    None => anyhow::bail!("{a:?} is not KEY=VALUE (or KEY= to remove)"),
                }
            }
            let body = json!({ "setAttributes": set, "removeAttributes": remove });
            one(&c.patch(&format!("/api/v1/devices/{}", encode(&id)), &body)?, json)?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes a query or path value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn enroll_token(cmd: EnrollTokenCmd, client: &ClientArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    let EnrollTokenCmd::Create { uses, expires, require_accept, json } = cmd;
    let secs = updraft_types::parse_duration(&expires)?.as_secs();
    let body = json!({ "uses": uses, "expiresInS": secs, "requireAccept": require_accept });
    let r = c.post("/api/v1/enrollment-tokens", &body)?;
    emit(json, &r, |s| s.push_str(&format!("{}\n", str_of(&r, "token"))))?;
    Ok(ExitCode::SUCCESS)
}

pub fn token(cmd: TokenCmd, client: &ClientArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    match cmd {
        TokenCmd::Create { name, role, json } => {
            let r = c.post("/api/v1/tokens", &json!({ "name": name, "role": role.as_str() }))?;
            emit(json, &r, |s| s.push_str(&format!("{}\n", str_of(&r, "token"))))?;
        }
        TokenCmd::List { json } => {
            let r = c.get("/api/v1/tokens")?;
            emit(json, &r, |s| {
                for t in r.as_array().into_iter().flatten() {
                    s.push_str(&format!(
                        "{:>4} {:<20} {:<9} {}\n",
                        str_of(t, "id"),
                        str_of(t, "name"),
                        str_of(t, "role"),
                        if t["revoked"] == true { "revoked" } else { "" }
                    ));
                }
            })?;
        }
        TokenCmd::Revoke { id, json } => {
            c.delete(&format!("/api/v1/tokens/{id}"))?;
            emit(json, &json!({ "revoked": id }), |s| s.push_str(&format!("revoked token {id}\n")))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `updraft dashboard`: a one-time sign-in link (10 minutes) for the token.
pub fn dashboard(json: bool, client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    let r = c.post("/api/v1/sign-in-links", &serde_json::json!({}))?;
    let url = format!("{}{}", c.base().trim_end_matches('/'), str_of(&r, "path"));
    let out = serde_json::json!({ "url": url, "expiresMs": r["expiresMs"] });
    emit(json, &out, |s| {
        s.push_str(&url);
        s.push('\n');
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn audit(
    action: Option<String>,
    after: i64,
    limit: u32,
    json: bool,
    client: &ClientArgs,
) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    let mut path = format!("/api/v1/audit?after={after}&limit={limit}");
    if let Some(a) = &action {
        path.push_str(&format!("&action={a}"));
    }
    let r = c.get(&path)?;
    emit(json, &r, |s| {
        for e in r.as_array().into_iter().flatten() {
            let at = updraft_types::Timestamp((e["atMs"].as_i64().unwrap_or(0) / 1000) as u64);
            s.push_str(&format!(
                "{:>6} {} {:<20} {:<24} {:<20} {}\n",
                str_of(e, "id"),
                at,
                str_of(e, "actor"),
                str_of(e, "action"),
                str_of(e, "subject"),
                str_of(e, "detail")
            ));
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
