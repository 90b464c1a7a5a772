//! The admin token: generated on first start into the data directory (mode
//! 0600), where the TUI finds it, and checked on every Admin call by digest in
//! constant time. A token file that group or others can read (or write) is
//! refused at start: anyone on the machine could have taken the admin API.

use std::{io::Write, path::Path};

use base64::Engine;
use subtle::ConstantTimeEq;
use tonic::{service::Interceptor, Request, Status};

use crate::intake::auth::{bearer_token, digest};

/// Reads the token at `path`, or creates it (32 random bytes) if missing.
/// Returns the token and whether it was created now.
pub fn load_or_create(path: &Path) -> std::io::Result<(String, bool)> {
    refuse_if_shared(path)?;
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
fn refuse_if_shared(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if mode & 0o077 == 0 {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{} has mode {mode:o}: group or others can use it to reach the Admin API. \
             Make it private with `chmod 600 {}` (and, if others may have read it, delete it \
             so a new token is made) and start again",
            path.display(),
            path.display()
        ),
    ))
}

#[cfg(not(unix))]
fn refuse_if_shared(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a file created now, and through the umask.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
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

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_token_is_made_private_and_a_shared_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let (token, created) = load_or_create(&path).unwrap();
        assert!(created && token.starts_with("hya_"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path).unwrap(), (token, false));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_or_create(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
    }
}
