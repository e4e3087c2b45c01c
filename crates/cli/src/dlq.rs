//! `switchyard dlq list|show|replay|purge`: the admin API of a running switchyard.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_api::{DeadLetters, PurgeAnswer, ReplayAnswer, ReplayRequest};

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters not yet replayed: id, failing sink, attempts and error.
    #[command(
        after_help = "Example:\n  switchyard dlq list orders-dlq --limit 20 -c switchyard.toml"
    )]
    List {
        /// Dead-letter queue (default: server.dead_letter, usually `dead-letters`).
        queue: Option<String>,
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print one dead letter (the full event as JSON) by event id.
    #[command(
        after_help = "Example:\n  switchyard dlq show 0190f3a2-7c4e-7d11-9a0b-5d6e7f801234 --queue orders-dlq \
                            -c switchyard.toml"
    )]
    Show {
        id: String,
        #[arg(long)]
        queue: Option<String>,
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Deliver dead letters again to the sink that failed them. Those that fail again go
    /// back to the end of the dead-letter queue.
    #[command(
        after_help = "Example:\n  switchyard dlq replay orders-dlq --sink hook -c switchyard.toml"
    )]
    Replay {
        queue: Option<String>,
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Only dead letters of this sink.
        #[arg(long)]
        sink: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Drop every dead letter waiting in a dead-letter queue now, for good (those
    /// dead-lettered later stay). Needs --yes.
    #[command(
        after_help = "Examples:\n  switchyard dlq purge orders-dlq -c switchyard.toml         \
                            # says how many would go\n  \
                            switchyard dlq purge orders-dlq --yes -c switchyard.toml"
    )]
    Purge {
        /// The dead-letter queue, e.g. `orders-dlq` or `dead-letters`.
        queue: String,
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Really drop them (without it, only say how many would go).
        #[arg(long)]
        yes: bool,
    },
}

/// A client of a running switchyard's admin API (server.listen, server.admin_token).
pub(crate) struct Admin {
    base: String,
    token: String,
    client: reqwest::Client,
}

pub fn run(command: DlqCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(command))
}

