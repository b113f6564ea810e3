//! Updraft's vocabulary: the small value types that cross crate boundaries
//! (digests, key ids, security versions, timestamps).
//!
//! This crate depends on nothing heavy and does no IO. Every type here has one
//! canonical text form, used both in JSON and on the command line.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value could not be parsed from its text form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {reason}")]
pub struct ParseError {
    pub what: &'static str,
    pub input: String,
    pub reason: String,
}

impl ParseError {
    fn new(what: &'static str, input: &str, reason: impl Into<String>) -> Self {
        let mut input = input.to_owned();
        if input.len() > 80 {
            let mut cut = 80;
            while !input.is_char_boundary(cut) {
                cut -= 1;
            }
            input.truncate(cut);
            input.push('…');
        }
        Self { what, input, reason: reason.into() }
    }
}

macro_rules! hex_digest {
    ($(#[$doc:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;

            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(self.0))
            }
        }

        impl FromStr for $name {
            type Err = ParseError;

            /// Lowercase hex only: one text form per value.
            fn from_str(s: &str) -> Result<Self, ParseError> {
                if s.len() != $len * 2 {
                    return Err(ParseError::new(
                        $what,
                        s,
                        format!("expected {} hex digits, found {}", $len * 2, s.len()),
                    ));
                }
                if s.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(ParseError::new($what, s, "hex digits must be lowercase"));
                }
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out)
                    .map_err(|e| ParseError::new($what, s, e.to_string()))?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "schemars")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": format!("^[0-9a-f]{{{}}}$", $len * 2),
                    "description": concat!("A ", $what, ": lowercase hex."),
                })
            }
        }
    };
}

hex_digest!(
    /// A SHA-256 digest, written as 64 lowercase hex digits.
    Sha256Digest,
    32,
    "sha256 digest"
);
hex_digest!(
    /// A SHA-512 digest, written as 128 lowercase hex digits.
    Sha512Digest,
    64,
    "sha512 digest"
);
hex_digest!(
    /// A key id: the SHA-256 of the key's canonical public form (the DER
    /// SubjectPublicKeyInfo), written as 64 lowercase hex digits.
    KeyId,
    32,
    "key id"
);

/// The anti-rollback counter of a release: devices refuse a bundle whose
/// security version is below the one they have installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecurityVersion(pub u64);

impl fmt::Display for SecurityVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for SecurityVersion {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        s.parse::<u64>().map(SecurityVersion).map_err(|e| ParseError::new("security version", s, e.to_string()))
    }
}

/// A point in time, in whole seconds since the Unix epoch (UTC). Its text
/// form is RFC 3339 in UTC with seconds precision: `2026-01-01T00:00:00Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

/// The latest time RFC 3339 can write with a four-digit year (9999-12-31T23:59:59Z).
pub const MAX_TIMESTAMP_S: u64 = 253_402_300_799;

impl Timestamp {
    /// The current wall-clock time. Only shells call this; cores take the
    /// time as a parameter.
    pub fn now() -> Self {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(since.as_secs())
    }

    pub fn from_unix_s(secs: u64) -> Result<Self, ParseError> {
        if secs > MAX_TIMESTAMP_S {
            return Err(ParseError::new("timestamp", &secs.to_string(), "later than 9999-12-31T23:59:59Z"));
        }
        Ok(Timestamp(secs))
    }

    pub fn unix_s(self) -> u64 {
        self.0
    }

    /// This time plus a duration, saturating at [`MAX_TIMESTAMP_S`].
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_secs()).min(MAX_TIMESTAMP_S))
    }

    /// Parses `SOURCE_DATE_EPOCH`: a decimal count of seconds since the epoch.
    pub fn parse_source_date_epoch(s: &str) -> Result<Self, ParseError> {
        let trimmed = s.trim();
        if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::new(
                "SOURCE_DATE_EPOCH",
                s,
                "expected a decimal number of seconds since 1970-01-01T00:00:00Z",
            ));
        }
        let secs: u64 = trimmed
            .parse()
            .map_err(|e: std::num::ParseIntError| ParseError::new("SOURCE_DATE_EPOCH", s, e.to_string()))?;
        Timestamp::from_unix_s(secs)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + Duration::from_secs(self.0.min(MAX_TIMESTAMP_S));
        write!(f, "{}", humantime::format_rfc3339_seconds(t))
    }
}

