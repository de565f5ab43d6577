//! The `hookgate` command: parse the command line, start logging, run the chosen command.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hookgate::app::App;
use hookgate::config::Config;
use hookgate::store::StoreUrl;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

// glibc's allocator spent about a seventh of the async workers' time consolidating and
// unlinking chunks under load (perf, `hookgate bench --scenario batch`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hookgate",
    version,
    about = "A durable webhook gateway with WebAssembly transform plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Apply the PostgreSQL store's schema migrations, print what was applied, and exit
    /// (`serve` applies them too; this lets an operator do it ahead of a rollout).
    Migrate(MigrateArgs),
    /// Benchmark the gateway on this machine (run a release build).
    Bench(hookgate::bench::BenchOptions),
    /// Work with transform plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Print attempts as they finish on a running gateway (its live stream).
    Tail {
        #[command(flatten)]
        target: hookgate::ops_cli::Target,
        #[command(flatten)]
        filters: hookgate::ops_cli::Filters,
        /// How the attempt ended: succeeded, retry, failed (dead letter) or skipped.
        #[arg(long)]
        outcome: Option<String>,
        /// Print each attempt as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Find, show, redeliver and bulk-replay deliveries on a running gateway.
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
}

// Parsed once per run: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum DeliveriesCommand {
    /// One page of deliveries matching the filters, newest first.
    List {
        #[command(flatten)]
        target: hookgate::ops_cli::Target,
        #[command(flatten)]
        filters: hookgate::ops_cli::Filters,
        #[command(flatten)]
        period: hookgate::ops_cli::Period,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Go on from where the previous page ended.
        #[arg(long)]
        page_token: Option<String>,
        /// Print the page as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue again every finished delivery the filters match (--status failed, succeeded
    /// or skipped is required), as a bulk replay job, and follow it to its end.
    Replay {
        #[command(flatten)]
        target: hookgate::ops_cli::Target,
        #[command(flatten)]
        filters: hookgate::ops_cli::Filters,
        #[command(flatten)]
        period: hookgate::ops_cli::Period,
        /// Stop after this many.
        #[arg(long)]
        max: Option<usize>,
        /// Count the matches and queue nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// A delivery with every attempt, as JSON.
    Show {
        id: String,
        #[command(flatten)]
        target: hookgate::ops_cli::Target,
    },
    /// Queue a delivery again with a fresh retry budget.
    Redeliver {
        id: String,
        #[command(flatten)]
        target: hookgate::ops_cli::Target,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file (see hookgate.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080, or HOOKGATE_LISTEN].
    #[arg(long)]
    listen: Option<String>,
    /// Data folder for the database and generated key [default: ./data, or HOOKGATE_DATA_DIR].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Folder of .wasm transform plugins [default: <data-dir>/plugins, or HOOKGATE_PLUGINS_DIR].
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
    /// Store URL [default: SQLite in the data folder, or HOOKGATE_STORE].
    #[arg(long)]
    store: Option<String>,
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// TOML config file whose `store` to migrate.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Store URL, postgres://USER@HOST:PORT/DB[?options] [default: the config's, or HOOKGATE_STORE].
    #[arg(long)]
    store: Option<String>,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show what a plugin would send for an event, or why it skips or fails.
    Run {
        /// Plugin name: bundled, or a file stem in the plugins folder.
        name: String,
        /// JSON file holding the event: {"event_type", "data", ...} as posted to /api/v1/events.
        #[arg(long)]
        event: PathBuf,
        /// The destination's webhook_transform_config, as JSON.
        #[arg(long)]
        config: Option<String>,
        /// The destination URL the request would go to.
        #[arg(long, default_value = "https://example.com/webhook")]
        url: String,
        /// Folder of .wasm plugins [default: ./data/plugins, or HOOKGATE_PLUGINS_DIR].
        #[arg(long)]
        plugins_dir: Option<PathBuf>,
    },
    /// Write a new plugin project (Rust, JavaScript or Python) that builds, with one
    /// command, into NAME.wasm.
    New {
        /// The plugin's name: lower-case letters, digits and `_`; it becomes NAME.wasm and
        /// what destinations put in webhook_transform.
        name: String,
        #[arg(long, value_enum)]
        lang: hookgate::plugin::new::Lang,
        /// Where to write the project [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Load a .wasm component as the gateway would and say what it is: the contract it
    /// implements, what it says about itself, and the imports that would trap if called.
    Check {
        /// The component file.
        file: PathBuf,
        /// A webhook_transform_config to ask the plugin's validate-config about, as JSON.
        #[arg(long)]
        config: Option<String>,
    },
}

fn main() -> Result<()> {
    // Parsed first, so `--help` and `--version` work whatever the log settings say.
    let cli = Cli::parse();
    init_logging()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Migrate(args) => migrate(args).await,
            Command::Bench(options) => hookgate::bench::run(options).await.map(|_| ()),
            Command::Plugin {
                command:
                    PluginCommand::Run {
                        name,
                        event,
                        config,
                        url,
                        plugins_dir,
                    },
            } => {
                hookgate::plugin::cli::run(&name, &event, config.as_deref(), &url, plugins_dir)
                    .await
            }
            Command::Plugin {
                command: PluginCommand::Check { file, config },
            } => hookgate::plugin::cli::check(&file, config.as_deref()).await,
            Command::Plugin {
                command: PluginCommand::New { name, lang, dir },
            } => {
                let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
                hookgate::plugin::new::new(&name, lang, &dir)
            }
            Command::Tail {
                target,
                filters,
                outcome,
                json,
            } => hookgate::ops_cli::tail(&target, &filters, outcome.as_deref(), json).await,
            Command::Deliveries { command } => match command {
                DeliveriesCommand::List {
                    target,
                    filters,
                    period,
                    limit,
                    page_token,
                    json,
                } => {
                    let page = hookgate::ops_cli::Page { limit, page_token };
                    hookgate::ops_cli::list(&target, &filters, &period, page, json).await
                }
                DeliveriesCommand::Replay {
                    target,
                    filters,
                    period,
                    max,
                    dry_run,
                } => hookgate::ops_cli::replay(&target, &filters, &period, max, dry_run).await,
                DeliveriesCommand::Show { id, target } => {
                    hookgate::ops_cli::show(&target, &id).await
                }
                DeliveriesCommand::Redeliver { id, target } => {
                    hookgate::ops_cli::redeliver(&target, &id).await
                }
            },
        }
    })
}

