use std::process::ExitCode;

use clap::Parser;
use evident_agent::cli::{Cli, Command};
use evident_agent::host::Host;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A service logs to a file, not stderr, and hands the process to the service manager.
    #[cfg(windows)]
    if let Command::Service(args) = cli.command {
        return match evident_agent::windows_service::main(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(2)
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Enroll(args) => {
                let args = args.into_args()?;
                let facts = evident_agent::checks::inventory::collect(&Host::live())
                    .await
                    .ok();
                let enrollment = evident_agent::enroll::enroll(
                    args,
                    evident_agent::convert::host_facts(facts.as_ref()),
                )
                .await?;
                println!("enrolled as {}", enrollment.agent_id);
                Ok(())
            }
            Command::Run(args) => {
                let once = args.once;
                let config = args.into_config()?;
                evident_agent::run::run(config, once, shutdown_signal()).await
            }
            Command::Check(args) => evident_agent::cli::check(args).await,
            #[cfg(windows)]
            Command::Service(_) => unreachable!("handled before the runtime starts"),
            Command::Renew(args) => {
                let state = evident_agent::state::StateDir::new(&args.state_dir);
                let credentials = state.credentials()?;
                let renewed = evident_agent::renew::renew(&state, &credentials).await?;
                let validity = evident_agent::renew::Validity::of(renewed.cert.as_ref())?;
                println!(
                    "renewed {}: new key, certificate valid until {}",
                    renewed.enrollment.agent_id,
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_millis(
                                u64::try_from(validity.not_after_ms).unwrap_or(0)
                            )
                    )
                );
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
