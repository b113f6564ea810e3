//! Known vulnerabilities in the SBOM's components, matched offline against
//! a folder of OSV records (https://ossf.github.io/osv-schema/): by package
//! URL or by (ecosystem, name), then by the record's affected versions or
//! ranges (`introduced`, `fixed`, `last_affected`, `limit`).

use std::cmp::Ordering;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::{io, PipelineError};

/// `low` < `medium` < `high` < `critical`.
pub fn severity_rank(s: &str) -> Option<u8> {
    match s.to_ascii_lowercase().as_str() {
        "low" => Some(1),
        "medium" | "moderate" => Some(2),
        "high" => Some(3),
        "critical" => Some(4),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    pub name: String,
    pub version: String,
    pub purl: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Match {
    pub id: String,
    pub component: String,
    pub version: String,
    /// As the record gives it; records without one count as `high`.
    pub severity: String,
    pub summary: String,
}

/// The components of a CycloneDX JSON SBOM (nested components included).
pub fn components(sbom: &str, path: &str) -> Result<Vec<Component>, PipelineError> {
    let v: Value = serde_json::from_str(sbom)
        .map_err(|e| PipelineError::Junit { path: path.to_owned(), reason: format!("not JSON: {e}") })?;
    if v["bomFormat"] != "CycloneDX" {
        return Err(PipelineError::Junit { path: path.to_owned(), reason: "not a CycloneDX SBOM (bomFormat)".into() });
    }
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = v["components"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    while let Some(c) = stack.pop() {
        if let (Some(name), Some(version)) = (c["name"].as_str(), c["version"].as_str()) {
            out.push(Component {
                name: name.into(),
                version: version.into(),
                purl: c["purl"].as_str().map(Into::into),
            });
        }
        if let Some(sub) = c["components"].as_array() {
            stack.extend(sub);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The purl without version, qualifiers or subpath: `pkg:type/ns/name`.
fn purl_base(p: &str) -> &str {
    let p = p.split(['?', '#']).next().unwrap_or(p);
    p.rsplit_once('@').map_or(p, |(b, _)| b)
}

fn purl_ecosystem(p: &str) -> Option<&'static str> {
    let t = p.strip_prefix("pkg:")?.split('/').next()?;
    Some(match t {
        "cargo" => "crates.io",
        "npm" => "npm",
        "pypi" => "PyPI",
        "golang" => "Go",
        "maven" => "Maven",
        "nuget" => "NuGet",
        "gem" => "RubyGems",
        "deb" => "Debian",
        "apk" => "Alpine",
        "github" => "GitHub",
        "generic" => "generic",
        _ => return None,
    })
}

/// Compares dotted versions numerically where they are numbers (`1.10` > `1.9`).
pub fn compare(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('v');
    let b = b.trim_start_matches('v');
    let split = |s: &str| s.split(['.', '-', '+', '_']).map(str::to_owned).collect::<Vec<_>>();
    let (xa, xb) = (split(a), split(b));
    for i in 0..xa.len().max(xb.len()) {
        let (pa, pb) = (xa.get(i).map_or("0", String::as_str), xb.get(i).map_or("0", String::as_str));
        let o = match (pa.parse::<u64>(), pb.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => pa.cmp(pb),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn affected_version(affected: &Value, version: &str) -> bool {
    if affected["versions"].as_array().is_some_and(|vs| vs.iter().any(|v| v.as_str() == Some(version))) {
        return true;
    }
    for r in affected["ranges"].as_array().into_iter().flatten() {
        if r["type"] == "GIT" {
            continue;
        }
        // Walk the events in order: an `introduced` at or below the version
        // enters the range; a `fixed` or `limit` at or below it, or a
        // `last_affected` below it, leaves it again.
        let mut inside = false;
        for e in r["events"].as_array().into_iter().flatten() {
            if let Some(i) = e["introduced"].as_str() {
                if i == "0" || compare(version, i) != Ordering::Less {
                    inside = true;
                }
            } else if let Some(f) = e["fixed"].as_str().or(e["limit"].as_str()) {
                if compare(version, f) != Ordering::Less {
                    inside = false;
                }
            } else if let Some(l) = e["last_affected"].as_str() {
                if compare(version, l) == Ordering::Greater {
                    inside = false;
                }
            }
        }
        if inside {
            return true;
        }
    }
    false
}

fn severity(rec: &Value, affected: &Value) -> String {
    rec["database_specific"]["severity"]
        .as_str()
        .or(affected["ecosystem_specific"]["severity"].as_str())
        .or(affected["database_specific"]["severity"].as_str())
        .filter(|s| severity_rank(s).is_some())
        .unwrap_or("high")
        .to_ascii_lowercase()
}

/// Matches the components against every `*.json` OSV record under `osv_dir`.
pub fn scan(components: &[Component], osv_dir: &Path) -> Result<Vec<Match>, PipelineError> {
    let mut files: Vec<_> = std::fs::read_dir(osv_dir)
        .map_err(io(format!("cannot read the OSV folder {}", osv_dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(io(format!("cannot read {}", f.display())))?;
        let rec: Value = serde_json::from_str(&text).map_err(|e| PipelineError::Junit {
            path: f.display().to_string(),
            reason: format!("not an OSV record: {e}"),
        })?;
        if rec["withdrawn"].is_string() {
            continue;
        }
        for affected in rec["affected"].as_array().into_iter().flatten() {
            let pkg = &affected["package"];
            for c in components {
                let by_purl = match (pkg["purl"].as_str(), c.purl.as_deref()) {
                    (Some(a), Some(b)) => purl_base(a) == purl_base(b),
                    _ => false,
                };
                let by_name = pkg["name"].as_str() == Some(c.name.as_str())
                    && c.purl.as_deref().and_then(purl_ecosystem).is_none_or(|e| pkg["ecosystem"].as_str() == Some(e));
                if (by_purl || by_name) && affected_version(affected, &c.version) {
                    out.push(Match {
                        id: rec["id"].as_str().unwrap_or("?").to_owned(),
                        component: c.name.clone(),
                        version: c.version.clone(),
                        severity: severity(&rec, affected),
                        summary: rec["summary"].as_str().unwrap_or_default().to_owned(),
                    });
                }
            }
        }
    }
    out.dedup();
    Ok(out)
}
