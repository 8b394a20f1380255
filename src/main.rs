//! The `chatd` command: run a node (default), or mint a token with the configured secret.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use chatd::{
    auth::TokenAuthority, config::Settings, domain::UserId, startup::Application, telemetry,
};
use clap::{Parser, Subcommand};

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
    /// Load and audit running nodes: simulated users chat for a while, then every client is
    /// checked against the store. Exits 1 on any lost, duplicated or misordered message.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Node URLs, comma separated; users are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
    /// Simulated users.
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Group rooms (users are dealt into them).
    #[arg(long, default_value_t = 3)]
    groups: usize,
    /// Direct (1:1) rooms.
    #[arg(long, default_value_t = 3)]
    directs: usize,
    /// Messages per second, all users together.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// How long to send, e.g. 30s, 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// After sending, how long clients may take to receive everything.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Write the JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The nodes' JWT secret (default: auth.jwt_secret of the configuration).
    #[arg(long, env = "CHATD_CHECK_SECRET")]
    secret: Option<String>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Serve => serve(settings),
        Command::Check(args) => check(args, &settings),
    }
}

fn check(args: CheckArgs, settings: &Settings) -> ExitCode {
    let secret = args
        .secret
        .unwrap_or_else(|| settings.auth.jwt_secret.clone());
    let mut config = chatd::check::CheckConfig::new(args.url, secret);
    config.users = args.users;
    config.groups = args.groups;
    config.directs = args.directs;
    config.rate = args.rate;
    config.duration = args.duration;
    config.settle = args.settle;
    config.progress = !args.quiet;
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let report = match runtime.block_on(chatd::check::run(&config, async {})) {
        Ok((report, ())) => report,
        Err(e) => {
            eprintln!("chatd check: {e:#}");
            return ExitCode::from(2);
        }
    };
    let json = serde_json::to_string_pretty(&report).expect("reports serialize");
    if let Some(path) = args.json
        && let Err(e) = std::fs::write(&path, &json)
    {
        eprintln!("chatd check: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    println!("{}", report.summary());
    for example in &report.audit.examples {
        println!("  {example}");
    }
    for failure in &report.incomplete {
        println!("  incomplete: {failure}");
    }
    if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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
