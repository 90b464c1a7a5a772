//! The data directory and what it holds are the daemon user's alone: the
//! directory 0700, the database, its WAL and shared memory and the admin
//! token 0600, whatever the umask; a token file others can read stops the
//! start with the command that fixes it.

use std::{os::unix::fs::PermissionsExt, path::Path};

use crate::{
    api::{http_event, publish_http},
    harness::{refused_start, Daemon, TestConfig},
};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn assert_private_files(data: &Path) {
    assert_eq!(mode(data), 0o700, "{}", data.display());
    for file in [
        "hookyard.db",
        "hookyard.db-wal",
        "hookyard.db-shm",
        "admin.token",
    ] {
        let path = data.join(file);
        assert_eq!(
            mode(&path),
            0o600,
            "{} has mode {:o}",
            path.display(),
            mode(&path)
        );
    }
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_private_even_with_umask_0() {
    let mut daemon = Daemon::start(TestConfig::new().umask(0)).await;
    publish_http(&daemon, &http_event("lead.created")).await;
    let data = daemon.data_path();
    assert_private_files(&data);

    // Files an older version left open are tightened on the next start.
    daemon.stop().await;
    for file in ["hookyard.db", "hookyard.db-wal", "hookyard.db-shm"] {
        let path = data.join(file);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .expect("chmod 644");
        }
    }
    daemon.restart().await;
    publish_http(&daemon, &http_event("lead.created")).await;
    assert_private_files(&data);
}

#[tokio::test]
async fn an_admin_token_others_can_read_stops_the_start_with_the_fix() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("create the data dir");
    let token = data.join("admin.token");
    std::fs::write(&token, "hya_a_token_someone_else_may_have_read\n").expect("write a token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod 644");

    let (status, stderr) = refused_start(TestConfig::new().data_dir(&data)).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("chmod 600 {}", token.display())),
        "{stderr}"
    );
    assert_eq!(mode(&token), 0o644, "the daemon does not fix it silently");

    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    let daemon = Daemon::start(TestConfig::new().data_dir(&data)).await;
    assert_eq!(
        daemon.admin_token(),
        "hya_a_token_someone_else_may_have_read"
    );
}
