//! Why two builds of the same sources differ. Before anyone reaches for
//! diffoscope, the pipeline looks for the ordinary causes and names each
//! with its fix: the build folder in the image (`__FILE__`, debug
//! information), times of the build (`__DATE__`, `__TIME__`, epoch
//! seconds, archive and compression headers), the order and the headers of
//! archive members (ar, tar, zip, cpio, gzip), the builder's user or host
//! name, and, for ELF files, the sections that differ. Archives are opened
//! and their differing members examined the same way. Whatever it finds,
//! it also shows the first differing byte range with context in hex.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{io, PipelineError};

/// What the diagnosis knows about the two builds.
#[derive(Clone, Debug)]
pub struct Context {
    /// The folders the builds ran in.
    pub first_tree: PathBuf,
    pub second_tree: PathBuf,
    /// When the builds ran (Unix seconds, from the first start to the last end).
    pub window_s: (u64, u64),
    /// The `SOURCE_DATE_EPOCH` both builds had (a time equal to it is deterministic).
    pub source_date_epoch: u64,
    pub user: Option<String>,
    pub host: Option<String>,
}

/// One cause found, with its fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// `build-path`, `timestamp`, `archive-order`, `archive-metadata`,
    /// `compression-header`, `user-name`, `host-name` or `elf-sections`.
    pub cause: String,
    /// Where: the image, or a member of it (`liblfs.a(lfs.o)`).
    pub location: String,
    pub detail: String,
    pub fix: String,
}

/// Why one image differs between the two builds.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnosis {
    pub image: String,
    pub first: PathBuf,
    pub second: PathBuf,
    pub findings: Vec<Finding>,
    /// The first differing byte range, with context in hex.
    pub first_difference: Option<String>,
    /// diffoscope's report, where `--explain` ran it.
    pub diffoscope_report: Option<PathBuf>,
}

/// The user running the build (`USER`, `LOGNAME`).
pub fn user_name() -> Option<String> {
    ["USER", "LOGNAME"].iter().find_map(|v| std::env::var(v).ok()).filter(|u| !u.is_empty())
}

/// This machine's host name.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Largest image read whole for a diagnosis; past it, only the first
/// difference is shown.
const MAX_DIAGNOSED_BYTES: u64 = 1 << 30;

pub fn diagnose_files(image: &str, a: &Path, b: &Path, ctx: &Context) -> Result<Diagnosis, PipelineError> {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(io(format!("cannot read {}", p.display())));
    let mut d = Diagnosis {
        image: image.to_owned(),
        first: a.to_path_buf(),
        second: b.to_path_buf(),
        findings: Vec::new(),
        first_difference: None,
        diffoscope_report: None,
    };
    if size(a)? > MAX_DIAGNOSED_BYTES || size(b)? > MAX_DIAGNOSED_BYTES {
        d.first_difference = Some(format!("images over {} MiB are not examined", MAX_DIAGNOSED_BYTES >> 20));
        return Ok(d);
    }
    let da = std::fs::read(a).map_err(io(format!("cannot read {}", a.display())))?;
    let db = std::fs::read(b).map_err(io(format!("cannot read {}", b.display())))?;
    let location = a.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| image.to_owned());
    examine(&location, &da, &db, ctx, 0, &mut d.findings);
    d.findings = merge_members(std::mem::take(&mut d.findings));
    d.first_difference = first_difference(&da, &db);
    Ok(d)
}

/// One finding per cause for the members of an archive: the same cause in
/// 15 object files of a library is one line naming them, with the first's
/// detail.
pub fn merge_members(findings: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<(Finding, Vec<String>)> = Vec::new();
    for f in findings {
        let split = f.location.strip_suffix(')').and_then(|l| l.split_once('('));
        let Some((archive, member)) = split.map(|(a, m)| (a.to_owned(), m.to_owned())) else {
            out.push((f, Vec::new()));
            continue;
        };
        match out
            .iter_mut()
            .find(|(g, m)| !m.is_empty() && g.cause == f.cause && g.location.starts_with(&format!("{archive}(")))
        {
            Some((_, members)) => members.push(member),
            None => out.push((f, vec![member])),
        }
    }
    out.into_iter()
        .map(|(mut f, members)| {
            if members.len() > 1 {
                let archive = f.location.split_once('(').map(|(a, _)| a.to_owned()).unwrap_or_default();
                let names: Vec<&str> = members.iter().map(String::as_str).collect();
                f.location = format!("{archive}: {} members: {}", members.len(), preview(&names));
                f.detail = format!("in {}: {}", members[0], f.detail);
            }
            f
        })
        .collect()
}

