use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use logsub::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    match cli.command {
        Command::Crd => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out
                .write_all(logsub::api::crd_yaml().as_bytes())
                .and_then(|()| out.flush())
            {
                tracing::error!(error = %e, "cannot write the CRD");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn init_tracing(cli: &Cli) {
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!("invalid --log filter {:?}: {e}; using info", cli.log);
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
