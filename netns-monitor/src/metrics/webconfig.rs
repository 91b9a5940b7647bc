//! The web configuration file of the Prometheus exporter-toolkit (`--web.config.file` in node_exporter), so an
//! operator can reuse the file and the habits they already have: TLS, client certificates, basic auth with
//! bcrypt hashes and extra response headers.
//!
//! Written against exporter-toolkit's `docs/web-configuration.md` and `web/tls_config.go`. Differences, all
//! refusals rather than silent changes of meaning:
//! - `cipher_suites`, `curve_preferences`, `client_allowed_sans` and `rate_limit` are refused: rustls chooses
//!   its own (modern) suites and groups, and we do not implement SAN pinning or rate limiting.
//! - `min_version` below `TLS12` is refused; TLS 1.0/1.1 are never offered.
//! - `client_auth_type` is `NoClientCert` or `RequireAndVerifyClientCert`; the other Go policies accept
//!   unverified or missing client certificates, which is what a file asking for client auth does not want.
//! - A `tls_server_config` section without a certificate is an error (exporter-toolkit falls back to plain
//!   HTTP when the section only holds e.g. `min_version`, which hides a mistake).
//! - `http2` is accepted and has no effect: the endpoint speaks HTTP/1.1 (what Prometheus scrapes with unless
//!   told otherwise), so ALPN never selects h2. The server logs this at start-up when `http2` is true.
//! - The file is read once, at start-up; exporter-toolkit rereads it on every request.
//! - Scalars follow YAML 1.2: `yes`/`on` are strings, so `http2: yes` is refused (Go's yaml.v2 reads true).
//!
//! Relative paths are relative to the directory of the configuration file, as exporter-toolkit does.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use hyper::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer, de};

/// A parsed and validated web configuration. Files it names (certificates, keys, CAs) are only read when the
/// server binds, so a bad certificate is reported by [`crate::metrics::http::MetricsServer::bind`].
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// The file this came from (for messages).
    pub path: PathBuf,
    /// `tls_server_config`; `None` serves plain HTTP.
    pub tls: Option<TlsConfig>,
    /// `http_server_config`.
    pub http: HttpConfig,
    /// `basic_auth_users`: user name to bcrypt hash; empty means no authentication.
    pub users: BTreeMap<String, PasswordHash>,
}

/// `tls_server_config`.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// `cert_file` or inline `cert`: the server's certificate chain.
    pub cert: PemSource,
    /// `key_file` or inline `key`: the server's private key.
    pub key: PemSource,
    /// `client_auth_type` (and `client_ca_file` / `client_ca`).
    pub client_auth: ClientAuth,
    /// `min_version`, default TLS 1.2.
    pub min_version: TlsVersion,
    /// `max_version`, default TLS 1.3.
    pub max_version: TlsVersion,
    /// `prefer_server_cipher_suites`, default true: choose by the server's order, not the client's.
    pub prefer_server_cipher_suites: bool,
}

/// Where PEM data comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file (already joined with the configuration file's directory).
    File { field: &'static str, path: PathBuf },
    /// PEM text inside the configuration file.
    Inline { field: &'static str, pem: String },
}

impl PemSource {
    /// The configuration field this came from (`cert_file`, `key`, ...).
    pub fn field(&self) -> &'static str {
        match self {
            PemSource::File { field, .. } | PemSource::Inline { field, .. } => field,
        }
    }
}

