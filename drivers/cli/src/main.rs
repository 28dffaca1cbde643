//! The `tether` command (DESIGN section 6 is its contract).
//!
//! - `tether`: the dev server on a free loopback port with demo data, and an interactive
//!   terminal chat on it;
//! - `tether serve`: the dev server alone;
//! - `tether listen`: connect, subscribe, print what arrives (`--json`: one line per event,
//!   exactly what the Tauri plugin emits);
//! - `tether send` and `tether history`: one REST call each.
//!
//! Exit codes: 0 success, 1 failure (network, server, connection given up, a certificate not
//! trusted), 2 rejected credentials (the server's, or the proxy's), 64 bad usage. Errors are one line on stderr; logs go to stderr too.

// A command-line program: writing to stdout and stderr is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod args;
mod interactive;
mod listen;
mod rest;

use std::process::ExitCode;

use clap::Parser;
use tether_core::Secret;
use tether_tokio::{Api, ApiError};

use crate::args::{Cli, Command, Login};

/// A failure the command reports: one line, one exit code.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// Exit 1.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    /// Exit 2: the server refused the credentials.
    pub fn auth(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// Exit 64: plain http to a host that is not loopback, without `--insecure` (bad usage:
    /// the command line must change). Nothing was sent.
    pub fn insecure(host: &str) -> Self {
        Self {
            code: 64,
            message: format!(
                "refusing to send credentials unencrypted to `{host}`: use an https:// --server, or pass --insecure"
            ),
        }
    }

    /// From a REST error: 401 is a credentials failure, a refused plain-text call bad usage,
    /// the rest general.
    pub fn api(context: &str, e: &ApiError) -> Self {
        if let ApiError::Insecure(host) = e {
            return Self::insecure(host);
        }
        if let ApiError::Unreachable {
            error: tether_core::TransportError::ProxyAuth,
            ..
        } = e
        {
            return Self::auth(format!("{context}: proxy credentials rejected ({e})"));
        }
        if e.is_unauthorized() {
            Self::auth(format!("{context}: credentials rejected ({e})"))
        } else {
            Self::general(format!("{context}: {e}"))
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    ExitCode::from(64)
                }
                _ => {
                    eprintln!("tether: {}", usage_error_line(&e));
                    ExitCode::from(64)
                }
            };
        }
    };
    init_logs(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("tether: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// A usage error as one line (clap renders it on several, with the usage and a hint).
fn usage_error_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    format!("{} (see --help)", parts.join(" "))
}

fn init_logs(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,tether=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in a file or a pipe someone parses.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        None => interactive::run(cli.demo_pace.map(std::time::Duration::from_secs_f64)).await,
        Some(Command::Serve(a)) => serve(a).await,
        Some(Command::Listen(a)) => listen::run(a, cli.verbose > 0).await,
        Some(Command::Send(a)) => rest::send(a).await,
        Some(Command::History(a)) => rest::history(a).await,
    }
}

async fn serve(a: args::Serve) -> Result<(), Failure> {
    let mut config = tether_devserver::ServerConfig::default();
    config.demo = !a.no_demo;
    config.query_auth = a.allow_query_auth;
    config.v2.json = !a.no_v2_json;
    config.v2.msgpack = !a.no_v2_msgpack;
    config.v2.batch = !a.no_v2_batch;
    config.v2.deflate = !a.no_v2_deflate;
    config.v2.deflate_window_bits = a.deflate_window_bits;
    config.message_clock_offset = a.message_clock_offset;
    let server = tether_devserver::DevServer::start(a.addr, config)
        .await
        .map_err(|e| Failure::general(format!("cannot listen on {}: {e}", a.addr)))?;
    println!("listening on {}", server.url());
    if a.message_clock_offset != tether_devserver::ClockOffset::ZERO {
        println!(
            "message clock (created_at): {} from the Date clock",
            a.message_clock_offset
        );
    }
    if !a.no_demo {
        println!("demo users: alice, bob, carol (password: password123)");
    }
    wait_for_ctrl_c().await;
    server.shutdown().await;
    Ok(())
}

/// Resolves when the process is asked to stop (Ctrl-C / SIGINT, or SIGTERM on Unix).
pub async fn wait_for_ctrl_c() {
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

/// Credentials from `--token` or `--username/--password` (a login over REST).
pub async fn credentials(api: &Api, login: &Login) -> Result<tether_core::Credentials, Failure> {
    match (&login.token, &login.username, &login.password) {
        (Some(token), _, _) => Ok(tether_tokio::with_jwt_expiry(
            tether_core::Credentials::new(token.as_str()),
        )),
        (None, Some(user), Some(password)) => api
            .login(user, &Secret::new(password.as_str()))
            .await
            .map(tether_tokio::with_jwt_expiry)
            .map_err(|e| Failure::api("login failed", &e)),
        _ => Err(Failure {
            code: 64,
            message: "give --token, or --username and --password".into(),
        }),
    }
}

/// The REST client for `--server`, with a clear error for a bad URL. Plain http to a host
/// that is not loopback is refused here, before any request, unless `--insecure` is given:
/// every command sends a password or a token.
pub fn api_for(login: &Login) -> Result<Api, Failure> {
    let server = &login.server;
    let network = login
        .network()
        .map_err(|message| Failure { code: 64, message })?;
    let api = Api::with_options(server, tether_tokio::api::TIMEOUT, &network)
        .map_err(|e| Failure {
            code: 64,
            message: match e {
                // A proxy variable, a pin: not the server's fault.
                ApiError::Settings(_) => e.to_string(),
                _ => format!("bad --server `{server}`: {e}"),
            },
        })?
        .allow_insecure(login.insecure);
    if api.is_refused_as_insecure() {
        return Err(Failure::insecure(api.base().host_str().unwrap_or_default()));
    }
    Ok(api)
}
