//! The rustls server configuration for a [`TlsConfig`]: reads the certificate, key and client CA (so a bad file
//! fails start-up, not the first scrape), limits the protocol versions, and sets client verification.
//!
//! The crypto provider is always rustls' `ring` provider, passed explicitly rather than installed as the
//! process default, so nothing here depends on which providers other crates in the binary enabled.

use std::sync::Arc;

use rustls::{
    RootCertStore, ServerConfig, SupportedProtocolVersion,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{VerifierBuilderError, WebPkiClientVerifier},
};

use crate::metrics::webconfig::{ClientAuth, PemSource, TlsConfig, TlsVersion};

/// Why the TLS set-up failed; each variant names the configuration field and file it read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read a PEM certificate from {source_name}")]
    Certificate {
        source_name: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{source_name} holds no PEM certificate")]
    NoCertificate { source_name: String },
    #[error("cannot read a PEM private key from {source_name}")]
    Key {
        source_name: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("client CA certificate #{index} in {source_name} cannot be used")]
    ClientCa {
        source_name: String,
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot verify client certificates against {source_name}")]
    ClientVerifier {
        source_name: String,
        #[source]
        source: VerifierBuilderError,
    },
    #[error("the certificate ({cert}) and private key ({key}) cannot be used together")]
    CertifiedKey {
        cert: String,
        key: String,
        #[source]
        source: rustls::Error,
    },
    #[error("the TLS protocol versions cannot be set")]
    Versions(#[source] rustls::Error),
}

/// ALPN: the endpoint speaks HTTP/1.1 only; a client offering only h2 gets a `no_application_protocol` alert
/// instead of a connection that fails later.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Builds the rustls configuration, reading every file `config` names.
pub fn server_config(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&config.cert)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { source_name: config.cert.to_string() });
    }
    let key = private_key(&config.key)?;

    let versions = protocol_versions(config.min_version, config.max_version);
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(TlsError::Versions)?;
    let builder = match &config.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::RequireAndVerify { ca } => builder.with_client_cert_verifier(client_verifier(ca, &provider)?),
    };
    let mut server = builder.with_single_cert(certs, key).map_err(|source| TlsError::CertifiedKey {
        cert: config.cert.to_string(),
        key: config.key.to_string(),
        source,
    })?;
    server.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    server.ignore_client_order = config.prefer_server_cipher_suites;
    Ok(Arc::new(server))
}

/// The versions from `min` to `max`; [`TlsVersion`] has nothing below TLS 1.2, so neither has this.
fn protocol_versions(min: TlsVersion, max: TlsVersion) -> Vec<&'static SupportedProtocolVersion> {
    [(TlsVersion::Tls12, &rustls::version::TLS12), (TlsVersion::Tls13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, version)| version)
        .collect()
}

fn certificates(source: &PemSource) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |source_err| TlsError::Certificate { source_name: source.to_string(), source: source_err };
    match source {
        // Read with a size bound first: the PEM reader would otherwise read a device (/dev/zero) forever.
        PemSource::File { path, .. } => {
            let data = crate::textfile::read(path).map_err(|io| err(rustls::pki_types::pem::Error::Io(io)))?;
            CertificateDer::pem_slice_iter(&data).collect::<Result<Vec<_>, _>>()
        }
        PemSource::Inline { pem, .. } => CertificateDer::pem_slice_iter(pem.as_bytes()).collect(),
    }
    .map_err(err)
}

fn private_key(source: &PemSource) -> Result<PrivateKeyDer<'static>, TlsError> {
    match source {
        PemSource::File { path, .. } => crate::textfile::read(path)
            .map_err(rustls::pki_types::pem::Error::Io)
            .and_then(|data| PrivateKeyDer::from_pem_slice(&data)),
        PemSource::Inline { pem, .. } => PrivateKeyDer::from_pem_slice(pem.as_bytes()),
    }
    .map_err(|source_err| TlsError::Key { source_name: source.to_string(), source: source_err })
}

fn client_verifier(
    ca: &PemSource,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in certificates(ca)?.into_iter().enumerate() {
        roots.add(cert).map_err(|source| TlsError::ClientCa {
            source_name: ca.to_string(),
            index: index + 1,
            source,
        })?;
    }
    // An empty store makes the builder fail with NoRootAnchors, which names the problem.
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|source| TlsError::ClientVerifier { source_name: ca.to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_min_and_max() {
        let names = |min, max| -> Vec<String> {
            protocol_versions(min, max).iter().map(|v| format!("{:?}", v.version)).collect()
        };
        assert_eq!(names(TlsVersion::Tls12, TlsVersion::Tls13), ["TLSv1_2", "TLSv1_3"]);
        assert_eq!(names(TlsVersion::Tls13, TlsVersion::Tls13), ["TLSv1_3"]);
        assert_eq!(names(TlsVersion::Tls12, TlsVersion::Tls12), ["TLSv1_2"]);
    }
}
