//! The coordinator's HTTP service. Every request must carry the job's token (compared in
//! constant time); bodies are size-limited; a bad request gets a 4xx with its reason, is
//! logged, and changes nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::*;
use crate::error::{CoordinatorError, Result};
use crate::ledger::{Completion, Heartbeat, LeaseOutcome, Ledger};

/// Service settings (from `[coordinator]`).
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub token: String,
    pub lease_seconds: f64,
    pub heartbeat_seconds: f64,
    pub max_body_bytes: usize,
}

/// The shared state behind the routes.
pub struct Service {
    /// A fair (first come, first served) lock: under load no request starves.
    ledger: Arc<tokio::sync::Mutex<Ledger>>,
    config: ServiceConfig,
    token: Arc<Token>,
    output_dir: PathBuf,
    complete: watch::Sender<bool>,
}

/// Seconds since the Unix epoch: the ledger's clock (it must survive restarts).
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl Service {
    pub fn new(ledger: Ledger, config: ServiceConfig) -> Result<Arc<Self>> {
        let complete = ledger.is_complete()?;
        let output_dir = ledger.job().output_dir.clone();
        Ok(Arc::new(Service {
            token: Arc::new(Token::new(&config.token)?),
            ledger: Arc::new(tokio::sync::Mutex::new(ledger)),
            config,
            output_dir,
            complete: watch::channel(complete).0,
        }))
    }

    /// Becomes `true` when every shard is done.
    pub fn completion(&self) -> watch::Receiver<bool> {
        self.complete.subscribe()
    }

    /// Runs `f` on the ledger on a blocking thread, requests in their order of arrival.
    async fn with_ledger<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Ledger, &ServiceConfig) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let mut ledger = self.ledger.clone().lock_owned().await;
        let service = self.clone();
        tokio::task::spawn_blocking(move || f(&mut ledger, &service.config))
            .await
            .map_err(|e| CoordinatorError::Server(format!("ledger task failed: {e}")))?
    }
}

/// The job's shared secret, kept as its digest.
pub(crate) struct Token([u8; 32]);

impl Token {
    pub(crate) fn new(token: &str) -> Result<Self> {
        if token.is_empty() {
            return Err(CoordinatorError::Server(
                "no token: set coordinator.token or the DGR_TOKEN environment variable".into(),
            ));
        }
        Ok(Token(digest(token)))
    }

    fn matches(&self, given: Option<&str>) -> bool {
        // Digests have a fixed length, so the comparison's time says nothing about the token.
        given.is_some_and(|token| bool::from(digest(token).ct_eq(&self.0)))
    }
}

/// The routes, behind the token check and the body limit.
pub fn router(service: Arc<Service>) -> Router {
    let limit = service.config.max_body_bytes;
    Router::new()
        .route("/v1/register", post(register))
        .route("/v1/lease", post(lease))
        .route("/v1/heartbeat", post(heartbeat))
        .route("/v1/complete", post(complete))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(service.token.clone(), authenticate))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(service)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router(service).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| CoordinatorError::Server(format!("server failed: {e}")))
}

pub(crate) fn reject(status: StatusCode, reason: impl Into<String>, route: &str) -> Response {
    let reason = reason.into();
    warn!(status = status.as_u16(), route, %reason, "request rejected");
    (status, Json(ErrorBody { error: reason })).into_response()
}

pub(crate) async fn authenticate(State(token): State<Arc<Token>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.matches(given) {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string()).unwrap_or_default();
        warn!(%peer, path = request.uri().path(), "request without the job's token");
        return (StatusCode::UNAUTHORIZED, Json(ErrorBody { error: "missing or wrong token".into() })).into_response();
    }
    next.run(request).await
}

pub(crate) async fn unknown_route(request: Request) -> Response {
    reject(StatusCode::NOT_FOUND, format!("no route {} {}", request.method(), request.uri().path()), "fallback")
}

/// A body that is not the expected JSON: 413 too large, 400 not JSON, 422 wrong fields.
pub(crate) fn bad_body(rejection: JsonRejection, route: &str) -> Response {
    reject(rejection.status(), rejection.body_text(), route)
}

pub(crate) fn answer<T: Serialize>(result: Result<T>, route: &str) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => {
            let status = match &error {
                CoordinatorError::UnknownWorker(_)
                | CoordinatorError::UnknownShard(_)
                | CoordinatorError::UnknownLease(_) => StatusCode::NOT_FOUND,
                CoordinatorError::LeaseMismatch { .. }
                | CoordinatorError::WrongRole { .. }
                | CoordinatorError::Refused(_) => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            reject(status, error.to_string(), route)
        }
    }
}

