//! The `reeltime` server binary: settings in, server out.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's malloc: glibc kept the freed memory of
/// transient peaks in its per-thread arenas, so an hour of steady churn
/// grew the node's RSS by a third (docs/reliability.md "Soak"); jemalloc
/// hands unused pages back to the kernel after a few seconds, and with no
/// header per allocation it holds an idle socket's many small pieces in
/// less memory (docs/benchmarks.md "hold").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let mut settings = reeltime::config::parse_settings();
    if let Some(reeltime::config::Command::Keys { action }) = settings.command.take() {
        return run_keys(&settings, action);
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match settings.log_format {
        reeltime::config::LogFormat::Text => {
            logs.with_ansi(std::io::stderr().is_terminal()).init();
        }
        reeltime::config::LogFormat::Json => {
            logs.json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .init();
        }
    }
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

/// `reeltime keys ...`: the server's database settings, no server.
fn run_keys(
    settings: &reeltime::config::Settings,
    action: reeltime::config::KeysCommand,
) -> anyhow::Result<()> {
    let database_url = match reeltime::config::database_url(settings) {
        Ok(url) => url,
        Err(err) => {
            eprintln!("reeltime: {err:#}");
            std::process::exit(2);
        }
    };
    if database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&settings.data_dir)?;
    }
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(reeltime::keys_command::run(&database_url, action));
    if let Err(err) = outcome {
        eprintln!("reeltime keys: {err:#}");
        std::process::exit(1);
    }
    Ok(())
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
