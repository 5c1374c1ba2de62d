use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use logsub::cli::{Cli, Command, ControllerArgs, LogFormat, WorkerArgs};
use logsub::contract::config::WorkerConfig;
use tracing_subscriber::EnvFilter;

// Every log event allocates its document; mimalloc keeps that cheap across the
// runtime's threads (measured with `cargo bench --bench load`). Built without
// transparent huge pages: with them its arenas were resident in 2 MiB steps, a
// third more memory under a stalled sink for no measurable speed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    logsub::install_crypto_provider();
    let cli = Cli::parse();
    init_tracing(&cli);
    match cli.command {
        Command::Crd { out_dir: None } => print(&logsub::api::crd_yaml()),
        Command::Crd { out_dir: Some(dir) } => write_crds(&dir),
        Command::Rbac => print(&logsub::controller::resources::rbac::cluster_role_yaml()),
        Command::Controller(args) => controller(*args),
        Command::Worker(args) => worker(args),
    }
}

fn print(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot write to standard output");
            ExitCode::FAILURE
        }
    }
}

fn write_crds(dir: &std::path::Path) -> ExitCode {
    for (file, yaml) in logsub::api::crd_files() {
        if let Err(e) = std::fs::write(dir.join(file), yaml) {
            tracing::error!(error = %e, file, "cannot write the CRD");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn controller(args: ControllerArgs) -> ExitCode {
    use logsub::controller::{Settings, run};
    let options = run::Options {
        settings: Settings {
            image: args.worker_image,
            worker_admin_addr: args.worker_admin_addr,
            region: args.region,
            aws_endpoint: args.aws_endpoint_url,
            resync: args.resync_period,
            status_interval: args.status_interval,
            namespace: args.namespace,
            selector: args.selector,
            worker_role: args.worker_role,
            withdraw_grace: args.withdraw_grace,
            concurrency: args.concurrency,
            identity: None,
        },
        admin_addr: args.admin_addr,
        leader_lease: args
            .leader_election
            .then_some((args.leader_election_namespace, args.leader_election_id)),
        lease_duration: args.lease_duration,
        identity: identity(args.identity),
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run::run(options, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "controller stopped");
            ExitCode::FAILURE
        }
    }
}

/// The pod name, else `<hostname>-<pid>`.
fn identity(given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new()
        .inspect_err(|e| tracing::error!(error = %e, "cannot start the async runtime"))
        .ok()
}

fn worker(args: WorkerArgs) -> ExitCode {
    let config = match WorkerConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the worker");
            return ExitCode::from(2);
        }
    };
    let identity = identity(args.identity);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(logsub::worker::run::run(
        config,
        identity,
        args.admin_addr,
        shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot listen for signals; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
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
