//! The coordinator's routes for data-parallel training (`dgr coordinator --role train`): the
//! [`Rendezvous`] behind the same token check, body limit and error answers as the shard
//! routes, with a clock that looks for dead and hanging ranks every second.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::api::*;
use crate::error::{CoordinatorError, Result};
use crate::rendezvous::{JobEnd, Rendezvous};
use crate::server::{Token, answer, authenticate, bad_body, now, unknown_route};

pub struct TrainService {
    rendezvous: Mutex<Rendezvous>,
    token: Arc<Token>,
    max_body_bytes: usize,
    ended: watch::Sender<Option<JobEnd>>,
}

impl TrainService {
    pub fn new(rendezvous: Rendezvous, token: &str, max_body_bytes: usize) -> Result<Arc<Self>> {
        Ok(Arc::new(TrainService {
            rendezvous: Mutex::new(rendezvous),
            token: Arc::new(Token::new(token)?),
            max_body_bytes,
            ended: watch::channel(None).0,
        }))
    }

    /// The rendezvous, for the clock and the signal handlers of the process that serves it.
    pub fn rendezvous(&self) -> MutexGuard<'_, Rendezvous> {
        // A panic while holding the lock leaves consistent state (every change is one
        // assignment), so a poisoned lock is still used.
        self.rendezvous.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Becomes `Some` when the job has ended.
    pub fn ended(&self) -> watch::Receiver<Option<JobEnd>> {
        self.ended.subscribe()
    }

    /// Runs `f` on the rendezvous, then publishes the job's end if it has come.
    fn with<T>(&self, f: impl FnOnce(&mut Rendezvous, f64) -> Result<T>) -> Result<T> {
        let now = now();
        let mut rendezvous = self.rendezvous();
        let result = f(&mut rendezvous, now);
        if let Some(end) = rendezvous.end(now) {
            self.ended.send_if_modified(|ended| ended.replace(end).is_none());
        }
        result
    }

    /// A stop request (a signal to the coordinator) for every rank.
    pub fn request_stop(&self, reason: &str) {
        let _ = self.with(|rendezvous, _| {
            rendezvous.request_stop(reason);
            Ok(())
        });
    }
}

pub fn train_router(service: Arc<TrainService>) -> Router {
    let limit = service.max_body_bytes;
    Router::new()
        .route("/v1/train/join", post(join))
        .route("/v1/train/world", post(world))
        .route("/v1/train/heartbeat", post(heartbeat))
        .route("/v1/train/leave", post(leave))
        .route("/v1/train/status", get(status))
        .route("/metrics", get(metrics))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(service.token.clone(), authenticate))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(service)
}

/// Serves until `shutdown` resolves, checking the ranks every second.
pub async fn serve_training(
    listener: tokio::net::TcpListener,
    service: Arc<TrainService>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let clock = service.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = clock.with(|rendezvous, now| {
                rendezvous.check(now);
                Ok(())
            });
        }
    });
    let served = axum::serve(listener, train_router(service).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| CoordinatorError::Server(format!("server failed: {e}")));
    ticker.abort();
    served
}

type Body<T> = std::result::Result<Json<T>, JsonRejection>;

async fn join(State(service): State<Arc<TrainService>>, request: Body<JoinRequest>) -> Response {
    match request {
        Ok(Json(request)) => answer(
            service.with(|r, now| r.join(request, now)).map(|member_id| JoinResponse { member_id }),
            "train/join",
        ),
        Err(rejection) => bad_body(rejection, "train/join"),
    }
}

async fn world(State(service): State<Arc<TrainService>>, request: Body<WorldRequest>) -> Response {
    match request {
        Ok(Json(request)) => answer(service.with(|r, now| r.world(request.member_id, now)), "train/world"),
        Err(rejection) => bad_body(rejection, "train/world"),
    }
}

async fn heartbeat(State(service): State<Arc<TrainService>>, request: Body<RankHeartbeat>) -> Response {
    match request {
        Ok(Json(request)) => answer(service.with(|r, now| r.heartbeat(request, now)), "train/heartbeat"),
        Err(rejection) => bad_body(rejection, "train/heartbeat"),
    }
}

async fn leave(State(service): State<Arc<TrainService>>, request: Body<LeaveRequest>) -> Response {
    match request {
        Ok(Json(request)) => answer(
            service.with(|r, now| r.leave(request.member_id, request.outcome, request.message, now)).map(|()| Empty {}),
            "train/leave",
        ),
        Err(rejection) => bad_body(rejection, "train/leave"),
    }
}

async fn status(State(service): State<Arc<TrainService>>) -> Response {
    answer(service.with(|r, now| Ok(r.status(now))), "train/status")
}

async fn metrics(State(service): State<Arc<TrainService>>) -> Response {
    match service.with(|r, now| Ok(r.status(now))) {
        Ok(status) => crate::server::text_metrics(crate::metrics::train_metrics(&status)),
        Err(error) => crate::server::reject(StatusCode::INTERNAL_SERVER_ERROR, error.to_string(), "metrics"),
    }
}
