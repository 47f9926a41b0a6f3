//! TLS for the HTTP listeners, and the rule that bearer tokens never cross a network in clear text:
//! a listener on an address other than loopback needs a certificate and key, or an explicit
//! `allow_plain_http = true` from the operator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// A listener's TLS settings, as configured (`[api]` or `[admin]`).
pub struct TlsFiles<'a> {
    /// `api` or `admin`: names the configuration keys in errors.
    pub section: &'static str,
    pub listen: SocketAddr,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub allow_plain_http: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "refusing to serve plain HTTP on {listen} ({section}.listen is not a loopback address): bearer tokens would cross the network in clear text. \
         Set {section}.tls_cert and {section}.tls_key (PEM files), or listen on 127.0.0.1, or set {section}.allow_plain_http = true \
         if a TLS proxy in front of the node encrypts the traffic"
    )]
    PlainHttp { section: &'static str, listen: SocketAddr },
    #[error("{section}.tls_cert and {section}.tls_key go together: set both or neither")]
    Half { section: &'static str },
    #[error("cannot read {what} {path}: {reason}")]
    File { what: &'static str, path: PathBuf, reason: String },
    #[error("{section}.tls_cert and {section}.tls_key do not make a usable TLS configuration: {reason}")]
    Config { section: &'static str, reason: String },
}

fn file_error(what: &'static str, path: &Path) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError {
    let path = path.to_owned();
    move |e| TlsError::File { what, path: path.clone(), reason: e.to_string() }
}

/// The acceptor for a listener, `None` for plain HTTP where that is allowed.
pub fn acceptor(files: &TlsFiles<'_>) -> Result<Option<TlsAcceptor>, TlsError> {
    let section = files.section;
    let (cert, key) = match (files.cert, files.key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) if files.listen.ip().is_loopback() || files.allow_plain_http => return Ok(None),
        (None, None) => return Err(TlsError::PlainHttp { section, listen: files.listen }),
        _ => return Err(TlsError::Half { section }),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(file_error("the certificate file", cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(file_error("the certificate file", cert))?;
    if chain.is_empty() {
        return Err(TlsError::File { what: "the certificate file", path: cert.to_owned(), reason: "no PEM certificate in it".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(file_error("the key file", key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| TlsError::Config { section, reason: e.to_string() })?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}
