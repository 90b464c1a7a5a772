//! `hookyard-tui`: parses flags, finds the token, runs the UI.

use clap::Parser;
use hookyard_tui::config::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let connection = Args::parse().connection()?;
    hookyard_tui::run::run(connection).await
}