/// Looks for every known cause in `a` (first build) and `b` (second).
pub fn examine(location: &str, a: &[u8], b: &[u8], ctx: &Context, depth: u32, out: &mut Vec<Finding>) {
    if a == b {
        return;
    }
    // An archive is examined member by member (and its headers compared),
    // so where that explains it, its raw bytes are not searched again.
    let before = out.len();
    let opened = depth < 2
        && if a.starts_with(b"!<arch>\n") && b.starts_with(b"!<arch>\n") {
            ar(location, a, b, ctx, depth, out)
        } else if is_tar(a) && is_tar(b) {
            tar(location, a, b, ctx, depth, out)
        } else if a.starts_with(b"070701") || a.starts_with(b"070702") {
            cpio(location, a, b, ctx, out)
        } else if a.starts_with(b"PK\x03\x04") {
            zip(location, a, b, ctx, out)
        } else {
            false
        };
    if opened && out.len() > before {
        return;
    }
    let paths = build_paths(location, a, b, ctx, out);
    if a.starts_with(&[0x1f, 0x8b]) && b.starts_with(&[0x1f, 0x8b]) {
        // The rest is compressed: its bytes say nothing more.
        let before = out.len();
        gzip(location, a, b, ctx, out);
        if out.len() > before {
            return;
        }
    }
    if a.starts_with(b"\x7fELF") && b.starts_with(b"\x7fELF") {
        elf(location, a, b, out);
    }
    timestamps(location, a, b, ctx, out);
    names(location, a, ctx, &paths, out);
}

const PATH_FIX: &str = "compile with -ffile-prefix-map=$PWD=. (GCC 8+ and Clang: __FILE__, debug information and \
                        macros; -fdebug-prefix-map for debug information alone), or strip debug information \
                        from the image";

/// Occurrences of each build's own folder in its image; returns the byte
/// ranges found in `a` (so that a user name inside a path is not counted).
fn build_paths(location: &str, a: &[u8], b: &[u8], ctx: &Context, out: &mut Vec<Finding>) -> Vec<(usize, usize)> {
    let first = ctx.first_tree.to_string_lossy().into_owned();
    let second = ctx.second_tree.to_string_lossy().into_owned();
    let in_a = find_all(a, first.as_bytes());
    let in_b = find_all(b, second.as_bytes());
    if in_a.is_empty() && in_b.is_empty() {
        return Vec::new();
    }
    let show = |data: &[u8], at: &[usize], path: &str| -> String {
        if at.is_empty() {
            return "not found".into();
        }
        let offsets: Vec<String> = at.iter().take(3).map(|o| format!("0x{o:x}")).collect();
        format!(
            "{} times (at {}{}), e.g. {:?}",
            at.len(),
            offsets.join(", "),
            if at.len() > 3 { ", ..." } else { "" },
            printable_around(data, at[0], path.len())
        )
    };
    out.push(Finding {
        cause: "build-path".into(),
        location: location.into(),
        detail: format!(
            "the build folder is in the image: first build ({first}): {}; second build ({second}): {}",
            show(a, &in_a, &first),
            show(b, &in_b, &second)
        ),
        fix: PATH_FIX.into(),
    });
    in_a.iter().map(|&o| (o, o + first.len())).collect()
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    if needle.is_empty() || hay.len() < needle.len() {
        return out;
    }
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..].windows(needle.len()).position(|w| w == needle) {
            Some(p) => {
                out.push(i + p);
                i += p + needle.len();
            }
            None => break,
        }
    }
    out
}

/// The printable text around `at..at+len` (up to 100 bytes).
fn printable_around(data: &[u8], at: usize, len: usize) -> String {
    let printable = |c: u8| (0x20..0x7f).contains(&c);
    let mut start = at;
    while start > 0 && at - start < 40 && printable(data[start - 1]) {
        start -= 1;
    }
    let mut end = (at + len).min(data.len());
    while end < data.len() && end - at < 100 && printable(data[end]) {
        end += 1;
    }
    String::from_utf8_lossy(&data[start..end]).into_owned()
}