async fn run_async(command: DlqCommand) -> anyhow::Result<ExitCode> {
    let (config, queue) = match &command {
        DlqCommand::List { config, queue, .. }
        | DlqCommand::Show { config, queue, .. }
        | DlqCommand::Replay { config, queue, .. } => (config, queue.clone()),
        DlqCommand::Purge { config, queue, .. } => (config, Some(queue.clone())),
    };
    let cfg = crate::load(config)?;
    let queue = queue.unwrap_or(cfg.server.dead_letter.clone());
    let admin = Admin::new(&cfg, config)?;
    match command {
        DlqCommand::List { limit, .. } => {
            let body: DeadLetters = admin
                .get(&format!("/admin/dlq/{queue}?limit={limit}"))
                .await?;
            if body.dead_letters.is_empty() {
                println!("no dead letters in `{queue}`");
            }
            for l in body.dead_letters {
                let e = &l.event;
                let id = if e.id.is_empty() { "?" } else { &e.id };
                println!(
                    "{id}\tsink={}\tattempts={}\terror={}",
                    e.header("x-switchyard-dead-letter-sink").unwrap_or("?"),
                    e.header("x-switchyard-dead-letter-attempts").unwrap_or("?"),
                    e.header("x-switchyard-dead-letter-error").unwrap_or("?"),
                );
            }
        }
        DlqCommand::Show { id, .. } => {
            let body: DeadLetters = admin
                .get(&format!("/admin/dlq/{queue}?limit=10000"))
                .await?;
            let found = body.dead_letters.into_iter().find(|l| l.event.id == id);
            match found {
                Some(l) => println!("{}", serde_json::to_string_pretty(&l.event)?),
                None => bail!("no dead letter with id `{id}` waiting in `{queue}`"),
            }
        }
        DlqCommand::Replay { sink, limit, .. } => {
            let request = ReplayRequest {
                sink,
                limit: Some(limit),
                ids: Vec::new(),
            };
            let body: ReplayAnswer = admin
                .post(&format!("/admin/dlq/{queue}/replay"), &request)
                .await?;
            println!(
                "replayed {} dead letters from `{queue}` ({} skipped)",
                body.replayed, body.skipped
            );
        }
        DlqCommand::Purge { yes: false, .. } => {
            let path = format!("/admin/dlq/{}?limit=10000", crate::queue::segment(&queue));
            let listed: DeadLetters = admin.get(&path).await?;
            let n = listed.dead_letters.len();
            let count = if n >= 10_000 {
                "at least 10000".to_owned()
            } else {
                n.to_string()
            };
            eprintln!(
                "not purging: this would drop the {count} dead letters waiting in `{queue}` now, \
                 for good (see them with `switchyard dlq list {queue}`). Run it again with --yes \
                 to drop them."
            );
            return Ok(ExitCode::FAILURE);
        }
        DlqCommand::Purge { yes: true, .. } => {
            let path = format!("/admin/dlq/{}/purge", crate::queue::segment(&queue));
            let body: PurgeAnswer = admin.post(&path, &serde_json::json!({})).await?;
            println!("purged {} dead letters from `{queue}`", body.purged);
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl Admin {
    /// The admin API of the switchyard that runs `cfg` (read from `path`).
    pub(crate) fn new(
        cfg: &switchyard_config::Config,
        path: &std::path::Path,
    ) -> anyhow::Result<Self> {
        // Without a configured token, the running switchyard made one for this run and
        // keeps it in its data directory.
        let run_token = || {
            let file = std::path::Path::new(&cfg.server.data_dir)
                .join(switchyard_runtime::RUN_ADMIN_TOKEN_FILE);
            std::fs::read_to_string(file)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        };
        let Some(token) = cfg.server.admin_token.clone().or_else(run_token) else {
            bail!(
                "server.admin_token is not set in {} and the data directory {} holds no \
                 token of a running switchyard ({}): start switchyard with this config, or \
                 set server.admin_token",
                path.display(),
                cfg.server.data_dir,
                switchyard_runtime::RUN_ADMIN_TOKEN_FILE
            );
        };
        Ok(Admin {
            base: format!("http://{}", cfg.server.listen),
            token,
            client: reqwest::Client::new(),
        })
    }

    /// `GET path`, its answer read as `T` (a `Value` to keep it as it came).
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach switchyard at {}; is it running?", self.base))?;
        Self::answer(resp).await
    }

    /// `POST path` with the JSON of `body`, its answer read as `T`.
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach switchyard at {}; is it running?", self.base))?;
        Self::answer(resp).await
    }

    pub(crate) async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .client
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach switchyard at {}; is it running?", self.base))?;
        Self::answer(resp).await
    }

    /// The answer as `T`; an error answer (`switchyard_api::ErrorBody`, or any text) as
    /// an error that says what switchyard said.
    async fn answer<T: DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let error = serde_json::from_str::<switchyard_api::ErrorBody>(&text).ok();
            let mut detail = match error {
                Some(e) => e.error,
                None if !text.trim().is_empty() => text.trim().to_owned(),
                None => "no details".to_owned(),
            };
            if let Some(secs) = retry_after {
                detail.push_str(&format!(" (retry after {secs}s)"));
            }
            bail!("switchyard answered {status}: {detail}");
        }
        // An empty answer reads as `null` (what a `Value` caller always got).
        let text = if text.trim().is_empty() {
            "null"
        } else {
            &text
        };
        serde_json::from_str(text).with_context(|| {
            format!(
                "switchyard answered {status} with what this switchyard CLI cannot read                  (is the server of another version?): {}",
                &text[..text.len().min(300)]
            )
        })
    }
}
