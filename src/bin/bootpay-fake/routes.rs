//! HTTP routes: Bootpay's v2 endpoints and the `/_fake` control API.
//!
//! Every v2 handler runs the same steps, in this order: count the request, apply
//! `--latency-ms`, answer the outage page if one is on, check the bearer token, then (for
//! lookups and confirms) apply the receipt's fixture faults and the chaos draw. Counting comes
//! first so the stats show what a client sent, not only what succeeded.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State as Extract};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Number, Value, json};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::fixture;
use crate::reply::{self, ApiError};
use crate::state::{Chaos, Credentials, State};

/// Handlers answer `Err` for every refusal; both sides are finished responses.
type Reply = Result<Response, Response>;

/// Shared by all handlers.
pub struct App {
    /// Never held across an `.await`: handlers copy what they need out of it first.
    state: Mutex<State>,
    latency: Duration,
    chaos_timeout: Duration,
    /// Cancelled on shutdown so injected delays end early instead of delaying the exit.
    shutdown: CancellationToken,
}

impl App {
    pub fn new(
        state: State,
        latency: Duration,
        chaos_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            state: Mutex::new(state),
            latency,
            chaos_timeout,
            shutdown,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a panic elsewhere does not taint it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits `delay`, or answers 503 if the fake starts shutting down meanwhile.
    async fn delay(&self, delay: Duration) -> Result<(), Response> {
        if delay.is_zero() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.shutdown.cancelled() => {
                Err(ApiError::server_error(StatusCode::SERVICE_UNAVAILABLE).into())
            }
        }
    }

    /// The steps every `/v2` request goes through: the global latency, then the outage.
    async fn enter_v2(&self) -> Result<(), Response> {
        self.delay(self.latency).await?;
        if self.lock().outage {
            return Err(reply::outage());
        }
        Ok(())
    }

    /// Requires `Authorization: Bearer <token>` with a live token.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let mut state = self.lock();
        if bearer_token(headers).is_some_and(|token| state.token_valid(token, Instant::now())) {
            return Ok(());
        }
        state.counters.unauthorized += 1;
        Err(ApiError::invalid_access_token())
    }

    /// Applies the receipt's fixture faults, then the chaos draw, to a lookup or confirm.
    async fn receipt_faults(&self, receipt_id: &str) -> Result<(), Response> {
        let (latency, failure, chaos) = {
            let mut state = self.lock();
            let (latency, failure) = state.receipt_fault(receipt_id);
            (latency, failure, state.roll_chaos())
        };
        self.delay(latency).await?;
        if let Some(failure) = failure {
            let error = ApiError::server_error(failure.status);
            return Err(match failure.retry_after_secs {
                Some(secs) => error.retry_after(secs),
                None => error,
            }
            .into());
        }
        match chaos {
            None => Ok(()),
            Some(chaos) => Err(self.chaos_answer(chaos, receipt_id).await),
        }
    }

    async fn chaos_answer(&self, chaos: Chaos, receipt_id: &str) -> Response {
        tracing::debug!(?chaos, "Injecting a chaos fault.");
        let unavailable = || ApiError::server_error(StatusCode::SERVICE_UNAVAILABLE).into();
        match chaos {
            Chaos::Unavailable => unavailable(),
            Chaos::RateLimited => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "요청이 너무 많습니다. 잠시 후 다시 시도해 주세요.",
            )
            .retry_after(1)
            .into(),
            Chaos::Slow => match self.delay(self.chaos_timeout).await {
                Ok(()) => unavailable(),
                Err(response) => response,
            },
            Chaos::Truncated => reply::truncated(receipt_id),
            Chaos::BadGateway => reply::bad_gateway(),
        }
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v2/request/token", post(request_token))
        // The .NET SDK posts to the `.json` form.
        .route("/v2/request/token.json", post(request_token))
        .route("/v2/receipt/{receipt_id}", get(lookup_receipt))
        .route("/v2/confirm", post(confirm))
        .route("/v2/cancel", post(cancel))
        .route("/_fake/health", get(health))
        .route("/_fake/stats", get(stats))
        .route("/_fake/tokens/revoke", post(revoke_tokens))
        .route("/_fake/tokens/expire", post(revoke_tokens))
        .route("/_fake/credentials", put(set_credentials))
        .route("/_fake/outage", put(set_outage))
        .route("/_fake/echo", put(set_echo))
        .route("/_fake/requests", get(requests))
        .route("/_fake/chaos", put(set_chaos))
        .route("/_fake/receipts/{receipt_id}", put(put_receipt))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Records every request's method and path (as sent) for `GET /_fake/requests`, answers