impl FromStr for Timestamp {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        if !s.ends_with('Z') {
            return Err(ParseError::new("timestamp", s, "expected RFC 3339 in UTC, ending in Z"));
        }
        let t = humantime::parse_rfc3339(s).map_err(|e| ParseError::new("timestamp", s, e.to_string()))?;
        let secs =
            t.duration_since(UNIX_EPOCH).map_err(|_| ParseError::new("timestamp", s, "before 1970-01-01T00:00:00Z"))?;
        if secs.subsec_nanos() != 0 {
            return Err(ParseError::new("timestamp", s, "fractional seconds are not allowed"));
        }
        Timestamp::from_unix_s(secs.as_secs())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a duration written as a number and a unit (`90s`, `15m`, `12h`,
/// `365d`, `52w`, or combinations such as `1d 12h`).
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    humantime::parse_duration(s).map_err(|e| ParseError::new("duration", s, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_rfc3339() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_767_225_600, "2026-01-01T00:00:00Z"),
            (MAX_TIMESTAMP_S, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(Timestamp(secs).to_string(), text);
            assert_eq!(text.parse::<Timestamp>().unwrap(), Timestamp(secs));
        }
        for bad in ["2026-01-01T00:00:00+01:00", "2026-01-01T00:00:00.5Z", "yesterday"] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_accept_only_lowercase_hex_of_the_right_length() {
        let hex64 = "ab".repeat(32);
        let d: Sha256Digest = hex64.parse().unwrap();
        assert_eq!(d.to_string(), hex64);
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{hex64}\""));
        assert!("AB".repeat(32).parse::<Sha256Digest>().is_err());
        assert!("ab".repeat(31).parse::<Sha256Digest>().is_err());
        assert!("zz".repeat(32).parse::<Sha256Digest>().is_err());
    }

    #[test]
    fn source_date_epoch_is_a_plain_decimal() {
        assert_eq!(Timestamp::parse_source_date_epoch("1767225600").unwrap(), Timestamp(1_767_225_600));
        for bad in ["", "-1", "1e9", "0x10", "253402300800"] {
            assert!(Timestamp::parse_source_date_epoch(bad).is_err(), "{bad}");
        }
    }
}

/// What the server accepts as an id or a name (device, family, hardware,
/// region, tag, channel, component, rollout, token): 1 to 128 of
/// `A-Z a-z 0-9 . _ - @ + :`, never `..`. The OpenAPI document states it.
pub const ID_PATTERN: &str = r"^(?!.*\.\.)[A-Za-z0-9._@+:-]{1,128}$";
/// A release id: `NAME@VERSION` with a semantic version, at most 128 characters.
pub const RELEASE_ID_PATTERN: &str = concat!(
    r"^(?=.{1,128}$)(?!.*\.\.)[A-Za-z0-9._+:-]+@(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)",
    r"(-[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*(\.[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
);
/// A semantic version (a component's).
pub const VERSION_PATTERN: &str = concat!(
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)",
    r"(-[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*(\.[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
);

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $pattern:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        #[cfg(feature = "schemars")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "pattern": $pattern })
            }
        }

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }
    };
}

string_id!(
    /// A device's identifier, unique in the fleet.
    DeviceId,
    ID_PATTERN
);
string_id!(
    /// A release: a published bundle, written `NAME@VERSION`.
    ReleaseId,
    RELEASE_ID_PATTERN
);
string_id!(
    /// A rollout's identifier.
    RolloutId,
    ID_PATTERN
);

/// Milliseconds since the Unix epoch: the clock of the sans-IO cores, which
/// receive it as a parameter and never read it themselves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMs(pub u64);

impl UnixMs {
    pub fn plus(self, d: Duration) -> UnixMs {
        UnixMs(self.0.saturating_add(d.as_millis() as u64))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: UnixMs) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// An install event, as a device reports it: one enum from the agent core
/// through the wire and the server's journal to the rollout engine, so that
/// an unknown or misspelt event is a parse error, never a silent failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum InstallEvent {
    /// The bundle is downloaded and verified.
    Downloaded,
    /// The image is in the inactive slot, synced and read back.
    Installed,
    /// The device booted the new slot on trial.
    TrialBoot,
    /// The health checks passed and the new slot is committed.
    Committed,
    /// The trial boot failed (boot attempts exhausted): the bootloader reverted.
    RevertedBoot,
    /// The health checks failed after the trial boot: the agent reverted.
    RevertedHealth,
    /// Download, verification, policy or installation failed (before the trial).
    Failed,
}

impl InstallEvent {
    /// Every event, in the order of an update.
    pub const ALL: [InstallEvent; 7] = [
        InstallEvent::Downloaded,
        InstallEvent::Installed,
        InstallEvent::TrialBoot,
        InstallEvent::Committed,
        InstallEvent::RevertedBoot,
        InstallEvent::RevertedHealth,
        InstallEvent::Failed,
    ];

    /// The wire name (`trial_boot`).
    pub fn as_str(self) -> &'static str {
        match self {
            InstallEvent::Downloaded => "downloaded",
            InstallEvent::Installed => "installed",
            InstallEvent::TrialBoot => "trial_boot",
            InstallEvent::Committed => "committed",
            InstallEvent::RevertedBoot => "reverted_boot",
            InstallEvent::RevertedHealth => "reverted_health",
            InstallEvent::Failed => "failed",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<InstallEvent> {
        InstallEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Whether the update ended with this event (committed, reverted or failed).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            InstallEvent::Committed | InstallEvent::RevertedBoot | InstallEvent::RevertedHealth | InstallEvent::Failed
        )
    }
}

impl fmt::Display for InstallEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
