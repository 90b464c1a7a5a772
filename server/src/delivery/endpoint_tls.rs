//! An endpoint's own TLS: a client certificate (mTLS) and roots trusted for
//! it alone (`ca_file`). Both live in the HTTP client, so such an endpoint
//! gets a client of its own, built like the shared one (SSRF-guarded
//! resolver, no redirects, no retries, no proxy, same timeouts) by
//! [`super::Sender`], and kept here until the settings or the files change.
//! Endpoints without TLS settings use the shared pool.
//!
//! The files are read and checked when an endpoint is written (Admin API or
//! config), so a bad path or key is refused naming the field; the sender
//! reads them again when their modification time changes, so a renewed
//! certificate is picked up without an edit.

use std::{collections::HashMap, path::Path, sync::Mutex, time::SystemTime};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{crypto::ring, sign::CertifiedKey};

use crate::model::EndpointTls;

/// What the files hold, ready for a client builder.
pub struct Material {
    pub identity: Option<reqwest::Identity>,
    pub roots: Vec<reqwest::Certificate>,
}

/// A file that cannot be used, and the field that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: &'static str,
    pub message: String,
}

impl Problem {
    fn new(field: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            field,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tls.{}: {}", self.field, self.message)
    }
}

/// Reads and checks every file of `tls`: the certificate and key parse and
/// belong together, the CA file holds at least one certificate.
pub fn load(tls: &EndpointTls) -> Result<Material, Vec<Problem>> {
    let mut problems = Vec::new();
    let identity = match (&tls.client_cert_file, &tls.client_key_file) {
        (None, None) => None,
        (Some(_), None) => {
            problems.push(Problem::new(
                "client_key_file",
                "is required with client_cert_file",
            ));
            None
        }
        (None, Some(_)) => {
            problems.push(Problem::new(
                "client_cert_file",
                "is required with client_key_file",
            ));
            None
        }
        (Some(cert), Some(key)) => match identity(cert, key) {
            Ok(identity) => Some(identity),
            Err(problem) => {
                problems.push(problem);
                None
            }
        },
    };
    let roots = match &tls.ca_file {
        None => Vec::new(),
        Some(path) => match roots(path) {
            Ok(roots) => roots,
            Err(problem) => {
                problems.push(problem);
                Vec::new()
            }
        },
    };
    if problems.is_empty() {
        Ok(Material { identity, roots })
    } else {
        Err(problems)
    }
}

fn read(field: &'static str, path: &str) -> Result<Vec<u8>, Problem> {
    if path.is_empty() {
        return Err(Problem::new(field, "must be a path to a PEM file"));
    }
    std::fs::read(path).map_err(|e| Problem::new(field, format!("cannot read {path}: {e}")))
}

fn identity(cert_path: &str, key_path: &str) -> Result<reqwest::Identity, Problem> {
    let cert_pem = read("client_cert_file", cert_path)?;
    let key_pem = read("client_key_file", key_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| Problem::new("client_cert_file", format!("{cert_path} is not PEM")))?;
    if chain.is_empty() {
        return Err(Problem::new(
            "client_cert_file",
            format!("no certificate in {cert_path}"),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        Problem::new(
            "client_key_file",
            format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) in {key_path}"),
        )
    })?;
    CertifiedKey::from_der(chain, key, &ring::default_provider()).map_err(|e| {
        Problem::new(
            "client_key_file",
            format!("{key_path} does not fit the certificate in {cert_path}: {e}"),
        )
    })?;
    let mut pem = cert_pem;
    pem.push(b'\n');
    pem.extend_from_slice(&key_pem);
    reqwest::Identity::from_pem(&pem)
        .map_err(|e| Problem::new("client_key_file", format!("{key_path}: {e}")))
}

fn roots(path: &str) -> Result<Vec<reqwest::Certificate>, Problem> {
    let pem = read("ca_file", path)?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|_| Problem::new("ca_file", format!("{path} is not PEM")))?;
    if roots.is_empty() {
        return Err(Problem::new("ca_file", format!("no certificate in {path}")));
    }
    Ok(roots)
}

/// What a built client was built from: the settings and the files' times.
#[derive(Clone, PartialEq, Eq)]
struct Built {
    tls: EndpointTls,
    modified: [Option<SystemTime>; 3],
}

fn modified(path: Option<&String>) -> Option<SystemTime> {
    path.and_then(|p| std::fs::metadata(Path::new(p)).ok()?.modified().ok())
}

impl Built {
    fn of(tls: &EndpointTls) -> Built {
        Built {
            tls: tls.clone(),
            modified: [
                modified(tls.client_cert_file.as_ref()),
                modified(tls.client_key_file.as_ref()),
                modified(tls.ca_file.as_ref()),
            ],
        }
    }
}

/// The dedicated clients, by endpoint id.
#[derive(Default)]
pub struct Clients {
    built: Mutex<HashMap<String, (Built, reqwest::Client)>>,
}

impl Clients {
    /// `endpoint`'s client, built with `build` when there is none for these
    /// settings and files yet.
    pub fn get(
        &self,
        endpoint: &str,
        tls: &EndpointTls,
        build: impl FnOnce(Material) -> Result<reqwest::Client, String>,
    ) -> Result<reqwest::Client, String> {
        let wanted = Built::of(tls);
        if let Ok(built) = self.built.lock() {
            if let Some((from, client)) = built.get(endpoint) {
                if *from == wanted {
                    return Ok(client.clone());
                }
            }
        }
        let material = load(tls).map_err(|problems| {
            problems
                .iter()
                .map(Problem::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let client = build(material)?;
        if let Ok(mut built) = self.built.lock() {
            built.insert(endpoint.to_string(), (wanted, client.clone()));
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        let _ = std::fs::write(&path, text);
        path.display().to_string()
    }

    #[test]
    fn each_bad_file_is_named() {
        let dir = tempfile::tempdir().ok();
        let dir = dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"));
        let junk = write(dir, "junk.pem", "hello");
        let problems = load(&EndpointTls {
            client_cert_file: Some(junk.clone()),
            client_key_file: Some(dir.join("missing.key").display().to_string()),
            ca_file: Some(junk),
        })
        .err()
        .unwrap_or_default();
        let fields: Vec<_> = problems.iter().map(|p| p.field).collect();
        assert_eq!(fields, ["client_key_file", "ca_file"], "{problems:?}");
        assert!(problems[0].message.contains("cannot read"));
        let problems = load(&EndpointTls {
            client_cert_file: Some("x".into()),
            ..EndpointTls::default()
        })
        .err()
        .unwrap_or_default();
        assert_eq!(problems[0].field, "client_key_file");
        assert!(load(&EndpointTls::default()).is_ok());
    }
}
