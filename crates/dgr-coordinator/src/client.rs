//! The coordinator's API from the other side: workers and `dgr status`. Connection failures
//! and 5xx answers are retried with exponential backoff for a configured window (the
//! coordinator may be restarting); a 4xx is final and carries the server's reason.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::api::*;
use crate::error::{CoordinatorError, Result};

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    retry_window: Duration,
}

/// Longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Client {
    /// `base_url` like `http://127.0.0.1:7878`.
    pub fn new(base_url: &str, token: &str, retry_window: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| CoordinatorError::Server(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client { http, base: base_url.trim_end_matches('/').to_string(), token: token.to_string(), retry_window })
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Req>,
    ) -> Result<Resp> {
        let url = format!("{}{path}", self.base);
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut request = self.http.request(method.clone(), &url).bearer_auth(&self.token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let last_error = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    return response
                        .json()
                        .await
                        .map_err(|e| CoordinatorError::Server(format!("{url}: unreadable answer: {e}")));
                }
                Ok(response) if response.status().is_client_error() => {
                    let status = response.status().as_u16();
                    let reason = match response.json::<ErrorBody>().await {
                        Ok(body) => body.error,
                        Err(_) => format!("HTTP {status}"),
                    };
                    return Err(CoordinatorError::Rejected { status, reason });
                }
                Ok(response) => format!("HTTP {}", response.status()),
                Err(e) => e.to_string(),
            };
            let waited = started.elapsed();
            if waited >= self.retry_window {
                return Err(CoordinatorError::Unreachable { url, seconds: waited.as_secs_f64(), last_error });
            }
            warn!(%url, error = %last_error, retry_in_ms = backoff.as_millis() as u64, "coordinator unreachable, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    pub async fn register(&self, name: &str, role: &str) -> Result<RegisterResponse> {
        let request = RegisterRequest { name: name.to_string(), role: role.to_string() };
        self.call(Method::POST, "/v1/register", Some(&request)).await
    }

    pub async fn lease(&self, worker_id: i64) -> Result<LeaseResponse> {
        self.call(Method::POST, "/v1/lease", Some(&LeaseRequest { worker_id })).await
    }

    pub async fn heartbeat(&self, lease_id: i64) -> Result<HeartbeatResponse> {
        self.call(Method::POST, "/v1/heartbeat", Some(&HeartbeatRequest { lease_id })).await
    }

    pub async fn complete(&self, request: &CompleteRequest) -> Result<CompleteResponse> {
        self.call(Method::POST, "/v1/complete", Some(request)).await
    }

    pub async fn status(&self) -> Result<StatusResponse> {
        self.call::<(), _>(Method::GET, "/v1/status", None).await
    }

    pub async fn train_join(&self, request: &JoinRequest) -> Result<JoinResponse> {
        self.call(Method::POST, "/v1/train/join", Some(request)).await
    }

    pub async fn train_world(&self, member_id: u64) -> Result<WorldResponse> {
        self.call(Method::POST, "/v1/train/world", Some(&WorldRequest { member_id })).await
    }

    pub async fn train_heartbeat(&self, heartbeat: &RankHeartbeat) -> Result<RankInstruction> {
        self.call(Method::POST, "/v1/train/heartbeat", Some(heartbeat)).await
    }

    pub async fn train_leave(&self, request: &LeaveRequest) -> Result<Empty> {
        self.call(Method::POST, "/v1/train/leave", Some(request)).await
    }

    pub async fn train_status(&self) -> Result<TrainStatus> {
        self.call::<(), _>(Method::GET, "/v1/train/status", None).await
    }
}
