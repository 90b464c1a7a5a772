//! Where the daemon's Admin API is and the token it wants: flags first, then
//! `HOOKYARD_ADDR` / `HOOKYARD_TOKEN` (clap reads both), then the token file
//! the daemon writes into its data directory.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

pub const DEFAULT_ADDR: &str = "http://127.0.0.1:8081";

#[derive(Debug, Parser)]
#[command(name = "hookyard-tui", version, about = "Hookyard's admin terminal UI")]
pub struct Args {
    /// The daemon's Admin API (`admin_listen`).
    #[arg(long, env = "HOOKYARD_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// The admin token; read from `<data-dir>/admin.token` when not given.
    #[arg(long, env = "HOOKYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The daemon's data directory, where it wrote `admin.token`.
    #[arg(long, env = "HOOKYARD_DATA_DIR", default_value = "./hookyard-data")]
    pub data_dir: PathBuf,
    /// A PEM certificate to trust for an `https://` address (a daemon with
    /// its own `tls` certificate); the system's roots are trusted anyway.
    #[arg(long, env = "HOOKYARD_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub addr: String,
    pub token: String,
    pub ca_file: Option<PathBuf>,
}

impl Args {
    pub fn connection(&self) -> anyhow::Result<Connection> {
        let addr = if self.addr.contains("://") {
            self.addr.clone()
        } else {
            format!("http://{}", self.addr)
        };
        let token = match &self.token {
            Some(token) => token.trim().to_string(),
            None => {
                let path = self.data_dir.join("admin.token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no admin token: pass --token, set HOOKYARD_TOKEN, or point \
                             --data-dir at the daemon's data directory ({} is unreadable)",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Connection {
            addr,
            token,
            ca_file: self.ca_file.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_file_when_no_token_is_given() {
        let dir = std::env::temp_dir().join(format!("hookyard-tui-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("admin.token"), "tok123\n").unwrap();
        let args = Args::parse_from([
            "hookyard-tui",
            "--addr",
            "127.0.0.1:9",
            "--data-dir",
            dir.to_str().unwrap(),
        ]);
        let conn = args.connection().unwrap();
        assert_eq!(conn.token, "tok123");
        assert_eq!(conn.addr, "http://127.0.0.1:9");

        let args = Args::parse_from(["hookyard-tui", "--token", "flag", "--data-dir", "/nope"]);
        assert_eq!(args.connection().unwrap().token, "flag");

        let args = Args::parse_from(["hookyard-tui", "--data-dir", "/nope/nothing"]);
        let error = args.connection().unwrap_err().to_string();
        assert!(error.contains("--token"), "{error}");
        std::fs::remove_dir_all(dir).ok();
    }
}
