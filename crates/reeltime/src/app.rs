//! Builds the node from its configuration and runs it until a signal.

use std::sync::Arc;

use anyhow::Context;
use reeltime_protocol::Close;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Revocations;
use crate::auth::{DevIssuer, JwksCache, KeyProvider, KeySet, ServerKeys, Verifier};
use crate::bus::{Bus, LocalBus, RedisBus};
use crate::clerk::{self, ClerkWebhooks};
use crate::config::{Config, KeySource};
use crate::events::{Deliver, SnapshotSource};
use crate::gateway::{Admission, ConnectGate, Gateway, Hub, SnapshotBatcher};
use crate::http::{
    self, Admin, AppState, BearerAuth, Health, MediaState, PageConfig, ServerApi, WebhookDeliveries,
};
use crate::imports::fetch::Fetcher;
use crate::imports::guard::Policy;
use crate::imports::uploads::bytes::{LocalBytes, UploadBytes};
use crate::imports::uploads::s3::BucketBytes;
use crate::imports::uploads::{UploadSettings, Uploads};
use crate::imports::{
    ImportRules, ImportService, JobSettings, MediaLinks, MediaWork, Runner, Sources, StoreNotes,
};
use crate::media::{self, MediaSigner, MediaTools};
use crate::metrics::Metrics;
use crate::net::{self, ADMIN_CONNECTIONS, Budget, BudgetInputs, HttpLimits};
use crate::store::{self, OwnedImport};
use crate::users::Users;
use crate::webhooks::{Webhooks, WorkerParts};