/// Names the source without showing inline PEM (it may be a private key).
impl fmt::Display for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File { field, path } => write!(f, "{field} {}", path.display()),
            PemSource::Inline { field, .. } => write!(f, "inline {field}"),
        }
    }
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `client_auth_type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (the default).
    None,
    /// `RequireAndVerifyClientCert`: a certificate signed by one of these CAs is required.
    RequireAndVerify { ca: PemSource },
}

/// TLS protocol versions we allow; anything older is refused when the file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// As the file spells them.
impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        })
    }
}

/// `http_server_config`.
#[derive(Clone, Debug, Default)]
pub struct HttpConfig {
    /// `http2` as written (default true, as in exporter-toolkit). Has no effect: see the module docs.
    pub http2: bool,
    /// `headers`: added to every response. Blank values are left out ("unset if blank").
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A bcrypt hash from `basic_auth_users`, checked for format and cost.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Accepts the `$2a$`, `$2b$`, `$2x$` and `$2y$` forms (htpasswd writes `$2y$`) with a cost of 4 to 31.
    pub fn parse(hash: &str) -> Result<Self, bcrypt::BcryptError> {
        let parts: bcrypt::HashParts = hash.parse()?;
        let cost = parts.get_cost();
        if !(4..=31).contains(&cost) {
            return Err(bcrypt::BcryptError::CostNotAllowed(cost));
        }
        Ok(Self(hash.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Hides the hash: it is a password verifier, and logs are not the place for it.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// Why a web configuration was refused; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read web config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors, wrong types and unknown fields (the cause names the field and the line).
    #[error("web config {} is not valid", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("web config {}: {field} is not supported: {reason}", path.display())]
    Unsupported { path: PathBuf, field: String, reason: String },
    #[error("web config {}: {field}: {reason}", path.display())]
    Invalid { path: PathBuf, field: String, reason: String },
    #[error("web config {}: basic_auth_users.{user} is not a bcrypt hash", path.display())]
    NotBcrypt {
        path: PathBuf,
        user: String,
        #[source]
        source: bcrypt::BcryptError,
    },
}

impl WebConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = crate::textfile::read_to_string(path)
            .map_err(|source| WebConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Validates `text` as if read from `path` (relative file names are resolved against its directory).
    pub fn parse(text: &str, path: &Path) -> Result<Self, WebConfigError> {
        // An empty file (or only comments) is a valid configuration with nothing set, as in exporter-toolkit;
        // the YAML parser would call it a missing document.
        let raw = if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            RawConfig::default()
        } else {
            serde_norway::from_str(text).map_err(|source| WebConfigError::Parse { path: path.to_owned(), source })?
        };
        Validator { path, dir: path.parent().unwrap_or(Path::new("")) }.config(raw)
    }
}

// The file's shape. Fields that exporter-toolkit knows but we do not support are parsed (as any YAML value)
// only so they can be refused with a reason instead of serde's generic "unknown field".
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with tls_server_config, http_server_config or basic_auth_users")]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<RawUsers>,
    rate_limit: Option<serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map of TLS settings")]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map of HTTP settings")]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// `basic_auth_users` in file order; a user listed twice is an error, not "the last one wins".
struct RawUsers(Vec<(String, String)>);

impl<'de> Deserialize<'de> for RawUsers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = RawUsers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of user names to bcrypt hashes")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawUsers, A::Error> {
                let mut users: Vec<(String, String)> = Vec::new();
                while let Some((user, hash)) = map.next_entry::<String, String>()? {
                    if users.iter().any(|(u, _)| *u == user) {
                        return Err(de::Error::custom(format_args!("user {user:?} is listed twice")));
                    }
                    users.push((user, hash));
                }
                Ok(RawUsers(users))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Headers that may be set (as written, as sent) with their allowed values (`None`: any), as exporter-toolkit's
/// `extraHTTPHeaders`.
const EXTRA_HEADERS: &[(&str, &str, Option<&[&str]>)] = &[
    ("Strict-Transport-Security", "strict-transport-security", None),
    ("X-Content-Type-Options", "x-content-type-options", Some(&["nosniff"])),
    ("X-Frame-Options", "x-frame-options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", "x-xss-protection", None),
    ("Content-Security-Policy", "content-security-policy", None),
];

struct Validator<'a> {
    path: &'a Path,
    dir: &'a Path,
}

impl Validator<'_> {
    fn config(&self, raw: RawConfig) -> Result<WebConfig, WebConfigError> {
        if raw.rate_limit.is_some() {
            return Err(self.unsupported("rate_limit", "limit the scrape rate at the client or a reverse proxy"));
        }
        let tls = raw.tls_server_config.map(|t| self.tls(t)).transpose()?;
        let http = raw
            .http_server_config
            .map(|h| self.http(h))
            .transpose()?
            .unwrap_or(HttpConfig { http2: true, headers: Vec::new() });
        let mut users = BTreeMap::new();
        for (user, hash) in raw.basic_auth_users.map(|u| u.0).unwrap_or_default() {
            if user.contains(':') {
                return Err(self.invalid(
                    format!("basic_auth_users.{user}"),
                    "a user name cannot contain ':' (basic auth separates user and password with it)",
                ));
            }
            let hash = PasswordHash::parse(&hash).map_err(|source| WebConfigError::NotBcrypt {
                path: self.path.to_owned(),
                user: user.clone(),
                source,
            })?;
            users.insert(user, hash);
        }
        Ok(WebConfig { path: self.path.to_owned(), tls, http, users })
    }

    fn tls(&self, raw: RawTls) -> Result<TlsConfig, WebConfigError> {
        const WHY_SUITES: &str =
            "rustls offers only modern cipher suites and key exchange groups and picks them itself";
        for (field, value, reason) in [
            ("cipher_suites", &raw.cipher_suites, WHY_SUITES),
            ("curve_preferences", &raw.curve_preferences, WHY_SUITES),
            (
                "client_allowed_sans",
                &raw.client_allowed_sans,
                "SAN pinning is not implemented; use a client CA that only signs allowed clients",
            ),
        ] {
            if value.is_some() {
                return Err(self.unsupported(format!("tls_server_config.{field}"), reason));
            }
        }
        let cert = self
            .pem_source(("cert_file", raw.cert_file), ("cert", raw.cert))?
            .ok_or_else(|| self.invalid("tls_server_config", "one of cert_file or cert is required"))?;
        let key = self
            .pem_source(("key_file", raw.key_file), ("key", raw.key))?
            .ok_or_else(|| self.invalid("tls_server_config", "one of key_file or key is required"))?;
        let ca = self.pem_source(("client_ca_file", raw.client_ca_file), ("client_ca", raw.client_ca))?;
        let client_auth = match (raw.client_auth_type.as_deref().unwrap_or(""), ca) {
            ("" | "NoClientCert", None) => ClientAuth::None,
            ("" | "NoClientCert", Some(ca)) => {
                return Err(self.invalid(
                    format!("tls_server_config.{}", ca.field()),
                    "a client CA is set but client_auth_type does not ask for client certificates; \
                     set client_auth_type: RequireAndVerifyClientCert",
                ));
            }
            ("RequireAndVerifyClientCert", Some(ca)) => ClientAuth::RequireAndVerify { ca },
            ("RequireAndVerifyClientCert", None) => {
                return Err(self.invalid(
                    "tls_server_config.client_auth_type",
                    "RequireAndVerifyClientCert needs client_ca_file (or client_ca) to verify against",
                ));
            }
            ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" | "VerifyClientCertIfGiven", _) => {
                return Err(self.unsupported(
                    format!("tls_server_config.client_auth_type {}", raw.client_auth_type.unwrap_or_default()),
                    "it lets clients in with unverified or no certificates; use RequireAndVerifyClientCert or \
                     NoClientCert",
                ));
            }
            (other, _) => {
                return Err(self.invalid(
                    "tls_server_config.client_auth_type",
                    format!("{other:?} is not a client auth type (NoClientCert or RequireAndVerifyClientCert)"),
                ));
            }
        };
        let min_version = self.tls_version("min_version", raw.min_version)?.unwrap_or(TlsVersion::Tls12);
        let max_version = self.tls_version("max_version", raw.max_version)?.unwrap_or(TlsVersion::Tls13);
        if min_version > max_version {
            return Err(self.invalid(
                "tls_server_config",
                format!("min_version {min_version} is above max_version {max_version}"),
            ));
        }
        Ok(TlsConfig {
            cert,
            key,
            client_auth,
            min_version,
            max_version,
            prefer_server_cipher_suites: raw.prefer_server_cipher_suites.unwrap_or(true),
        })
    }

    /// One of a `*_file` field and its inline twin; an empty string counts as unset, as in exporter-toolkit.
    fn pem_source(
        &self,
        (file_field, file): (&'static str, Option<String>),
        (inline_field, inline): (&'static str, Option<String>),
    ) -> Result<Option<PemSource>, WebConfigError> {
        let file = file.filter(|f| !f.is_empty());
        let inline = inline.filter(|i| !i.is_empty());
        match (file, inline) {
            (Some(_), Some(_)) => Err(self.invalid(
                format!("tls_server_config.{file_field}"),
                format!("set either {file_field} or {inline_field}, not both"),
            )),
            (Some(file), None) => Ok(Some(PemSource::File { field: file_field, path: self.dir.join(file) })),
            (None, Some(pem)) => Ok(Some(PemSource::Inline { field: inline_field, pem })),
            (None, None) => Ok(None),
        }
    }

    fn tls_version(&self, field: &str, value: Option<String>) -> Result<Option<TlsVersion>, WebConfigError> {
        let field = format!("tls_server_config.{field}");
        match value.as_deref() {
            None => Ok(None),
            Some("TLS12") => Ok(Some(TlsVersion::Tls12)),
            Some("TLS13") => Ok(Some(TlsVersion::Tls13)),
            Some(old @ ("TLS10" | "TLS11")) => {
                Err(self
                    .unsupported(format!("{field} {old}"), "TLS older than 1.2 is never offered; use TLS12 or TLS13"))
            }
            Some(other) => Err(self.invalid(field, format!("{other:?} is not a TLS version (TLS12 or TLS13)"))),
        }
    }

    fn http(&self, raw: RawHttp) -> Result<HttpConfig, WebConfigError> {
        let mut headers = Vec::new();
        for (name, value) in raw.headers.unwrap_or_default() {
            let field = format!("http_server_config.headers.{name}");
            let Some((_, wire, allowed)) = EXTRA_HEADERS.iter().find(|(h, _, _)| h.eq_ignore_ascii_case(&name)) else {
                let names: Vec<&str> = EXTRA_HEADERS.iter().map(|(h, _, _)| *h).collect();
                return Err(self.invalid(field, format!("this header cannot be set (allowed: {})", names.join(", "))));
            };
            if value.is_empty() {
                continue;
            }
            if let Some(allowed) = allowed
                && !allowed.contains(&value.as_str())
            {
                return Err(self.invalid(field, format!("{value:?} is not one of {allowed:?}")));
            }
            let value = HeaderValue::from_str(&value)
                .map_err(|_| self.invalid(field, "the value has characters a header cannot carry"))?;
            headers.push((HeaderName::from_static(wire), value));
        }
        Ok(HttpConfig { http2: raw.http2.unwrap_or(true), headers })
    }

    fn unsupported(&self, field: impl Into<String>, reason: impl Into<String>) -> WebConfigError {
        WebConfigError::Unsupported { path: self.path.to_owned(), field: field.into(), reason: reason.into() }
    }

    fn invalid(&self, field: impl Into<String>, reason: impl Into<String>) -> WebConfigError {
        WebConfigError::Invalid { path: self.path.to_owned(), field: field.into(), reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    const PATH: &str = "/etc/netns-monitor/web.yml";

    fn parse(yaml: &str) -> WebConfig {
        WebConfig::parse(yaml, Path::new(PATH)).unwrap_or_else(|e| panic!("{yaml}\nrefused: {}", chain(&e)))
    }

    /// The error and its causes, as the agent prints them.
    fn chain(error: &WebConfigError) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    /// Asserts `yaml` is refused with a message naming the file and each of `words`; returns the error.
    fn refused(yaml: &str, words: &[&str]) -> WebConfigError {
        let error = WebConfig::parse(yaml, Path::new(PATH)).err().unwrap_or_else(|| panic!("accepted:\n{yaml}"));
        let text = chain(&error);
        assert!(text.contains(PATH), "{text:?} does not name the file");
        for word in words {
            assert!(text.contains(word), "{text:?} does not mention {word:?}");
        }
        error
    }

    fn hash(version: bcrypt::Version) -> String {
        bcrypt::hash_with_result("pw", 4).expect("bcrypt").format_for_version(version)
    }

    const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

    #[test]
    fn empty_or_comment_only_file_sets_nothing() {
        for yaml in ["", "\n\n", "# nothing here\n  # still nothing\n", "{}"] {
            let config = parse(yaml);
            assert!(config.tls.is_none() && config.users.is_empty() && config.http.headers.is_empty(), "{yaml:?}");
            assert!(config.http.http2, "http2 defaults to true as in exporter-toolkit");
            assert_eq!(config.path, Path::new(PATH));
        }
    }

    #[test]
    fn tls_files_are_relative_to_the_config_directory_with_defaults() {
        let tls = parse(TLS).tls.expect("tls");
        assert_eq!(tls.cert, PemSource::File { field: "cert_file", path: "/etc/netns-monitor/server.crt".into() });
        assert_eq!(tls.key, PemSource::File { field: "key_file", path: "/etc/netns-monitor/server.key".into() });
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        assert_eq!(tls.max_version, TlsVersion::Tls13);
        assert_eq!(tls.client_auth, ClientAuth::None);
        assert!(tls.prefer_server_cipher_suites);
    }

    #[test]
    fn absolute_paths_stay_and_a_bare_file_name_stays_relative_to_the_working_directory() {
        let yaml = "tls_server_config:\n  cert_file: /pki/a.crt\n  key_file: ../b.key\n";
        let tls = parse(yaml).tls.expect("tls");
        assert_eq!(tls.cert, PemSource::File { field: "cert_file", path: "/pki/a.crt".into() });
        assert_eq!(tls.key, PemSource::File { field: "key_file", path: "/etc/netns-monitor/../b.key".into() });
        let config = WebConfig::parse(TLS, Path::new("web.yml")).expect("parse");
        assert_eq!(config.tls.expect("tls").cert, PemSource::File { field: "cert_file", path: "server.crt".into() });
    }

    #[test]
    fn every_tls_field() {
        let yaml = format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n  \
             max_version: TLS13\n  prefer_server_cipher_suites: false\n"
        );
        let tls = parse(&yaml).tls.expect("tls");
        assert_eq!(
            tls.client_auth,
            ClientAuth::RequireAndVerify {
                ca: PemSource::File { field: "client_ca_file", path: "/etc/netns-monitor/ca.crt".into() }
            }
        );
        assert_eq!((tls.min_version, tls.max_version), (TlsVersion::Tls13, TlsVersion::Tls13));
        assert!(!tls.prefer_server_cipher_suites);

        let tls =
            parse(&format!("{TLS}  min_version: TLS12\n  max_version: TLS12\n  client_auth_type: NoClientCert\n"))
                .tls
                .expect("tls");
        assert_eq!(
            (tls.min_version, tls.max_version, tls.client_auth),
            (TlsVersion::Tls12, TlsVersion::Tls12, ClientAuth::None)
        );
    }

    #[test]
    fn inline_pem_is_accepted_and_never_displayed() {
        let yaml = "tls_server_config:\n  cert: \"-----BEGIN CERTIFICATE-----\\nAAAA\\n\"\n  key: SECRETKEY\n  \
                    client_ca: CA\n  client_auth_type: RequireAndVerifyClientCert\n";
        let tls = parse(yaml).tls.expect("tls");
        assert_eq!(tls.cert, PemSource::Inline { field: "cert", pem: "-----BEGIN CERTIFICATE-----\nAAAA\n".into() });
        assert_eq!(tls.key, PemSource::Inline { field: "key", pem: "SECRETKEY".into() });
        assert!(matches!(
            tls.client_auth,
            ClientAuth::RequireAndVerify { ca: PemSource::Inline { field: "client_ca", .. } }
        ));
        let shown = format!("{tls:?} {}", tls.key);
        assert!(!shown.contains("SECRETKEY"), "{shown}");
        assert!(shown.contains("inline key"), "{shown}");
    }

    #[test]
    fn empty_strings_count_as_unset() {
        let tls =
            parse(&format!("{TLS}  cert: \"\"\n  client_ca_file: \"\"\n  client_auth_type: \"\"\n")).tls.expect("tls");
        assert!(matches!(tls.cert, PemSource::File { .. }));
        assert_eq!(tls.client_auth, ClientAuth::None);
    }

    #[test]
    fn http_server_config() {
        let yaml = "http_server_config:\n  http2: false\n  headers:\n    Strict-Transport-Security: max-age=31536000\n    \
                    x-content-type-options: nosniff\n    X-Frame-Options: sameorigin\n    X-XSS-Protection: \"1; mode=block\"\n    \
                    Content-Security-Policy: \"\"\n";
        let http = parse(yaml).http;
        assert!(!http.http2);
        let headers: Vec<(&str, &str)> =
            http.headers.iter().map(|(n, v)| (n.as_str(), v.to_str().expect("ascii"))).collect();
        // Sorted by name as written (a BTreeMap); the blank Content-Security-Policy is unset.
        assert_eq!(
            headers,
            [
                ("strict-transport-security", "max-age=31536000"),
                ("x-frame-options", "sameorigin"),
                ("x-xss-protection", "1; mode=block"),
                ("x-content-type-options", "nosniff"),
            ]
        );
        assert!(parse("http_server_config:\n  http2: true\n").http.http2);
        assert!(parse("http_server_config: {}\n").http.http2);
    }

    #[test]
    fn basic_auth_users_with_every_bcrypt_prefix() {
        let (y, a, b) = (hash(bcrypt::Version::TwoY), hash(bcrypt::Version::TwoA), hash(bcrypt::Version::TwoB));
        assert!(y.starts_with("$2y$04$") && a.starts_with("$2a$") && b.starts_with("$2b$"));
        let yaml = format!("basic_auth_users:\n  prom: '{y}'\n  alice: '{a}'\n  bob: {b}\n  \"\": '{y}'\n");
        let users = parse(&yaml).users;
        assert_eq!(users.keys().map(String::as_str).collect::<Vec<_>>(), ["", "alice", "bob", "prom"]);
        assert_eq!(users["prom"].as_str(), y);
        assert_eq!(users["bob"].as_str(), b);
        assert!(!format!("{users:?}").contains(&y), "hashes are not shown by Debug");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        refused("listen: 0.0.0.0:1\n", &["listen"]);
        refused(&format!("{TLS}  cert_fle: x\n"), &["cert_fle", "tls_server_config"]);
        refused("http_server_config:\n  http3: true\n", &["http3"]);
        refused("basic_auth_users: [a, b]\n", &["basic_auth_users"]);
        refused("tls_server_config: [\n", &["line"]);
    }

    #[test]
    fn unsupported_fields_are_refused_with_a_reason() {
        let suites = refused(
            &format!("{TLS}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
            &["tls_server_config.cipher_suites", "rustls"],
        );
        assert!(matches!(suites, WebConfigError::Unsupported { .. }));
        refused(&format!("{TLS}  cipher_suites: []\n"), &["cipher_suites"]);
        refused(&format!("{TLS}  curve_preferences: [X25519]\n"), &["tls_server_config.curve_preferences"]);
        refused(
            &format!(
                "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca\n  client_allowed_sans: [a]\n"
            ),
            &["client_allowed_sans"],
        );
        refused("rate_limit:\n  interval: 1s\n  burst: 5\n", &["rate_limit"]);
    }

    #[test]
    fn tls_below_1_2_is_refused() {
        for (field, version) in [("min_version", "TLS10"), ("min_version", "TLS11"), ("max_version", "TLS11")] {
            let error = refused(&format!("{TLS}  {field}: {version}\n"), &[field, version, "1.2"]);
            assert!(matches!(error, WebConfigError::Unsupported { .. }));
        }
        for version in ["TLS14", "tls12", "1.2"] {
            refused(&format!("{TLS}  min_version: \"{version}\"\n"), &["min_version", version]);
        }
        refused(
            &format!("{TLS}  min_version: TLS13\n  max_version: TLS12\n"),
            &["min_version TLS13", "max_version TLS12"],
        );
        refused("tls_server_config: [a]\n", &["tls_server_config", "a map of TLS settings"]);
    }

    #[test]
    fn client_auth_must_be_verified_and_consistent() {
        for policy in ["RequestClientCert", "RequireAnyClientCert", "RequireClientCert", "VerifyClientCertIfGiven"] {
            refused(
                &format!("{TLS}  client_auth_type: {policy}\n  client_ca_file: ca\n"),
                &["client_auth_type", policy],
            );
        }
        refused(&format!("{TLS}  client_auth_type: Sometimes\n"), &["client_auth_type", "Sometimes"]);
        refused(&format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n"), &["client_ca_file"]);
        refused(&format!("{TLS}  client_ca_file: ca.crt\n"), &["client_ca_file", "client_auth_type"]);
        refused(
            &format!("{TLS}  client_ca: PEM\n  client_auth_type: NoClientCert\n"),
            &["client_ca", "client_auth_type"],
        );
    }

    #[test]
    fn certificate_and_key_are_required_once() {
        refused("tls_server_config: {}\n", &["cert_file"]);
        refused("tls_server_config:\n  min_version: TLS13\n", &["cert_file"]);
        refused("tls_server_config:\n  cert_file: a\n", &["key_file"]);
        refused(&format!("{TLS}  cert: PEM\n"), &["cert_file", "cert", "not both"]);
        refused(&format!("{TLS}  key: PEM\n"), &["key_file", "not both"]);
        refused(
            &format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: a\n  client_ca: b\n"),
            &["client_ca_file", "not both"],
        );
    }

    #[test]
    fn headers_are_limited_to_the_exporter_toolkit_set_and_values() {
        refused(
            "http_server_config:\n  headers:\n    Server: x\n",
            &["http_server_config.headers.Server", "cannot be set"],
        );
        refused("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", &["X-Frame-Options", "allow"]);
        refused("http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n", &["X-Content-Type-Options"]);
        refused(
            "http_server_config:\n  headers:\n    Content-Security-Policy: \"a\\nb\"\n",
            &["Content-Security-Policy", "characters"],
        );
        refused("http_server_config:\n  http2: maybe\n", &["http2"]);
        // Go's yaml.v2 reads `yes` as true; here it is refused rather than misread.
        refused("http_server_config:\n  http2: yes\n", &["http2", "expected a boolean"]);
    }

    #[test]
    fn users_need_a_bcrypt_hash_a_colon_free_name_and_one_entry_each() {
        for not_bcrypt in [
            "plaintext",
            "$6$rounds=5000$salt$hash",
            "$apr1$abcdefgh$0123456789abcdefghij",
            // bcrypt's shape and length, but not its base64 alphabet.
            "$2y$10$!bcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz0123",
        ] {
            let error =
                refused(&format!("basic_auth_users:\n  prom: '{not_bcrypt}'\n"), &["basic_auth_users.prom", "bcrypt"]);
            assert!(matches!(error, WebConfigError::NotBcrypt { .. }), "{not_bcrypt}");
        }
        for cost in ["03", "32"] {
            let out_of_range = format!("$2y${cost}${}", &hash(bcrypt::Version::TwoY)[7..]);
            refused(&format!("basic_auth_users:\n  prom: '{out_of_range}'\n"), &["prom", "bcrypt", "Cost"]);
        }
        let good = hash(bcrypt::Version::TwoY);
        refused(&format!("basic_auth_users:\n  'a:b': '{good}'\n"), &["a:b", "':'"]);
        refused(&format!("basic_auth_users:\n  prom: '{good}'\n  prom: '{good}'\n"), &["prom", "twice"]);
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let example = include_str!("../../../deploy/web-config.example.yml");
        let config = WebConfig::parse(example, Path::new("/etc/netns-monitor/web-config.yml"))
            .unwrap_or_else(|e| panic!("deploy/web-config.example.yml: {}", chain(&e)));
        let tls = config.tls.expect("the example enables TLS");
        assert_eq!(
            tls.cert,
            PemSource::File { field: "cert_file", path: "/etc/netns-monitor/netns-monitor.crt".into() }
        );
        assert_eq!(tls.client_auth, ClientAuth::None);
        assert_eq!(config.http.headers.len(), 3);
        assert_eq!(config.users.keys().collect::<Vec<_>>(), ["prometheus"]);
    }

    #[test]
    fn load_reads_the_file_and_names_it_when_it_cannot() {
        let dir = std::env::temp_dir().join(format!("nsm-webconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("web.yml");
        std::fs::write(&path, TLS).expect("write");
        let loaded = WebConfig::load(&path);
        let missing = WebConfig::load(&dir.join("absent.yml"));
        std::fs::remove_dir_all(&dir).expect("cleanup");

        let tls = loaded.expect("load").tls.expect("tls");
        assert_eq!(tls.cert, PemSource::File { field: "cert_file", path: dir.join("server.crt") });
        let error = missing.expect_err("a missing file is an error");
        assert!(matches!(error, WebConfigError::Read { .. }));
        assert!(chain(&error).contains("absent.yml"), "{}", chain(&error));
    }
}
