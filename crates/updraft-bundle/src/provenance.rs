//! Build provenance: an in-toto Statement v1 with the SLSA Provenance v1
//! predicate, signed by a build key in a DSSE envelope.
//!
//! The statement's subjects are every image, the SBOM and `manifest.json`,
//! by SHA-256. Invocation metadata comes from the CI environment (GitHub
//! Actions, GitLab CI) when present, else from flags. No wall-clock time is
//! recorded, so the provenance is as reproducible as the rest of the bundle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use updraft_types::Sha256Digest;

use crate::error::Rejection;
use crate::manifest::{Manifest, Source, SLSA_PROVENANCE_V1};

/// The in-toto Statement v1 type.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// The buildType of bundles made by `updraft bundle create`.
pub const BUILD_TYPE: &str = "https://updraft.dev/buildtypes/bundle/v1";
/// builder.id when no CI system is detected and none is given: a developer
/// machine, never to be confused with a release runner.
pub const LOCAL_BUILDER_ID: &str = "https://updraft.dev/builders/local/v1";

/// An in-toto ResourceDescriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default)]
    pub digest: BTreeMap<String, String>,
}

/// The in-toto Statement v1. Unknown fields are ignored, as the
/// specification requires of consumers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Provenance,
}

/// The SLSA Provenance v1 predicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub internal_parameters: BTreeMap<String, Value>,
    #[serde(default)]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: Builder,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Builder {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
}

impl Metadata {
    fn is_empty(&self) -> bool {
        self.invocation_id.is_none()
    }
}

/// Where and how the bundle is built: read from the CI environment by
/// [`BuildContext::detect`], overridden by flags.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildContext {
    /// `github-actions`, `gitlab-ci`, or `local`.
    pub ci: String,
    pub builder_id: Option<String>,
    pub invocation_id: Option<String>,
    pub source_uri: Option<String>,
    pub source_commit: Option<String>,
    /// The git ref built (`refs/tags/v1.2.3`).
    pub source_ref: Option<String>,
}