/// `/v2` calls with a quoting refusal while echo is on, and logs method, path and status;
/// never headers, bodies or query strings, which can carry credentials and tokens.
async fn observe(Extract(app): Extract<Arc<App>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let echo = {
        let mut state = app.lock();
        state.log_request(method.as_str(), &path);
        state.echo && path.starts_with("/v2/")
    };
    let started = Instant::now();
    let response = if echo {
        reply::echo(request).await
    } else {
        next.run(request).await
    };
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "Request served."
    );
    response
}

// ---- Bootpay v2 ----

/// Token request body. Fields are optional so that a missing one is refused as bad
/// credentials (401) rather than as a malformed body.
#[derive(Default, Deserialize)]
struct TokenRequest {
    application_id: Option<String>,
    private_key: Option<String>,
}

async fn request_token(Extract(app): Extract<Arc<App>>, headers: HeaderMap, body: Bytes) -> Reply {
    app.lock().counters.token_requests += 1;
    app.enter_v2().await?;
    let credentials = parse_token_request(&headers, &body);
    let issued = app
        .lock()
        .request_token(
            credentials.application_id.as_deref(),
            credentials.private_key.as_deref(),
            Instant::now(),
        )
        .ok_or_else(ApiError::credentials_refused)?;
    let server_time = clock::unix_secs(SystemTime::now());
    let expire_in = issued.remaining.as_secs();
    Ok(Json(json!({
        "access_token": issued.access_token,
        "expire_in": expire_in,
        "server_time": server_time,
        "expired_at": server_time + expire_in,
    }))
    .into_response())
}

/// Reads JSON, or a form body as old clients send it.
fn parse_token_request(headers: &HeaderMap, body: &[u8]) -> TokenRequest {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return serde_json::from_slice(body).unwrap_or_default();
    }
    let mut request = TokenRequest::default();
    for (key, value) in url::form_urlencoded::parse(body) {
        match key.as_ref() {
            "application_id" => request.application_id = Some(value.into_owned()),
            "private_key" => request.private_key = Some(value.into_owned()),
            _ => {}
        }
    }
    request
}

/// `GET /v2/receipt/{id}`; query parameters such as `lookup_user_data` are ignored.
async fn lookup_receipt(
    Extract(app): Extract<Arc<App>>,
    Path(receipt_id): Path<String>,
    headers: HeaderMap,
) -> Reply {
    app.lock().count_lookup(&receipt_id);
    app.enter_v2().await?;
    app.authorize(&headers)?;
    app.receipt_faults(&receipt_id).await?;
    let receipt = app.lock().receipt(&receipt_id).cloned();
    let receipt = receipt.ok_or_else(ApiError::receipt_not_found)?;
    Ok(Json(receipt).into_response())
}

#[derive(Deserialize)]
struct ConfirmRequest {
    receipt_id: String,
}

async fn confirm(Extract(app): Extract<Arc<App>>, headers: HeaderMap, body: Bytes) -> Reply {
    let request = parse_json::<ConfirmRequest>(&body);
    let receipt_id = request.as_ref().ok().map(|r| r.receipt_id.as_str());
    app.lock().count_confirm(receipt_id);
    app.enter_v2().await?;
    app.authorize(&headers)?;
    let request = request?;
    app.receipt_faults(&request.receipt_id).await?;
    let receipt = app.lock().confirm(&request.receipt_id, SystemTime::now())?;
    Ok(Json(receipt).into_response())
}

/// Cancel request body; Bootpay's other optional fields (`cancel_id`, `cancel_message`, ...)
/// are accepted and ignored.
#[derive(Deserialize)]
struct CancelRequest {
    receipt_id: String,
    #[serde(default)]
    cancel_price: Option<Number>,
}