/// Runs the server until SIGTERM/SIGINT, then shuts down within the grace period.
pub async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());

    let (key_provider, issuer, dev) = key_provider(&config, &metrics, &shutdown)?;
    // Revoked sessions and deleted users (Clerk webhooks): read by the
    // verifier, filled from the store and the bus.
    let revocations = Arc::new(Revocations::default());
    let verifier = Arc::new(
        Verifier::new(
            key_provider,
            issuer,
            config.clock_skew,
            &config.authorized_parties,
        )
        .with_revocations(Arc::clone(&revocations))
        .with_metrics(Arc::clone(&metrics)),
    );

    let store::Opened { store, hooks } =
        store::open_with(&config.database_url, config.webhooks.is_some())
            .await
            .context("opening the database (REELTIME_DATABASE_URL)")?;
    if !store.shared() {
        // The only node: deliveries it had in flight when it stopped are
        // sent again now rather than when their leases run out.
        hooks
            .release_delivery_leases(None)
            .await
            .context("releasing webhook delivery leases")?;
    }
    revocations.merge(
        hooks
            .revocations()
            .await
            .context("loading revoked sessions")?,
    );
    tokio::spawn(clerk::keep_revocations(
        Arc::clone(&hooks),
        Arc::clone(&revocations),
        shutdown.clone(),
    ));
    let users = Arc::new(Users::new(Arc::clone(&store)));
    let hub = Hub::with_revocations(
        config.max_connections_per_user,
        config.max_connections,
        Arc::clone(&revocations),
    );
    // Short random id of this process: connection ids, and the Redis bus
    // skips its own messages by it.
    let node_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    // The buses hand changes to this node's sockets without knowing the hub.
    let local: Arc<dyn Deliver> = Arc::clone(&hub) as Arc<dyn Deliver>;
    let redis_bus = match &config.redis_url {
        Some(url) => {
            tracing::info!(node = %node_id, "using the Redis bus (REELTIME_REDIS_URL)");
            Some(
                RedisBus::start(url, &node_id, Arc::clone(&local), shutdown.clone())
                    .context("bad setting REELTIME_REDIS_URL")?,
            )
        }
        None => None,
    };
    let bus: Arc<dyn Bus> = match &redis_bus {
        Some(redis) => Arc::clone(redis) as Arc<dyn Bus>,
        None => Arc::new(LocalBus::new(local)),
    };

    let policy = Arc::new(Policy {
        allow_private: config.import_allow_private,
        allow_hosts: config.import_allow_hosts.clone(),
        allow_synthetic: config.synthetic_imports,
        ..Policy::default()
    });
    if config.synthetic_imports {
        tracing::warn!(
            "synthetic imports are on (REELTIME_SYNTHETIC_IMPORTS): for load tests only"
        );
    }
    let tools = if config.media_processing {
        MediaTools::detect().await
    } else {
        None
    };
    // `/readyz` shows it; `MediaTools::detect` already logged it.
    let media_sandbox = tools.as_ref().map(|tools| tools.sandbox.name());
    match &tools {
        Some(tools) => {
            tracing::info!(version = %tools.version, "media processing on (ffmpeg found)")
        }
        None if !config.media_processing => {
            tracing::info!(
                "media processing off (REELTIME_MEDIA_PROCESSING=off); imports download only"
            )
        }
        None => tracing::warn!(
            "media processing off: ffprobe/ffmpeg not found; imports download only (apt-get install ffmpeg)"
        ),
    }
    let signer = Arc::new(MediaSigner::load_or_create(
        &config.data_dir,
        config
            .media_secret
            .as_ref()
            .map(|secret| secret.expose().to_string()),
    )?);
    let media_dir = config.data_dir.join("imports");
    // Built before anything listens: a bad S3 setting stops the start.
    let media_storage = media::storage::from_settings(
        config.media_url.as_deref(),
        config.s3_endpoint.as_deref(),
        media_dir.clone(),
    )?;
    match &config.media_url {
        Some(url) => tracing::info!(url = %url, "media in object storage (REELTIME_MEDIA_URL)"),
        None => tracing::info!(dir = %media_dir.display(), "media in the data dir"),
    }
    let fetcher = Fetcher::new(
        Arc::clone(&policy),
        config.import_max_bytes,
        config.download_pace.clone(),
        &node_id,
    )?;
    // Where tus uploads keep their bytes: the bucket when there is one (any
    // node takes any PATCH), else the import directories of this node.
    let upload_bytes: Arc<dyn UploadBytes> = match media_storage.bucket() {
        Some(bucket) => Arc::new(BucketBytes::new(bucket)),
        None => LocalBytes::new(media_dir.clone()),
    };
    let imports = ImportService::new(
        Arc::clone(&store),
        Arc::clone(&bus),
        ImportRules {
            sources: Arc::new(Sources::standard(
                Arc::clone(&policy),
                fetcher,
                Arc::clone(&upload_bytes),
            )),
            limits: config.import_limits.clone(),
        },
        media_dir.clone(),
        MediaLinks {
            signer: Arc::clone(&signer),
            ttl: config.media_link_ttl,
        },
        Arc::clone(&media_storage),
        Arc::clone(&metrics),
    );
    // A change held while Redis is away is noted in the shared store, so
    // that another node publishes it if this one dies first.
    if let Some(redis) = &redis_bus
        && let Some(notes) = StoreNotes::new(Arc::clone(&imports), config.job_lease)
    {
        redis.keep_notes(notes, shutdown.clone());
    }
    let runner = Runner::new(
        Arc::clone(&imports),
        tools.map(|tools| MediaWork {
            tools,
            mode: config.transcode,
            stall_timeout: config.process_stall_timeout,
        }),
        JobSettings {
            node: node_id.clone(),
            lease: config.job_lease,
            progress_persist: config.progress_persist,
            download_slots: config.download_concurrency,
            process_slots: config.process_concurrency,
            max_duration: config.max_duration,
        },
        shutdown.clone(),
    );
    let runner_loop = tokio::spawn(Arc::clone(&runner).run());
    let uploads = Uploads::new(
        Arc::clone(&imports),
        upload_bytes,
        UploadSettings {
            max_bytes: config.import_max_bytes,
            max_per_user: config.max_uploads_per_user,
            expire_after: config.upload_expire,
            progress_share: runner.download_share(),
        },
    );
    tokio::spawn(Arc::clone(&uploads).sweep(shutdown.clone()));

    let webhooks = match &config.webhooks {
        Some(settings) => {
            let presenter = Arc::clone(&imports);
            let webhooks = Webhooks::new(
                settings.clone(),
                WorkerParts {
                    hooks: Arc::clone(&hooks),
                    node: node_id.clone(),
                    lease: config.job_lease,
                    metrics: Arc::clone(&metrics),
                    present: Arc::new(move |user_id: &str, import| {
                        presenter.present(&OwnedImport::new(user_id, import))
                    }),
                },
            )
            .context("bad setting REELTIME_WEBHOOK_SECRET")?;
            tokio::spawn(Arc::clone(&webhooks).run(shutdown.clone()));
            Some(webhooks)
        }
        None => None,
    };
    let clerk = match &config.clerk_webhook_secret {
        Some(secret) => Some(Arc::new(
            ClerkWebhooks::new(
                secret.expose(),
                Arc::clone(&hooks),
                Arc::clone(&bus),
                Arc::clone(&imports),
                Arc::clone(&metrics),
            )
            .context("bad setting CLERK_WEBHOOK_SIGNING_SECRET")?,
        )),
        None => None,
    };

    let budget = Budget::for_this_process(|open_files| BudgetInputs {
        open_files,
        fd_reserve: config.fd_reserve,
        max_pending_auth: config.max_pending_auth,
        max_connections: config.max_connections,
        admin_listener: config.admin_listen.is_some(),
    });
    tracing::info!(
        open_files = budget.open_files,
        max_open_connections = budget.connections,
        max_waiting_for_token = budget.waiting,
        max_waiting_per_address = config.max_pending_auth_per_ip,
        "connection budget (docs/security.md)"
    );
    if budget.waiting < config.max_pending_auth {
        tracing::warn!(
            max_waiting_for_token = budget.waiting,
            "REELTIME_MAX_PENDING_AUTH lowered by the open-file limit or REELTIME_MAX_CONNECTIONS"
        );
    }
    let gateway = Arc::new(Gateway {
        verifier: Arc::clone(&verifier),
        hub,
        admission: Admission::new(budget.waiting, config.max_pending_auth_per_ip),
        connect_gate: ConnectGate::new(config.connect_slots, config.connect_wait),
        trusted_proxies: config.trusted_proxies.clone(),
        // The gateway reads snapshots through this, never the service itself.
        snapshots: Arc::clone(&imports) as Arc<dyn SnapshotSource>,
        snapshot_reads: SnapshotBatcher::new(Arc::clone(&imports) as Arc<dyn SnapshotSource>),
        metrics: Arc::clone(&metrics),
        allowed_origins: config.allowed_origins.clone(),
        auth_timeout: config.auth_timeout,
        heartbeat: config.heartbeat,
        node_id,
        shutdown: shutdown.clone(),
        sessions: TaskTracker::new(),
    });
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {} (REELTIME_LISTEN)", config.listen))?;
    let address = listener.local_addr()?;
    let admin_listener = match config.admin_listen {
        Some(admin) => Some(
            TcpListener::bind(admin)
                .await
                .with_context(|| format!("listening on {admin} (REELTIME_ADMIN_LISTEN)"))?,
        ),
        None => None,
    };
    let base_url = format!("http://{address}");
    if dev.is_some() {
        // The development page imports the server's own samples: allowed by
        // this one exception, not by opening private addresses in general.
        policy.allow_own_samples(&base_url);
    }
    let owner_store = Arc::clone(&store);
    let media = MediaState {
        storage: Arc::clone(&media_storage),
        signer,
        owner_of: Arc::new(move |import_id: String| {
            let store = Arc::clone(&owner_store);
            Box::pin(async move {
                store
                    .get_import(&import_id)
                    .await
                    .ok()
                    .flatten()
                    .map(|owned| owned.user_id)
            })
        }),
    };
    let health = Health {
        store: Arc::clone(&store),
        hub: Arc::clone(&gateway.hub),
        admission: Arc::clone(&gateway.admission),
        metrics: Arc::clone(&metrics),
        media_processing: runner.media_processing(),
        media_sandbox,
        hooks: Arc::clone(&hooks),
        bus: Arc::clone(&bus),
    };
    let server = ServerApi {
        keys: Arc::new(ServerKeys::new(Arc::clone(&store))),
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        purged_at: Arc::default(),
    };
    let state = AppState {
        gateway: Arc::clone(&gateway),
        imports,
        server,
        uploads,
        cors: Arc::new(http::Cors::new(&config.allowed_origins)),
        auth: BearerAuth {
            verifier,
            users,
            metrics,
        },
        page: Arc::new(PageConfig {
            dev_issuer: dev.is_some(),
            clerk_publishable_key: config.clerk_publishable_key.clone(),
            media_processing: runner.media_processing(),
            base_url,
        }),
        media,
        health: health.clone(),
        dev,
        clerk,
        deliveries: WebhookDeliveries {
            hooks: Arc::clone(&hooks),
            worker: webhooks,
        },
    };
    let limits = HttpLimits {
        header_timeout: config.http_header_timeout,
        idle_timeout: config.http_idle_timeout,
        max_connections: budget.connections,
    };
    let admin = match admin_listener {
        Some(admin_listener) => {
            let admin_address = admin_listener.local_addr()?;
            tracing::info!("admin endpoints (/metrics, /readyz) on http://{admin_address}");
            tokio::spawn(net::serve(
                admin_listener,
                http::admin_router(health),
                HttpLimits {
                    max_connections: ADMIN_CONNECTIONS,
                    ..limits
                },
                shutdown.clone(),
            ));
            Admin::Separate
        }
        None => Admin::Public,
    };
    tracing::info!("listening on http://{address}");
    let server = tokio::spawn(net::serve(
        listener,
        http::router(state, admin),
        limits,
        shutdown.clone(),
    ));

    wait_for_signal().await;
    tracing::info!(
        grace_secs = config.shutdown_grace.as_secs(),
        "shutting down"
    );
    shutdown.cancel();
    // After the signal: a socket registering from now on sees it and closes
    // itself (`gateway::session`), every other one is in the hub.
    let closing = gateway.hub.close_all(Close::SHUTTING_DOWN);
    tracing::info!(sockets = closing, "closing sockets");
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    gateway.sessions.close();
    let closed = tokio::time::timeout_at(deadline, gateway.sessions.wait())
        .await
        .is_ok();
    let saved = runner
        .wait_stopped(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await;
    let _ = tokio::time::timeout_at(deadline, runner_loop).await;
    let _ = tokio::time::timeout_at(deadline, server).await;
    tracing::info!(sockets_closed = closed, jobs_saved = saved, "stopped");
    Ok(())
}

