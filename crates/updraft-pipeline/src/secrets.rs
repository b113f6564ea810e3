//! Secrets in images and sources: private keys (PEM), cloud and service
//! credentials with a known shape (AWS access key ids, GitHub, Slack and
//! Google API tokens), and high-entropy values assigned to a secret-sounding
//! name. Each finding has a fingerprint (SHA-256 of the secret, 16 hex
//! digits) that an allow-list file can name to accept a false positive.

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{io, PipelineError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub path: String,
    /// 1-based line (of a text file; for binaries the line count is of `\n` bytes).
    pub line: usize,
    pub offset: usize,
    pub kind: &'static str,
    pub fingerprint: String,
}

fn fingerprint(secret: &[u8]) -> String {
    hex::encode(Sha256::digest(secret))[..16].to_owned()
}

fn run_len(data: &[u8], from: usize, ok: impl Fn(u8) -> bool) -> usize {
    data[from.min(data.len())..].iter().take_while(|b| ok(**b)).count()
}

fn entropy(s: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for b in s {
        counts[*b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

const KEYWORDS: [&[u8]; 7] = [b"secret", b"token", b"password", b"passwd", b"api_key", b"apikey", b"private_key"];

/// Scans `data` (the contents of `path`).
pub fn scan(path: &str, data: &[u8]) -> Vec<Finding> {
    let mut found: Vec<(usize, &'static str, &[u8])> = Vec::new();
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    let upper_digit = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let token_char = |b: u8| b.is_ascii_alphanumeric() || b"+/=_-.".contains(&b);
    let mut i = 0;
    while i < data.len() {
        let rest = &data[i..];
        let before_ok = i == 0 || !alnum(data[i - 1]);
        let mut hit: Option<(&'static str, usize)> = None;
        if rest.starts_with(b"-----BEGIN ") {
            let window = &rest[..rest.len().min(64)];
            if let Some(p) = window.windows(16).position(|w| w == b"PRIVATE KEY-----") {
                hit = Some(("private key", p + 16));
            }
        } else if before_ok
            && (rest.starts_with(b"AKIA") || rest.starts_with(b"ASIA"))
            && run_len(data, i + 4, upper_digit) == 16
        {
            hit = Some(("AWS access key id", 20));
        } else if before_ok
            && [b"ghp_", b"gho_", b"ghs_", b"ghu_"].iter().any(|p| rest.starts_with(*p))
            && run_len(data, i + 4, alnum) >= 36
        {
            hit = Some(("GitHub token", 40));
        } else if before_ok
            && rest.starts_with(b"github_pat_")
            && run_len(data, i + 11, |b| alnum(b) || b == b'_') >= 22
        {
            hit = Some(("GitHub token", 11 + run_len(data, i + 11, |b| alnum(b) || b == b'_')));
        } else if before_ok
            && rest.starts_with(b"xox")
            && rest.len() > 4
            && b"baprs".contains(&rest[3])
            && rest[4] == b'-'
            && run_len(data, i + 5, |b| alnum(b) || b == b'-') >= 10
        {
            hit = Some(("Slack token", 5 + run_len(data, i + 5, |b| alnum(b) || b == b'-')));
        } else if before_ok
            && rest.starts_with(b"AIza")
            && run_len(data, i + 4, |b| alnum(b) || b == b'_' || b == b'-') >= 35
        {
            hit = Some(("Google API key", 39));
        } else if before_ok {
            if let Some(k) = KEYWORDS.iter().find(|k| rest.len() >= k.len() && rest[..k.len()].eq_ignore_ascii_case(k))
            {
                // NAME ["'\s]* (= | :) ["'\s]* VALUE
                let mut j = i + k.len();
                j += run_len(data, j, |b| alnum(b) || b == b'_');
                j += run_len(data, j, |b| b == b'"' || b == b'\'' || b == b' ' || b == b'\t');
                if j < data.len() && (data[j] == b'=' || data[j] == b':') {
                    j += 1;
                    j += run_len(data, j, |b| b == b' ' || b == b'\t');
                    // A quoted value runs to its quote; a bare one is token characters.
                    let quote = data.get(j).copied().filter(|b| *b == b'"' || *b == b'\'');
                    j += usize::from(quote.is_some());
                    let n = match quote {
                        Some(q) => run_len(data, j, |b| b != q && b.is_ascii_graphic()),
                        None => run_len(data, j, token_char),
                    };
                    let value = &data[j..j + n];
                    if n >= 16 && !scan("", value).is_empty() {
                        // A known shape (reported as such when the scan reaches it).
                        i = j;
                        continue;
                    }
                    if n >= 16 && entropy(value) >= 3.5 {
                        found.push((j, "high-entropy secret", value));
                        i = j + n;
                        continue;
                    }
                }
            }
        }
        if let Some((kind, len)) = hit {
            let end = (i + len).min(data.len());
            found.push((i, kind, &data[i..end]));
            i = end;
        } else {
            i += 1;
        }
    }
    found
        .into_iter()
        .map(|(offset, kind, secret)| Finding {
            path: path.to_owned(),
            line: 1 + data[..offset].iter().filter(|b| **b == b'\n').count(),
            offset,
            kind,
            fingerprint: fingerprint(secret),
        })
        .collect()
}

/// Reads an allow-list: `fingerprint` or `path:fingerprint` per line, `#` comments.
pub fn allowed(text: &str) -> Vec<(Option<String>, String)> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| match l.rsplit_once(':') {
            Some((p, f)) => (Some(p.to_owned()), f.to_owned()),
            None => (None, l.to_owned()),
        })
        .collect()
}

pub fn is_allowed(f: &Finding, allow: &[(Option<String>, String)]) -> bool {
    allow.iter().any(|(p, fp)| fp == &f.fingerprint && p.as_ref().is_none_or(|p| p == &f.path))
}

/// Scans a file, or every file under a folder (skipping `.git` and `skip`).
pub fn scan_path(root: &Path, rel: &str, skip: &[&str]) -> Result<Vec<Finding>, PipelineError> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(rel)];
    while let Some(p) = stack.pop() {
        let shown = p.strip_prefix(root).unwrap_or(&p).display().to_string();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == ".git") || skip.iter().any(|s| shown == *s) {
                continue;
            }
            let mut entries: Vec<_> = std::fs::read_dir(&p)
                .map_err(io(format!("cannot list {}", p.display())))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect();
            entries.sort();
            stack.extend(entries.into_iter().rev());
        } else if p.is_file() {
            let data = std::fs::read(&p).map_err(io(format!("cannot read {}", p.display())))?;
            out.extend(scan(&shown, &data));
        } else if !p.exists() {
            return Err(PipelineError::Spec(format!("gates.secrets.paths names {rel}, which does not exist")));
        }
    }
    Ok(out)
}
