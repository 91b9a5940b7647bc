//! The agent's Prometheus endpoint: an HTTP(S) server for `/metrics` configured by an exporter-toolkit web
//! configuration file.
//!
//! - [`webconfig`]: parse and validate the `--web-config.file` YAML (TLS, client certificates, basic auth,
//!   headers); anything unsupported is refused, naming the field and the file.
//! - [`tls`]: turn its TLS section into a rustls server configuration (ring provider, TLS 1.2 and 1.3 only).
//! - [`auth`]: basic auth against bcrypt hashes, with a bounded cache of successful verifications.
//! - [`http`]: the server itself (routes, limits against hostile clients, graceful shutdown).
//! - [`encoding`]: gzip for scrapers that accept it.

pub mod auth;
pub mod encoding;
pub mod http;
pub mod tls;
pub mod webconfig;

pub use http::{HttpError, MetricsServer, Render, ServerOptions};
pub use webconfig::{WebConfig, WebConfigError};