fn key_provider(
    config: &Config,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(KeyProvider, String, Option<Arc<DevIssuer>>)> {
    Ok(match &config.key_source {
        KeySource::Jwks { url, issuer } => {
            let cache = JwksCache::new(url.clone(), Arc::clone(metrics))?;
            cache.start(shutdown.clone());
            tracing::info!(jwks = %url, issuer = %issuer, "verifying tokens against a JWKS");
            (KeyProvider::Jwks(cache), issuer.clone(), None)
        }
        KeySource::Pem { pem, issuer } => {
            let keys = KeySet::from_rsa_pem(pem)
                .map_err(|err| anyhow::anyhow!("bad setting CLERK_JWT_KEY: {err}"))?;
            tracing::info!(issuer = %issuer, "verifying tokens with CLERK_JWT_KEY");
            (KeyProvider::Static(Arc::new(keys)), issuer.clone(), None)
        }
        KeySource::Development { issuer } => {
            let dev = DevIssuer::load_or_create(&config.data_dir, issuer.clone())?;
            tracing::warn!(
                "no key source configured: running the DEVELOPMENT issuer (POST /dev/token mints tokens for anyone). \
                 Set CLERK_PUBLISHABLE_KEY, CLERK_JWT_KEY or REELTIME_JWKS_URL for real use."
            );
            (
                KeyProvider::Static(Arc::new(dev.key_set())),
                issuer.clone(),
                Some(Arc::new(dev)),
            )
        }
    })
}

async fn wait_for_signal() {
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
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