async fn register(
    State(service): State<Arc<Service>>,
    request: std::result::Result<Json<RegisterRequest>, JsonRejection>,
) -> Response {
    let request = match request {
        Ok(Json(r)) => r,
        Err(rejection) => return bad_body(rejection, "register"),
    };
    let result = service
        .with_ledger(move |ledger, config| {
            if request.role != ledger.job().stage {
                return Err(CoordinatorError::WrongRole { job: ledger.job().stage.clone(), worker: request.role });
            }
            let worker_id = ledger.register(&request.name, &request.role, now())?;
            info!(worker_id, name = %request.name, "worker registered");
            Ok(RegisterResponse { worker_id, job: ledger.job_info(config.lease_seconds, config.heartbeat_seconds) })
        })
        .await;
    answer(result, "register")
}

async fn lease(
    State(service): State<Arc<Service>>,
    request: std::result::Result<Json<LeaseRequest>, JsonRejection>,
) -> Response {
    let request = match request {
        Ok(Json(r)) => r,
        Err(rejection) => return bad_body(rejection, "lease"),
    };
    let result = service
        .with_ledger(move |ledger, config| {
            Ok(match ledger.lease(request.worker_id, now(), config.lease_seconds)? {
                LeaseOutcome::Leased { lease_id, shard } => {
                    info!(worker_id = request.worker_id, lease_id, shard = shard.id, "shard leased");
                    LeaseResponse::Leased { lease_id, shard }
                }
                LeaseOutcome::Wait => LeaseResponse::Wait { retry_after_seconds: config.heartbeat_seconds.min(5.0) },
                LeaseOutcome::Done => LeaseResponse::Done,
            })
        })
        .await;
    answer(result, "lease")
}

async fn heartbeat(
    State(service): State<Arc<Service>>,
    request: std::result::Result<Json<HeartbeatRequest>, JsonRejection>,
) -> Response {
    let request = match request {
        Ok(Json(r)) => r,
        Err(rejection) => return bad_body(rejection, "heartbeat"),
    };
    let result = service
        .with_ledger(move |ledger, config| {
            Ok(match ledger.heartbeat(request.lease_id, now(), config.lease_seconds)? {
                Heartbeat::Renewed => HeartbeatResponse::Renewed,
                Heartbeat::Lost => {
                    info!(lease_id = request.lease_id, "heartbeat for a lost lease");
                    HeartbeatResponse::Lost
                }
            })
        })
        .await;
    answer(result, "heartbeat")
}

async fn complete(
    State(service): State<Arc<Service>>,
    request: std::result::Result<Json<CompleteRequest>, JsonRejection>,
) -> Response {
    let request = match request {
        Ok(Json(r)) => r,
        Err(rejection) => return bad_body(rejection, "complete"),
    };
    if !is_plain_file_name(&request.file) {
        return reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`{}` is not a plain file name", request.file),
            "complete",
        );
    }
    let path = service.output_dir.join("attempts").join(&request.file);
    let expected = request.sha256.clone();
    let checked = tokio::task::spawn_blocking(move || checksum(&path).map(|found| (found == expected, path))).await;
    match checked {
        Ok(Ok((true, _))) => {}
        Ok(Ok((false, path))) => {
            return reject(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{}: checksum differs from the claim", path.display()),
                "complete",
            );
        }
        Ok(Err(reason)) => return reject(StatusCode::UNPROCESSABLE_ENTITY, reason, "complete"),
        Err(e) => return reject(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), "complete"),
    }
    let svc = service.clone();
    let result = service
        .with_ledger(move |ledger, _| {
            let r = &request;
            let outcome = ledger.complete(r.lease_id, r.shard, &r.file, &r.sha256, r.rows, now())?;
            let job_done = ledger.is_complete()?;
            let response = match outcome {
                Completion::Accepted => {
                    info!(shard = r.shard, lease_id = r.lease_id, rows = r.rows, "shard done");
                    if job_done {
                        info!("every shard is done");
                        svc.complete.send_replace(true);
                    }
                    CompleteResponse::Accepted { job_done }
                }
                Completion::Duplicate => {
                    info!(shard = r.shard, lease_id = r.lease_id, "duplicate completion discarded");
                    CompleteResponse::Duplicate { job_done }
                }
            };
            Ok(response)
        })
        .await;
    answer(result, "complete")
}

async fn status(State(service): State<Arc<Service>>) -> Response {
    answer(service.with_ledger(|ledger, _| ledger.status(now())).await, "status")
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    match service.with_ledger(|ledger, _| ledger.status(now())).await {
        Ok(status) => text_metrics(crate::metrics::shard_metrics(&status)),
        Err(error) => reject(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), "metrics"),
    }
}

/// A `/metrics` answer in the OpenMetrics text format.
pub(crate) fn text_metrics(body: String) -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']) && name.len() <= 255
}

/// SHA-256 of a file, hex; the reason as text when it cannot be read.
fn checksum(path: &Path) -> std::result::Result<String, String> {
    dgr_core::import::sha256_file(path).map(|(_, hex)| hex).map_err(|e| e.to_string())
}
