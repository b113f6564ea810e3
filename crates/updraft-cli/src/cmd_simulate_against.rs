//! `updraft simulate --against URL`: the fleet model as a load generator
//! against a real server (`updraft_sim::load`). Needs an operator token for
//! the enrollment token; the devices then use their own tokens.

use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;
use updraft_sim::load::{self, LoadStats};
use updraft_sim::{Fleet, Release};

use crate::client::{Client, ClientArgs};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    pub url: String,
    pub devices: usize,
    pub enroll_seconds: f64,
    #[serde(flatten)]
    pub stats: LoadStats,
}

pub fn run(
    url: &str,
    token: Option<String>,
    fleet: &Fleet,
    release: Option<&Release>,
    seconds: u64,
    clients: usize,
    seed: u64,
) -> anyhow::Result<LoadReport> {
    let url = url.trim_end_matches('/');
    let admin = Client::new(&ClientArgs { server: Some(url.to_owned()), token })?;
    let n = fleet.device_count();
    let base_release = release.map_or_else(|| format!("{}-fw@1.0.0", fleet.family), Release::base_id);
    let t0 = Instant::now();
    let e = admin
        .post("/api/v1/enrollment-tokens", &serde_json::json!({"uses": n, "expiresInS": 3600}))
        .context("cannot create an enrollment token (an operator or admin token is needed)")?;
    let enrollment = e["token"].as_str().context("no enrollment token in the answer")?;
    let devices =
        load::enroll(url, enrollment, fleet, &base_release, &format!("sim-{seed}-")).map_err(anyhow::Error::msg)?;
    let enroll_seconds = t0.elapsed().as_secs_f64();
    let stats = load::check_ins(url, &devices, release, seconds, clients);
    Ok(LoadReport { url: url.to_owned(), devices: devices.len(), enroll_seconds, stats })
}