const TIME_FIX: &str = "take times from SOURCE_DATE_EPOCH (the pipeline sets it) instead of the clock; do not use \
                        __DATE__ or __TIME__ (-Wdate-time warns where they are)";

/// `YYYY-MM-DD`, month abbreviation and day of the month of a Unix time.
fn civil(t: u64) -> (String, &'static str, u32) {
    let stamp = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
    let s = stamp.to_string();
    let date = s[..10].to_owned();
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month: usize = s[5..7].parse().unwrap_or(1);
    let day: u32 = s[8..10].parse().unwrap_or(1);
    (date, MONTHS[month.saturating_sub(1).min(11)], day)
}

/// The time zones of the two builds (UTC and Pacific/Kiritimati, UTC+14),
/// and UTC-12, the other end of the date line.
const ZONE_OFFSETS_S: [i64; 3] = [0, 14 * 3600, -12 * 3600];

fn timestamps(location: &str, a: &[u8], b: &[u8], ctx: &Context, out: &mut Vec<Finding>) {
    let (from, to) = (ctx.window_s.0.saturating_sub(3600), ctx.window_s.1 + 3600);
    let near = |t: u64| t >= from && t <= to && t != ctx.source_date_epoch;
    let mut seen: Vec<String> = Vec::new();
    // Epoch seconds as text.
    let mut i = 0;
    while i + 10 <= a.len() {
        if a[i..i + 10].iter().all(u8::is_ascii_digit)
            && (i == 0 || !a[i - 1].is_ascii_digit())
            && (i + 10 == a.len() || !a[i + 10].is_ascii_digit())
        {
            let t: u64 = std::str::from_utf8(&a[i..i + 10]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            if near(t) && b.get(i..i + 10) != Some(&a[i..i + 10]) {
                seen.push(format!("epoch seconds {t} as text at 0x{i:x}"));
            }
            i += 10;
        } else {
            i += 1;
        }
    }
    // __DATE__ ("Dec  6 2026") and ISO dates of the build days, in every zone.
    let mut day_strings: Vec<String> = Vec::new();
    let sde_date = civil(ctx.source_date_epoch).0;
    for t in [from, to] {
        for z in ZONE_OFFSETS_S {
            let (iso, month, day) = civil((t as i64 + z).max(0) as u64);
            if iso == sde_date {
                continue;
            }
            let year = &iso[..4];
            for s in [format!("{month} {day:>2} {year}"), iso.clone()] {
                if !day_strings.contains(&s) {
                    day_strings.push(s);
                }
            }
        }
    }
    for s in &day_strings {
        let at = find_all(a, s.as_bytes());
        if let Some(&o) = at.first() {
            seen.push(format!("the build's date {s:?} at 0x{o:x} ({} times)", at.len()));
        }
    }
    // __TIME__ ("20:01:02") where the two builds differ.
    let mut local_zone = false;
    let mut i = 0;
    while i + 8 <= a.len() && seen.len() < 8 {
        let w = &a[i..i + 8];
        let clock = w[2] == b':'
            && w[5] == b':'
            && [0, 1, 3, 4, 6, 7].iter().all(|&k| w[k].is_ascii_digit())
            && w[0] <= b'2'
            && w[3] <= b'5'
            && w[6] <= b'5';
        if clock && b.get(i..i + 8) != Some(w) && b.get(i + 2) == Some(&b':') {
            seen.push(format!("a time of day {:?} at 0x{i:x} (second build: {:?})", ascii(w), ascii(&b[i..i + 8])));
            // The same minute and second, hours apart by the builds' zones
            // (UTC and UTC+14): a time printed in the local time zone.
            let hours = |d: &[u8]| ((d[0] - b'0') * 10 + (d[1] - b'0')) as i32;
            if b[i..i + 8].iter().all(|c| c.is_ascii_digit() || *c == b':')
                && w[2..] == b[i + 2..i + 8]
                && (hours(&b[i..]) - hours(w)).rem_euclid(24) == 14
            {
                local_zone = true;
            }
            i += 8;
        } else {
            i += 1;
        }
    }
    // Epoch seconds as 32-bit little-endian integers where the builds differ.
    let mut binary = Vec::new();
    if a.len() == b.len() {
        for i in 0..a.len().saturating_sub(3) {
            let ta = u32::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]) as u64;
            if near(ta) && a[i..i + 4] != b[i..i + 4] {
                binary.push(i);
            }
        }
    }
    if let Some(&o) = binary.first() {
        seen.push(format!("{} 32-bit times of the build (first at 0x{o:x})", binary.len()));
    }
    if !seen.is_empty() {
        out.push(Finding {
            cause: "timestamp".into(),
            location: location.into(),
            detail: format!(
                "times of the build are in the image: {}{}",
                seen.join("; "),
                if local_zone {
                    "; the times are 14 hours apart, as the builds' time zones (UTC and UTC+14): a time printed \
                     in the local time zone"
                } else {
                    ""
                }
            ),
            fix: if local_zone {
                format!(
                    "print times in UTC (date -u, gmtime, TZ=UTC in the build command) or leave them out; {TIME_FIX}"
                )
            } else {
                TIME_FIX.into()
            },
        });
    }
}

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The builder's user and host names, as words (not inside a build path):
/// the same here, another image on another machine.
fn names(location: &str, a: &[u8], ctx: &Context, paths: &[(usize, usize)], out: &mut Vec<Finding>) {
    let word = |c: Option<&u8>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || b"_-./".contains(c)));
    for (cause, name, fix) in [
        (
            "user-name",
            &ctx.user,
            "set the name the build records explicitly (KBUILD_BUILD_USER for Linux and busybox, or a -D flag)",
        ),
        (
            "host-name",
            &ctx.host,
            "set the name the build records explicitly (KBUILD_BUILD_HOST for Linux and busybox, or a -D flag)",
        ),
    ] {
        let Some(name) = name.as_deref().filter(|n| n.len() >= 3) else { continue };
        let hits: Vec<usize> = find_all(a, name.as_bytes())
            .into_iter()
            .filter(|&o| word(o.checked_sub(1).and_then(|p| a.get(p))) && word(a.get(o + name.len())))
            .filter(|&o| !paths.iter().any(|&(s, e)| o >= s && o < e))
            .collect();
        if let Some(&o) = hits.first() {
            out.push(Finding {
                cause: cause.into(),
                location: location.into(),
                detail: format!(
                    "the builder's {} {name:?} is in the image {} times (first at 0x{o:x}: {:?}); another machine \
                     or user builds another image",
                    cause.trim_end_matches("-name"),
                    hits.len(),
                    printable_around(a, o, name.len())
                ),
                fix: fix.into(),
            });
        }
    }
}