impl BuildContext {
    /// Reads GitHub Actions' and GitLab CI's documented variables through
    /// `env` (a lookup, so tests need not touch the process environment).
    pub fn detect(env: impl Fn(&str) -> Option<String>) -> BuildContext {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        if get("GITHUB_ACTIONS").as_deref() == Some("true") {
            let server = get("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
            let repo = get("GITHUB_REPOSITORY");
            let hosted = get("RUNNER_ENVIRONMENT").as_deref() == Some("github-hosted");
            let invocation = match (&repo, get("GITHUB_RUN_ID")) {
                (Some(repo), Some(run)) => Some(format!(
                    "{server}/{repo}/actions/runs/{run}/attempts/{}",
                    get("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into())
                )),
                _ => None,
            };
            return BuildContext {
                ci: "github-actions".into(),
                builder_id: Some(if hosted {
                    "https://github.com/actions/runner/github-hosted".into()
                } else {
                    "https://github.com/actions/runner/self-hosted".into()
                }),
                invocation_id: invocation,
                source_uri: repo.map(|r| format!("git+{server}/{r}")),
                source_commit: get("GITHUB_SHA"),
                source_ref: get("GITHUB_REF"),
            };
        }
        if get("GITLAB_CI").as_deref() == Some("true") {
            let server = get("CI_SERVER_URL").unwrap_or_else(|| "https://gitlab.com".into());
            let builder = match get("CI_RUNNER_ID") {
                Some(id) => format!("{server}/-/runners/{id}"),
                None => format!("{server}/-/runners"),
            };
            let source_ref = get("CI_COMMIT_TAG")
                .map(|t| format!("refs/tags/{t}"))
                .or_else(|| get("CI_COMMIT_BRANCH").map(|b| format!("refs/heads/{b}")))
                .or_else(|| get("CI_COMMIT_REF_NAME"));
            return BuildContext {
                ci: "gitlab-ci".into(),
                builder_id: Some(builder),
                invocation_id: get("CI_JOB_URL"),
                source_uri: get("CI_PROJECT_URL").map(|u| format!("git+{u}")),
                source_commit: get("CI_COMMIT_SHA"),
                source_ref,
            };
        }
        BuildContext { ci: "local".into(), ..BuildContext::default() }
    }
}

/// What the statement describes.
pub struct StatementInput<'a> {
    pub manifest: &'a Manifest,
    pub manifest_sha256: Sha256Digest,
    pub build: &'a BuildContext,
    pub updraft_version: &'a str,
}

/// The expected subjects: manifest.json, every image, the SBOM.
pub fn expected_subjects(manifest: &Manifest, manifest_sha256: Sha256Digest) -> Vec<ResourceDescriptor> {
    let sha = |d: Sha256Digest| BTreeMap::from([("sha256".to_owned(), d.to_hex())]);
    let mut subjects = vec![ResourceDescriptor {
        name: Some(crate::manifest::MANIFEST_PATH.to_owned()),
        uri: None,
        digest: sha(manifest_sha256),
    }];
    for image in &manifest.images {
        subjects.push(ResourceDescriptor {
            name: Some(image.path.clone()),
            uri: None,
            digest: sha(image.digests.sha256),
        });
    }
    if let Some(sbom) = &manifest.sbom {
        subjects.push(ResourceDescriptor {
            name: Some(sbom.path.clone()),
            uri: None,
            digest: sha(sbom.digests.sha256),
        });
    }
    subjects.sort_by(|a, b| a.name.cmp(&b.name));
    subjects
}

/// Builds the provenance statement for a bundle.
pub fn statement(input: &StatementInput<'_>) -> Statement {
    let m = input.manifest;
    let Source { uri, commit } = &m.source;
    let mut external = BTreeMap::new();
    external.insert("source".to_owned(), Value::String(uri.clone()));
    if let Some(r) = &input.build.source_ref {
        external.insert("ref".to_owned(), Value::String(r.clone()));
    }
    external.insert("family".to_owned(), Value::String(m.family.clone()));
    external.insert("name".to_owned(), Value::String(m.name.clone()));
    external.insert("version".to_owned(), Value::String(m.version.to_string()));
    let mut internal = BTreeMap::new();
    internal.insert("SOURCE_DATE_EPOCH".to_owned(), Value::String(m.created.unix_s().to_string()));
    internal.insert("ci".to_owned(), Value::String(input.build.ci.clone()));
    let dependency_uri = match &input.build.source_ref {
        Some(r) => format!("{uri}@{r}"),
        None => uri.clone(),
    };
    Statement {
        type_: STATEMENT_V1.to_owned(),
        subject: expected_subjects(m, input.manifest_sha256),
        predicate_type: SLSA_PROVENANCE_V1.to_owned(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.to_owned(),
                external_parameters: external,
                internal_parameters: internal,
                resolved_dependencies: vec![ResourceDescriptor {
                    name: None,
                    uri: Some(dependency_uri),
                    digest: BTreeMap::from([("gitCommit".to_owned(), commit.clone())]),
                }],
            },
            run_details: RunDetails {
                builder: Builder {
                    id: input.build.builder_id.clone().unwrap_or_else(|| LOCAL_BUILDER_ID.to_owned()),
                    version: BTreeMap::from([("updraft".to_owned(), input.updraft_version.to_owned())]),
                },
                metadata: Metadata { invocation_id: input.build.invocation_id.clone() },
            },
        },
    }
}

impl Statement {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("statement serialises")
    }

    /// Parses a statement and checks that it is SLSA v1 provenance about
    /// exactly the given subjects.
    pub fn parse_and_check(
        payload: &[u8],
        manifest: &Manifest,
        manifest_sha256: Sha256Digest,
    ) -> Result<Self, Rejection> {
        let bad = |m: String| Rejection::Provenance(m);
        let st: Statement = serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?;
        if st.type_ != STATEMENT_V1 {
            return Err(bad(format!("_type is {:?}, not {STATEMENT_V1:?}", st.type_)));
        }
        if st.predicate_type != SLSA_PROVENANCE_V1 {
            return Err(bad(format!("predicateType is {:?}, not {SLSA_PROVENANCE_V1:?}", st.predicate_type)));
        }
        if st.predicate.build_definition.build_type.is_empty() || st.predicate.run_details.builder.id.is_empty() {
            return Err(bad("buildType and builder.id are required".into()));
        }
        let mut subjects = st.subject.clone();
        subjects.sort_by(|a, b| a.name.cmp(&b.name));
        if subjects != expected_subjects(manifest, manifest_sha256) {
            return Err(bad("subjects do not match manifest.json, the images and the SBOM".into()));
        }
        Ok(st)
    }
}
