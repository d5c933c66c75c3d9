//! The `reeltime` server binary: settings in, server out.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let settings = reeltime::config::parse_settings();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let config = match reeltime::config::Config::from_settings(settings) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("reeltime: {err:#}");
            std::process::exit(2);
        }
    };
    raise_open_file_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(reeltime::app::run(config))
}

/// Each socket is a file: use all the open files the hard limit allows.
fn raise_open_file_limit() {
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get()
        && soft < hard
        && rlimit::Resource::NOFILE.set(hard, hard).is_err()
    {
        tracing::warn!(soft, hard, "could not raise the open-file limit");
    }
}