/// One member of an archive: name, modification time, uid, gid, mode and data.
struct Member<'a> {
    name: String,
    mtime: u64,
    uid: u64,
    gid: u64,
    data: &'a [u8],
    /// cpio: the inode number.
    ino: Option<u64>,
}

/// An archive format: its name and the fixes for its two causes.
struct Format {
    kind: &'static str,
    fix_order: &'static str,
    fix_meta: &'static str,
}

fn compare_members(
    format: &Format,
    location: &str,
    (a, b): (&[Member], &[Member]),
    ctx: &Context,
    depth: u32,
    out: &mut Vec<Finding>,
) {
    let Format { kind, fix_order, fix_meta } = *format;
    let names_a: Vec<&str> = a.iter().map(|m| m.name.as_str()).collect();
    let names_b: Vec<&str> = b.iter().map(|m| m.name.as_str()).collect();
    if names_a != names_b {
        let mut sa = names_a.clone();
        let mut sb = names_b.clone();
        sa.sort_unstable();
        sb.sort_unstable();
        let detail = if sa == sb {
            format!(
                "the {kind}'s members are in another order: first build {}; second build {}",
                preview(&names_a),
                preview(&names_b)
            )
        } else {
            format!(
                "the {kind}s hold other members: first build {}; second build {}",
                preview(&names_a),
                preview(&names_b)
            )
        };
        out.push(Finding { cause: "archive-order".into(), location: location.into(), detail, fix: fix_order.into() });
    }
    let mut meta = Vec::new();
    for ma in a {
        let Some(mb) = b.iter().find(|m| m.name == ma.name) else { continue };
        let mut what = Vec::new();
        if ma.mtime != mb.mtime {
            what.push(format!("mtime {} and {}", ma.mtime, mb.mtime));
        }
        if ma.uid != mb.uid || ma.gid != mb.gid {
            what.push(format!("owner {}:{} and {}:{}", ma.uid, ma.gid, mb.uid, mb.gid));
        }
        if ma.ino.is_some() && ma.ino != mb.ino {
            what.push("inode numbers".into());
        }
        if !what.is_empty() {
            meta.push(format!("{} ({})", ma.name, what.join(", ")));
        }
        if ma.data != mb.data {
            examine(&format!("{location}({})", ma.name), ma.data, mb.data, ctx, depth + 1, out);
        }
    }
    let stamped = a.iter().filter(|m| m.mtime != 0 && m.mtime != ctx.source_date_epoch).count();
    if !meta.is_empty() {
        out.push(Finding {
            cause: "archive-metadata".into(),
            location: location.into(),
            detail: format!(
                "{} of {} {kind} members have other headers: {}",
                meta.len(),
                a.len(),
                preview(&meta.iter().map(String::as_str).collect::<Vec<_>>())
            ),
            fix: fix_meta.into(),
        });
    } else if stamped > 0 && kind == "ar archive" {
        // The same here, but a time another build will not share.
        out.push(Finding {
            cause: "archive-metadata".into(),
            location: location.into(),
            detail: format!("{stamped} of {} members carry a modification time", a.len()),
            fix: fix_meta.into(),
        });
    }
}

