//! The `sotto` binary: parse arguments, set up logging, run. Errors end the
//! process with one line on stderr and a non-zero exit, never a panic trace.

use sotto::cli::{Command, LogFormat, ParseError, normalize};
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    let (cli, matches) = match sotto::cli::parse(normalize(std::env::args_os())) {
        Ok(parsed) => parsed,
        Err(ParseError::Clap(e)) => return clap_exit(e),
        Err(ParseError::File(e)) => return fail(&e),
    };
    if let Command::Serve(args) = &cli.command
        && args.print_config
    {
        print!("{}", sotto::cli::effective_config(&matches));
        return ExitCode::SUCCESS;
    }
    let format = match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => LogFormat::Text,
    };
    init_logging(format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Bench(args) => sotto_bench::run(args).await,
            Command::Cert(args) => cert(&args),
            Command::Psk(args) => sotto::psk_cli::run(args).await,
            Command::DtlsClient(args) => sotto_bench::dtls_client::run(args).await,
            Command::DtlsBench(args) => sotto_bench::dtls::run(args).await,
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
    let server = sotto_server::Server::start(config).await?;
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}

fn cert(args: &sotto::cli::CertArgs) -> anyhow::Result<()> {
    let (cert, key) = args.write().map_err(anyhow::Error::msg)?;
    println!("wrote {} and {}", cert.display(), key.display());
    println!(
        "run: sotto serve --tls-cert {} --tls-key {}",
        cert.display(),
        key.display()
    );
    Ok(())
}

fn init_logging(format: LogFormat) {
    // async-nats logs each connection event at info; the broker logs its
    // own changes of state once, in sotto's words.
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOTTO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init()
        }
    }
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