/// `POST /v2/cancel`. Not subject to fixture faults or chaos, which model lookup and confirm
/// trouble only.
async fn cancel(Extract(app): Extract<Arc<App>>, headers: HeaderMap, body: Bytes) -> Reply {
    let request = parse_json::<CancelRequest>(&body);
    let receipt_id = request.as_ref().ok().map(|r| r.receipt_id.as_str());
    app.lock().count_cancel(receipt_id);
    app.enter_v2().await?;
    app.authorize(&headers)?;
    let request = request?;
    let cancel_price = request.cancel_price.as_ref();
    if cancel_price.is_some_and(|price| !price.as_f64().is_some_and(|p| p > 0.0)) {
        return Err(ApiError::invalid_request("cancel_price must be a positive amount").into());
    }
    let receipt = app
        .lock()
        .cancel(&request.receipt_id, cancel_price, SystemTime::now())?;
    Ok(Json(receipt).into_response())
}

/// Unknown routes and methods. Under `/v2` they go through latency and outage like any
/// Bootpay call.
async fn not_found(Extract(app): Extract<Arc<App>>, uri: Uri) -> Reply {
    let path = uri.path();
    if path == "/v2" || path.starts_with("/v2/") {
        app.enter_v2().await?;
    }
    Err(ApiError::route_not_found().into())
}

// ---- control API ----

async fn health() -> Json<Value> {
    Json(json!({ "ok": true }))
}

async fn stats(Extract(app): Extract<Arc<App>>) -> Json<Value> {
    Json(app.lock().stats())
}

/// Serves both `/tokens/revoke` and `/tokens/expire`: for a client both mean "my token is
/// refused with 401 and a new one must be requested".
async fn revoke_tokens(Extract(app): Extract<Arc<App>>) -> Json<Value> {
    let revoked = app.lock().revoke_tokens();
    tracing::info!(revoked, "Access tokens revoked.");
    Json(json!({ "revoked": revoked }))
}

async fn set_credentials(Extract(app): Extract<Arc<App>>, body: Bytes) -> Reply {
    let credentials: Credentials = parse_json(&body)?;
    app.lock().set_credentials(credentials);
    tracing::info!("Accepted credentials changed.");
    Ok(Json(json!({ "ok": true })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutageRequest {
    down: bool,
}

async fn set_outage(Extract(app): Extract<Arc<App>>, body: Bytes) -> Reply {
    let OutageRequest { down } = parse_json(&body)?;
    app.lock().outage = down;
    tracing::info!(down, "Outage switched.");
    Ok(Json(json!({ "down": down })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoRequest {
    on: bool,
}

async fn set_echo(Extract(app): Extract<Arc<App>>, body: Bytes) -> Reply {
    let EchoRequest { on } = parse_json(&body)?;
    app.lock().echo = on;
    tracing::info!(on, "Echo switched.");
    Ok(Json(json!({ "on": on })).into_response())
}

async fn requests(Extract(app): Extract<Arc<App>>) -> Json<Value> {
    Json(json!({ "requests": app.lock().requests() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChaosRequest {
    rate: f64,
}

async fn set_chaos(Extract(app): Extract<Arc<App>>, body: Bytes) -> Reply {
    let ChaosRequest { rate } = parse_json(&body)?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(ApiError::invalid_request("rate must be between 0 and 1").into());
    }
    app.lock().chaos_rate = rate;
    tracing::info!(rate, "Chaos rate changed.");
    Ok(Json(json!({ "rate": rate })).into_response())
}

/// Inserts or replaces a receipt; a body without `receipt_id` takes the one in the path.
async fn put_receipt(
    Extract(app): Extract<Arc<App>>,
    Path(receipt_id): Path<String>,
    body: Bytes,
) -> Reply {
    let mut value: Value = parse_json(&body)?;
    if let Value::Object(object) = &mut value {
        object
            .entry("receipt_id")
            .or_insert_with(|| receipt_id.clone().into());
    }
    let spec = fixture::parse_receipt(value)
        .map_err(|error| ApiError::invalid_request(error.to_string()))?;
    if spec.id != receipt_id {
        return Err(
            ApiError::invalid_request("receipt_id in the body differs from the path").into(),
        );
    }
    let created = app.lock().upsert(spec);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "receipt_id": receipt_id, "created": created })),
    )
        .into_response())
}

// ---- helpers ----

/// Parses a JSON body, answering a Bootpay-shaped 400 instead of axum's plain-text rejection.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::invalid_request(format!("invalid JSON body: {error}")))
}

/// The token from `Authorization: Bearer <token>`. A bare token (the v1 style) is refused.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
