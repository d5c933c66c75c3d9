//! `reeltime-bench`: a load generator that speaks reeltime's public protocol
//! only, so the same client measures reeltime and the FastAPI baseline.
//!
//! The command line process is a coordinator: it starts `--procs` worker
//! processes (this same binary, `worker` subcommand), hands each its share
//! of users, sockets and source addresses, keeps them in step with
//! barriers, reads the server's memory and CPU from /proc, and merges their
//! histograms into one report.

mod cli;
mod conn;
mod coord;
mod engineio;
mod hist;
mod issuer;
mod job;
mod procfs;
mod report;
mod storm;
mod tokens;
mod worker;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Worker => worker::main(),
        cli::Command::Summarize(args) => report::summarize(args),
        cli::Command::Issuer(args) => runtime().and_then(|rt| rt.block_on(issuer::run(args))),
        command => runtime().and_then(|rt| rt.block_on(coord::run(command))),
    };
    if let Err(err) = result {
        eprintln!("reeltime-bench: {err:#}");
        std::process::exit(1);
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
