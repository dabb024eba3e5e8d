//! `evident-agent service`: the agent as a Windows service, started by the service control
//! manager (SCM) as `evident-agent.exe service --config C:\ProgramData\Evident\agent.toml`
//! (see `deploy/windows/evident-agent.wxs`). It runs the same `run::run` as `evident-agent run`,
//! with the SCM's stop and shutdown requests as its shutdown signal.
//!
//! A service has no console: logs go to `agent.log` in the state directory.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

use crate::config::{FileConfig, RunConfig};

/// The service's name in the SCM; the MSI installs it under this name.
pub const SERVICE_NAME: &str = "evident-agent";
const SERVICE_TYPE: ServiceType = ServiceType::OWN_PROCESS;

/// The SCM calls `service_main` without our arguments: the validated config waits here.
static CONFIG: OnceLock<RunConfig> = OnceLock::new();

#[derive(Debug, clap::Args)]
pub struct ServiceCli {
    /// The agent's TOML config file (state_dir, [enrollment], [backup], ...).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Validates the config, then hands the process to the SCM until the service stops.
pub fn main(args: ServiceCli) -> anyhow::Result<()> {
    let config = FileConfig::load(&args.config)?.validate(None)?;
    crate::state::StateDir::new(&config.state_dir).create()?;
    let log_path = config.state_dir.join("agent.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(log))
        .init();
    let _ = CONFIG.set(config);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).context(
        "connect to the service control manager (run `evident-agent run` from a console instead)",
    )
}

define_windows_service!(ffi_service_main, service_main);

fn service_main(_arguments: Vec<OsString>) {
    if let Err(error) = run_service() {
        tracing::error!(error = %format!("{error:#}"), "the service stopped with an error");
    }
}

fn status(state: ServiceState, exit_code: u32, wait_hint: Duration) -> ServiceStatus {
    ServiceStatus {
        service_type: SERVICE_TYPE,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: ServiceExitCode::Win32(exit_code),
        checkpoint: 0,
        wait_hint,
        process_id: None,
    }
}

fn run_service() -> anyhow::Result<()> {
    let config = CONFIG
        .get()
        .cloned()
        .context("the service started without a config")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            let _ = stop_tx.send(true);
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = service_control_handler::register(SERVICE_NAME, handler)
        .context("register the service control handler")?;
    handle.set_service_status(status(ServiceState::Running, 0, Duration::ZERO))?;

    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")
        .and_then(|runtime| {
            runtime.block_on(crate::run::run(config, false, async move {
                let mut stop_rx = stop_rx;
                let _ = stop_rx.wait_for(|stop| *stop).await;
            }))
        });

    // ERROR_SERVICE_SPECIFIC_ERROR would need a second code; 1 (ERROR_INVALID_FUNCTION) tells
    // the SCM the service failed, which triggers the recovery actions the MSI configures.
    let exit_code = if result.is_ok() { 0 } else { 1 };
    handle.set_service_status(status(ServiceState::Stopped, exit_code, Duration::ZERO))?;
    result
}
