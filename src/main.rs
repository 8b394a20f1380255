//! The `chatd` command: run a node (default), or mint a token with the configured secret.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use chatd::{
    auth::TokenAuthority, config::Settings, domain::UserId, startup::Application, telemetry,
};
use clap::{Parser, Subcommand};

/// mimalloc: glibc's allocator took about a tenth of the node's CPU under load (its free
/// lists shared by the tokio workers and the SQLite threads). Built without transparent huge
/// pages (`no_thp`), which grew an idle connection's memory by half. docs/benchmarks.md has
/// the comparison.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "chatd",
    version,
    about = "A horizontally scalable WebSocket chat server: ordered, persisted, never lies.",
    long_about = "A horizontally scalable WebSocket chat server.\n\n\
        With no subcommand, runs a node. Settings come from config/default.toml, then \
        config/<CHATD_ENV>.toml, then CHATD__SECTION__KEY environment variables \
        (e.g. CHATD__SERVER__PORT=9000)."
)]
struct Cli {
    /// Directory holding default.toml and <environment>.toml.
    #[arg(
        long,
        env = "CHATD_CONFIG_DIR",
        default_value = "config",
        global = true
    )]
    config_dir: PathBuf,
    /// Which config/<environment>.toml to layer on the defaults ("production" enforces a real secret).
    #[arg(
        long = "env",
        env = "CHATD_ENV",
        default_value = "development",
        global = true
    )]
    environment: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a chat node (the default).
    Serve,
    /// Print a token for USER signed with the configured secret (auth.jwt_secret).
    Token {
        /// The user id (the token's `sub`).
        user: String,
        /// Lifetime, e.g. 90s, 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Show where message SEQ of ROOM went (stored, published, delivered on each node), from
    /// the nodes' JSON logs (log.format = "json"): FILES, or standard input.
    Trace {
        room: String,
        seq: u64,
        files: Vec<PathBuf>,
    },
    /// Print a new VAPID key pair for Web Push: set the private key as
    /// CHATD__PUSH__VAPID_PRIVATE_KEY (the public key is what browsers subscribe with; chatd
    /// derives it and serves it at GET /v1/push).
    VapidKeys,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::VapidKeys) = cli.command {
        let (private, public) = chatd::push::webpush::VapidKey::generate();
        println!("vapid_private_key = \"{private}\"\nvapid_public_key  = \"{public}\"");
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(&cli.config_dir, &cli.environment) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("chatd: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token { user, ttl } => {
            let user = match UserId::parse(&user) {
                Ok(user) => user,
                Err(e) => {
                    eprintln!("chatd: {e}");
                    return ExitCode::from(2);
                }
            };
            let authority =
                TokenAuthority::new(&settings.auth.jwt_secret, settings.auth.leeway_secs);
            println!("{}", authority.mint(&user, ttl));
            ExitCode::SUCCESS
        }
        Command::Trace { room, seq, files } => trace(&room, seq, &files),
        Command::Serve => serve(settings),
        Command::VapidKeys => unreachable!("answered before the settings are loaded"),
    }
}

fn trace(room: &str, seq: u64, files: &[PathBuf]) -> ExitCode {
    let mut logs = String::new();
    if files.is_empty()
        && let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut logs)
    {
        eprintln!("chatd: standard input: {e}");
        return ExitCode::from(2);
    }
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(text) => logs.push_str(&text),
            Err(e) => {
                eprintln!("chatd: {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    }
    let hops = telemetry::message_path(logs.lines(), room, seq);
    if hops.is_empty() {
        eprintln!("chatd: no trace of seq {seq} of room {room} in these logs");
        return ExitCode::FAILURE;
    }
    for hop in hops {
        println!(
            "{}  {:<20}  {:<10} trace={} {}",
            hop.at, hop.node, hop.hop, hop.trace, hop.detail
        );
    }
    ExitCode::SUCCESS
}

fn serve(settings: Settings) -> ExitCode {
    telemetry::init_logging(&settings.log);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        let app = Application::build(settings).await?;
        let shutdown = app.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stop requested; draining");
            shutdown.cancel();
        });
        app.run_until_stopped().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("chatd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