fn preview(names: &[&str]) -> String {
    let shown: Vec<&str> = names.iter().take(6).copied().collect();
    format!(
        "{}{}",
        shown.join(" "),
        if names.len() > 6 { format!(" ... ({} in all)", names.len()) } else { String::new() }
    )
}

fn ar(location: &str, a: &[u8], b: &[u8], ctx: &Context, depth: u32, out: &mut Vec<Finding>) -> bool {
    fn members(data: &[u8]) -> Option<Vec<Member<'_>>> {
        let file = object::read::archive::ArchiveFile::parse(data).ok()?;
        let mut out = Vec::new();
        for m in file.members() {
            let m = m.ok()?;
            out.push(Member {
                name: String::from_utf8_lossy(m.name()).into_owned(),
                mtime: m.date().unwrap_or(0),
                uid: m.uid().unwrap_or(0),
                gid: m.gid().unwrap_or(0),
                data: m.data(data).ok()?,
                ino: None,
            });
        }
        Some(out)
    }
    let (Some(ma), Some(mb)) = (members(a), members(b)) else { return false };
    compare_members(
        &Format {
            kind: "ar archive",
            fix_order: "add the members in a fixed order (sort the object files: $(sort ...) in make)",
            fix_meta: "make deterministic archives: ar rcsD (ARFLAGS=rcsD; binutils configured with \
         --enable-deterministic-archives does it by default), or ranlib -D",
        },
        location,
        (&ma, &mb),
        ctx,
        depth,
        out,
    );
    true
}

fn is_tar(d: &[u8]) -> bool {
    d.len() >= 512 && &d[257..262] == b"ustar"
}

fn octal(field: &[u8]) -> u64 {
    let s = String::from_utf8_lossy(field);
    u64::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap_or(0)
}

fn tar(location: &str, a: &[u8], b: &[u8], ctx: &Context, depth: u32, out: &mut Vec<Finding>) -> bool {
    fn members(d: &[u8]) -> Vec<Member<'_>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 512 <= d.len() && out.len() < 100_000 {
            let h = &d[at..at + 512];
            if h.iter().all(|&c| c == 0) || &h[257..262] != b"ustar" {
                break;
            }
            let name_end = h[..100].iter().position(|&c| c == 0).unwrap_or(100);
            let size = octal(&h[124..136]) as usize;
            let start = at + 512;
            let end = (start + size).min(d.len());
            out.push(Member {
                name: String::from_utf8_lossy(&h[..name_end]).into_owned(),
                mtime: octal(&h[136..148]),
                uid: octal(&h[108..116]),
                gid: octal(&h[116..124]),
                data: &d[start..end],
                ino: None,
            });
            at = start + size.div_ceil(512) * 512;
        }
        out
    }
    let (ma, mb) = (members(a), members(b));
    if ma.is_empty() || mb.is_empty() {
        return false;
    }
    compare_members(
        &Format {
            kind: "tar archive",
            fix_order: "tar --sort=name (GNU tar 1.28+), or give tar a sorted list of files",
            fix_meta: "tar --mtime=@$SOURCE_DATE_EPOCH --owner=0 --group=0 --numeric-owner \
         --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
        },
        location,
        (&ma, &mb),
        ctx,
        depth,
        out,
    );
    true
}