/// Logs go to stderr: as text, coloured only on a terminal (so files and journald get no
/// escape codes; `NO_COLOR` turns colour off there too), or one JSON object per line with
/// `HOOKGATE_LOG_FORMAT=json` for log shippers. `HOOKGATE_LOG` filters, `info` by default.
fn init_logging() -> Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("HOOKGATE_LOG_FORMAT").as_deref() {
        Err(_) | Ok("" | "text") => builder
            .with_ansi(
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
            )
            .init(),
        Ok("json") => builder.json().flatten_event(true).init(),
        Ok(other) => bail!("HOOKGATE_LOG_FORMAT: {other:?} is not one of text, json"),
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<()> {
    let mut config = Config::load(args.config.as_deref(), |name| std::env::var(name).ok())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(plugins_dir) = args.plugins_dir {
        config.plugins_dir = Some(plugins_dir);
    }
    if let Some(store) = args.store {
        config.store = Some(store);
    }
    let app = App::build(config).await?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight deliveries");
        trigger.cancel();
    });
    app.run(shutdown).await
}

async fn migrate(args: MigrateArgs) -> Result<()> {
    let mut config = Config::load(args.config.as_deref(), |name| std::env::var(name).ok())?;
    if let Some(store) = args.store {
        config.store = Some(store);
    }
    let StoreUrl::Postgres(settings) = StoreUrl::parse(config.store.as_deref(), &config.data_dir)?
    else {
        bail!(
            "migrate is for PostgreSQL stores (--store postgres://...); \
             SQLite creates its schema when it opens"
        );
    };
    let report = hookgate::store::postgres::migrate(&settings).await?;
    for (version, name) in &report.applied {
        println!("applied {version:04} {name}");
    }
    match report.applied.is_empty() {
        true => println!("schema is up to date at version {}", report.version()),
        false => println!("schema is at version {}", report.version()),
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
