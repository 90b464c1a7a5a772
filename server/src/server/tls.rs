//! TLS on the listeners (`tls: {cert, key}`): rustls with the ring provider,
//! HTTP/2 and HTTP/1.1 offered by ALPN so gRPC and HTTP share the port as
//! they do in the clear. Files are read at start; a key or chain that does
//! not load stops the start with the file named.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio_rustls::{rustls, TlsAcceptor};

use crate::config::TlsConfig;

pub fn acceptor(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certs = certificates(&config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .with_context(|| format!("tls.key: no PEM private key in {}", config.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls: the protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls: the certificate and the key do not make a pair")?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Every certificate in a PEM file, leaf first.
pub fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("tls.cert: cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls.cert: {} is not PEM", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("tls.cert: no certificate in {}", path.display());
    }
    Ok(certs)
}