fn cpio(location: &str, a: &[u8], b: &[u8], ctx: &Context, out: &mut Vec<Finding>) -> bool {
    fn hex_field(h: &[u8], i: usize) -> u64 {
        u64::from_str_radix(&String::from_utf8_lossy(&h[6 + i * 8..14 + i * 8]), 16).unwrap_or(0)
    }
    fn members(d: &[u8]) -> Vec<Member<'_>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 110 <= d.len() && (d[at..].starts_with(b"070701") || d[at..].starts_with(b"070702")) {
            let h = &d[at..at + 110];
            let size = hex_field(h, 6) as usize;
            let name_len = hex_field(h, 11) as usize;
            let name_end = (at + 110 + name_len).min(d.len());
            let name = String::from_utf8_lossy(&d[at + 110..name_end]).trim_end_matches('\0').to_owned();
            if name == "TRAILER!!!" {
                break;
            }
            let data_start = (at + 110 + name_len).div_ceil(4) * 4;
            let data_end = (data_start + size).min(d.len());
            out.push(Member {
                name,
                mtime: hex_field(h, 5),
                uid: hex_field(h, 2),
                gid: hex_field(h, 3),
                data: &d[data_start.min(d.len())..data_end],
                ino: Some(hex_field(h, 0)),
            });
            at = data_end.div_ceil(4) * 4;
        }
        out
    }
    let (ma, mb) = (members(a), members(b));
    if ma.is_empty() || mb.is_empty() {
        return false;
    }
    compare_members(
        &Format {
            kind: "cpio archive",
            fix_order: "give cpio a sorted list: find . | LC_ALL=C sort | cpio -o -H newc --reproducible",
            fix_meta:
                "cpio --reproducible (renumbers inodes) with --owner=0:0, and file times set from SOURCE_DATE_EPOCH \
         (touch -d @$SOURCE_DATE_EPOCH)",
        },
        location,
        (&ma, &mb),
        ctx,
        0,
        out,
    );
    true
}

fn zip(location: &str, a: &[u8], b: &[u8], ctx: &Context, out: &mut Vec<Finding>) -> bool {
    fn members(d: &[u8]) -> Vec<Member<'_>> {
        let mut out = Vec::new();
        let mut at = 0;
        let u16_at = |i: usize| u16::from_le_bytes([d[i], d[i + 1]]) as usize;
        while at + 30 <= d.len() && d[at..].starts_with(b"PK\x03\x04") {
            let flags = u16_at(at + 6);
            let time = u16_at(at + 10) as u64;
            let date = u16_at(at + 12) as u64;
            let size = u32::from_le_bytes([d[at + 18], d[at + 19], d[at + 20], d[at + 21]]) as usize;
            let name_len = u16_at(at + 26);
            let extra_len = u16_at(at + 28);
            let name_end = (at + 30 + name_len).min(d.len());
            let data_start = (name_end + extra_len).min(d.len());
            let data_end = (data_start + size).min(d.len());
            out.push(Member {
                name: String::from_utf8_lossy(&d[at + 30..name_end]).into_owned(),
                mtime: (date << 16) | time,
                uid: 0,
                gid: 0,
                // The extra field (extended timestamps, uid/gid) is compared with the data.
                data: &d[name_end..data_end],
                ino: None,
            });
            if flags & 0x08 != 0 {
                break; // sizes follow the data: stop at the first such entry
            }
            at = data_end;
        }
        out
    }
    let (ma, mb) = (members(a), members(b));
    if ma.is_empty() || mb.is_empty() {
        return false;
    }
    compare_members(
        &Format {
            kind: "zip archive",
            fix_order: "add the files in a fixed order (a sorted list)",
            fix_meta: "zip -X (no extra attributes), file times set from SOURCE_DATE_EPOCH (touch -d @$SOURCE_DATE_EPOCH) and \
         TZ=UTC, or strip-nondeterminism on the result",
        },
        location,
        (&ma, &mb),
        ctx,
        2,
        out,
    );
    true
}

