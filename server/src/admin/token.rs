//! The admin token: generated on first start into the data directory (mode
//! 0600), where the TUI finds it, and checked on every Admin call by digest in
//! constant time.

use std::{io::Write, path::Path};

use base64::Engine;
use subtle::ConstantTimeEq;
use tonic::{service::Interceptor, Request, Status};

use crate::intake::auth::{bearer_token, digest};

/// Reads the token at `path`, or creates it (32 random bytes) if missing.
/// Returns the token and whether it was created now.
pub fn load_or_create(path: &Path) -> std::io::Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => return Ok((token.trim().to_string(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let bytes: [u8; 32] = rand::random();
    let token = format!(
        "hya_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    write_private(path, &token)?;
    Ok((token, true))
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Refuses Admin calls without the token.
#[derive(Clone)]
pub struct AdminAuth {
    digest: [u8; 32],
}

impl AdminAuth {
    pub fn new(token: &str) -> AdminAuth {
        AdminAuth {
            digest: digest(token),
        }
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let token = bearer_token(header).map_err(|e| {
            Status::unauthenticated(e.to_string().replace("api key", "admin token"))
        })?;
        if bool::from(digest(token).ct_eq(&self.digest)) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("the admin token is not valid"))
        }
    }
}
