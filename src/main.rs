//! The `sotto` binary: parse arguments, set up logging, run. Errors end the
//! process with one line on stderr and a non-zero exit, never a panic trace.

use clap::Parser;
use sotto::cli::{Cli, Command, normalize};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(normalize(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Bench(args) => sotto::bench::run(args).await,
            Command::Psk(args) => sotto::dtls::psk_cli::run(args).await,
            Command::DtlsClient(args) => sotto::dtls::client_cli::run(args).await,
            Command::DtlsBench(args) => sotto::dtls::bench::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

async fn serve(args: sotto::cli::ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config().map_err(anyhow::Error::msg)?;
    // Handlers go in before anything starts: a SIGTERM that arrives while
    // the server starts must stop it gracefully, not kill it outright.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let server = sotto::Server::start(config).await?;
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOTTO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// clap's own help and version go out as clap prints them; its errors are
/// cut to their first line, as every other start-up error is.
fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    eprintln!(
        "sotto: error: {} (see --help)",
        first.trim_start_matches("error: ")
    );
    ExitCode::from(2)
}

fn fail(message: &str) -> ExitCode {
    eprintln!("sotto: error: {message}");
    ExitCode::FAILURE
}