fn gzip(location: &str, a: &[u8], b: &[u8], ctx: &Context, out: &mut Vec<Finding>) {
    if a.len() < 10 || b.len() < 10 {
        return;
    }
    let mtime = |d: &[u8]| u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as u64;
    let (ta, tb) = (mtime(a), mtime(b));
    let named = a[3] & 0x08 != 0;
    if ta != tb || (ta != 0 && ta != ctx.source_date_epoch) || named {
        out.push(Finding {
            cause: "compression-header".into(),
            location: location.into(),
            detail: format!(
                "the gzip header holds {}a modification time ({ta} and {tb})",
                if named { "the input's file name and " } else { "" }
            ),
            fix: "gzip -n (--no-name: no file name, no time), or pigz -n".into(),
        });
    }
}

fn elf(location: &str, a: &[u8], b: &[u8], out: &mut Vec<Finding>) {
    use object::{Object, ObjectSection};
    let (Ok(fa), Ok(fb)) = (object::File::parse(a), object::File::parse(b)) else { return };
    let mut resized = Vec::new();
    let mut changed = Vec::new();
    for sa in fa.sections() {
        let Ok(name) = sa.name() else { continue };
        let Some(sb) = fb.section_by_name(name) else {
            resized.push(format!("{name} (only in the first build)"));
            continue;
        };
        if sa.size() != sb.size() {
            resized.push(format!("{name} ({} and {} bytes)", sa.size(), sb.size()));
        } else if sa.data().ok() != sb.data().ok() {
            changed.push(name.to_owned());
        }
    }
    if resized.is_empty() && changed.is_empty() {
        return;
    }
    let all: Vec<&str> = resized.iter().chain(&changed).map(|s| s.split(' ').next().unwrap_or("")).collect();
    let mut fixes = Vec::new();
    if all.iter().any(|n| n.starts_with(".debug") || n.starts_with(".zdebug")) {
        fixes.push(format!("debug information differs (paths or times in it): {PATH_FIX}"));
    }
    if all.iter().any(|n| [".rodata", ".data", ".rodata.str1.1", ".rdata"].contains(n) || n.starts_with(".rodata")) {
        fixes.push(
            "constant data differs: strings such as __FILE__, __DATE__ or __TIME__ (see the other findings)".into(),
        );
    }
    if all.contains(&".comment") {
        fixes.push("the compiler identification differs: build both with the same toolchain".into());
    }
    if all.iter().all(|n| n.starts_with(".note.gnu.build-id")) {
        fixes.push("only the build id differs; it is a hash of the rest, so look at the linker's inputs".into());
    } else if all.iter().any(|n| n.starts_with(".note.gnu.build-id")) {
        fixes.push("the build id follows from the other differences".into());
    }
    if fixes.is_empty() {
        fixes.push("compare the sections named here (objdump -s -j SECTION on both files)".into());
    }
    let mut detail = String::from("ELF sections differ:");
    if !resized.is_empty() {
        detail.push_str(&format!(" in size {}", resized.join(", ")));
    }
    if !changed.is_empty() {
        detail.push_str(&format!("{} in content {}", if resized.is_empty() { "" } else { ";" }, changed.join(", ")));
    }
    out.push(Finding { cause: "elf-sections".into(), location: location.into(), detail, fix: fixes.join("; ") });
}

/// Where the two first differ, how far, with 16 bytes of context in hex.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<String> {
    let common = a.len().min(b.len());
    let at = (0..common).find(|&i| a[i] != b[i]).or((a.len() != b.len()).then_some(common))?;
    let mut end = at;
    let mut same = 0;
    while end < common && same < 8 {
        same = if a[end] == b[end] { same + 1 } else { 0 };
        end += 1;
    }
    let run = end - at - same;
    let dump = |d: &[u8]| -> String {
        let from = at.saturating_sub(8);
        let to = (at + 24).min(d.len());
        let hex: Vec<String> = d[from..to].iter().map(|c| format!("{c:02x}")).collect();
        let text: String =
            d[from..to].iter().map(|&c| if (0x20..0x7f).contains(&c) { c as char } else { '.' }).collect();
        format!("{} |{text}|", hex.join(" "))
    };
    let sizes = if a.len() == b.len() { String::new() } else { format!("; sizes {} and {} bytes", a.len(), b.len()) };
    Some(format!(
        "first difference at byte {at} (0x{at:x}), {run} bytes from there{sizes}\n    first:  {}\n    second: {}",
        dump(a),
        dump(b)
    ))
}
