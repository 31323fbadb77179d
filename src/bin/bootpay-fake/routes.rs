//! HTTP routes: Bootpay's v2 endpoints under `/v2`, its legacy v1 endpoints at the root,
//! and the `/_fake` control API.
//!
//! Every change of a receipt queues its webhooks under the store's lock, so each payload is
//! the receipt exactly as that change left it, and the API answer never waits for a receiver:
//! confirms (v1: submits), cancels (either dialect, or the control API unless `silent`),
//! deposits, and receipts put in place as paid or as an issued virtual account. A repeated
//! `cancel_id`, a silent cancel and an expiry send nothing.
//!
//! Both dialects share the receipts, the tokens, the counters, the latency, the outage and
//! the faults; they differ only in shapes and in how a call authenticates. Every handler runs
//! the same steps, in this order: count the request, apply `--latency-ms`, answer the outage
//! page if one is on, check the caller's credentials, then (for lookups and confirms — v1's
//! submits) apply the receipt's fixture faults and the chaos draw. Counting comes first so the
//! stats show what a client sent, not only what succeeded.
//!
//! v2 takes `Authorization: Bearer <token>` or `Basic base64(client_key:secret_key)` and
//! answers bare objects; v1 takes the raw token as `Authorization: <token>`, bodies as forms
//! or JSON, paths with or without `.json`, and answers `{status, code, message, data}` with
//! the HTTP status equal to `status`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State as Extract};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value, json};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::fixture;
use crate::reply::{self, ApiError, Dialect};
use crate::state::{
    Amount, CancelOutcome, CancelRequest, Cancelled, Chaos, CredentialsUpdate, STATUS_PAID,
    STATUS_VBANK_ISSUED, State,
};
use crate::v1;
use crate::webhook::{TargetsUpdate, WebhookType, Webhooks};

/// Handlers answer `Err` for every refusal; both sides are finished responses.
type Reply = Result<Response, Response>;

/// Shared by all handlers.
pub struct App {
    /// Never held across an `.await`: handlers copy what they need out of it first.
    state: Mutex<State>,
    webhooks: Arc<Webhooks>,
    latency: Duration,
    chaos_timeout: Duration,
    /// Cancelled on shutdown so injected delays end early instead of delaying the exit.
    shutdown: CancellationToken,
}

impl App {
    pub fn new(
        state: State,
        webhooks: Arc<Webhooks>,
        latency: Duration,
        chaos_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            state: Mutex::new(state),
            webhooks,
            latency,
            chaos_timeout,
            shutdown,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a panic elsewhere does not taint it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the webhooks for a change of `receipt`, with the merchant keys v1 feedback
    /// carries. Called with the store locked, right after the change.
    fn announce(&self, state: &State, kind: WebhookType, receipt: &Map<String, Value>) {
        let credentials = state.credentials();
        self.webhooks.send(
            kind,
            receipt,
            &credentials.application_id,
            &credentials.private_key,
        );
    }

    /// Server confirm, then its `PAYMENT_COMPLETED` webhooks.
    fn confirm(&self, receipt_id: &str) -> Result<Map<String, Value>, ApiError> {
        let mut state = self.lock();
        let receipt = state.confirm(receipt_id, SystemTime::now())?;
        self.announce(&state, WebhookType::PaymentCompleted, &receipt);
        Ok(receipt)
    }

    /// A cancel by either dialect or the control API, then its webhooks unless `silent` (a
    /// cancel in the PG's console) or the `cancel_id` was already seen.
    fn cancel(
        &self,
        receipt_id: &str,
        request: &CancelRequest,
        silent: bool,
    ) -> Result<Cancelled, ApiError> {
        let mut state = self.lock();
        let cancelled = state.cancel(receipt_id, request, SystemTime::now())?;
        let kind = match cancelled.outcome {
            CancelOutcome::Full => Some(WebhookType::PaymentCancelled),
            CancelOutcome::Partial => Some(WebhookType::PaymentPartialCancelled),
            CancelOutcome::Repeated => None,
        };
        if let Some(kind) = kind.filter(|_| !silent) {
            self.announce(&state, kind, &cancelled.receipt);
        }
        Ok(cancelled)
    }

    /// Waits `delay`, or answers 503 if the fake starts shutting down meanwhile.
    async fn delay(&self, delay: Duration, dialect: Dialect) -> Result<(), Response> {
        if delay.is_zero() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.shutdown.cancelled() => {
                Err(ApiError::server_error(StatusCode::SERVICE_UNAVAILABLE).render(dialect))
            }
        }
    }

    /// The steps every Bootpay request goes through: the global latency, then the outage.
    async fn enter(&self, dialect: Dialect) -> Result<(), Response> {
        self.delay(self.latency, dialect).await?;
        if self.lock().outage {
            return Err(reply::outage());
        }
        Ok(())
    }

    /// v2: requires `Authorization: Bearer <token>` with a live token, or `Basic` with the
    /// accepted client key and secret key. A wrong Basic pair is refused as Bootpay refuses
    /// keys (`TOKEN_KEY_INVALID`), anything else as a bad token.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let mut state = self.lock();
        let refusal = match authorization(headers) {
            Some((Scheme::Bearer, token)) if state.token_valid(token, Instant::now()) => {
                return Ok(());
            }
            Some((Scheme::Basic, encoded)) if state.basic_valid(encoded) => return Ok(()),
            Some((Scheme::Basic, _)) => ApiError::basic_refused(),
            _ => ApiError::invalid_access_token(),
        };
        state.counters.unauthorized += 1;
        Err(refusal)
    }

    /// v1: requires the raw token as `Authorization: <token>`. A value with a scheme in
    /// front (`Bearer ...`) is refused like a bad token, as v1 never took one.
    fn authorize_v1(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::trim);
        let mut state = self.lock();
        if token
            .is_some_and(|token| !token.contains(' ') && state.token_valid(token, Instant::now()))
        {
            return Ok(());
        }
        state.counters.unauthorized += 1;
        Err(ApiError::invalid_access_token())
    }

    /// Applies the receipt's fixture faults, then the chaos draw, to a lookup or confirm.
    async fn receipt_faults(&self, receipt_id: &str, dialect: Dialect) -> Result<(), Response> {
        let (latency, failure, chaos) = {
            let mut state = self.lock();
            let (latency, failure) = state.receipt_fault(receipt_id);
            (latency, failure, state.roll_chaos())
        };
        self.delay(latency, dialect).await?;
        if let Some(failure) = failure {
            let error = ApiError::server_error(failure.status);
            let error = match failure.retry_after_secs {
                Some(secs) => error.retry_after(secs),
                None => error,
            };
            return Err(error.render(dialect));
        }
        match chaos {
            None => Ok(()),
            Some(chaos) => Err(self.chaos_answer(chaos, receipt_id, dialect).await),
        }
    }

    async fn chaos_answer(&self, chaos: Chaos, receipt_id: &str, dialect: Dialect) -> Response {
        tracing::debug!(?chaos, "Injecting a chaos fault.");
        let unavailable =
            || ApiError::server_error(StatusCode::SERVICE_UNAVAILABLE).render(dialect);
        match chaos {
            Chaos::Unavailable => unavailable(),
            Chaos::RateLimited => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "요청이 너무 많습니다. 잠시 후 다시 시도해 주세요.",
            )
            .retry_after(1)
            .render(dialect),
            Chaos::Slow => match self.delay(self.chaos_timeout, dialect).await {
                Ok(()) => unavailable(),
                Err(response) => response,
            },
            Chaos::Truncated => reply::truncated(dialect, receipt_id),
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
        // v1 SDKs disagree on the `.json` suffix, so every v1 path takes it or not; the
        // receipt route strips it from the id.
        .route("/request/token", post(v1_request_token))
        .route("/request/token.json", post(v1_request_token))
        .route("/receipt/{receipt_id}", get(v1_lookup_receipt))
        .route("/submit", post(v1_submit))
        .route("/submit.json", post(v1_submit))
        .route("/cancel", post(v1_cancel))
        .route("/cancel.json", post(v1_cancel))
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
        .route("/_fake/receipts/{receipt_id}/deposit", post(deposit))
        .route("/_fake/receipts/{receipt_id}/cancel", post(control_cancel))
        .route("/_fake/receipts/{receipt_id}/expire", post(expire))
        .route(
            "/_fake/webhooks",
            get(webhook_log).put(set_webhooks).delete(clear_webhook_log),
        )
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
    app.enter(Dialect::V2).await?;
    let credentials = parse_token_request(&headers, &body);
    let wall = SystemTime::now();
    let issued = app
        .lock()
        .request_token(
            credentials.application_id.as_deref(),
            credentials.private_key.as_deref(),
            Instant::now(),
            wall,
        )
        .ok_or_else(ApiError::credentials_refused)?;
    Ok(Json(json!({
        "access_token": issued.access_token,
        "expire_in": issued.remaining.as_secs(),
        "server_time": clock::unix_secs(wall),
        "expired_at": issued.expired_at,
    }))
    .into_response())
}

/// Reads JSON, or a form body as old clients send it.
fn parse_token_request(headers: &HeaderMap, body: &[u8]) -> TokenRequest {
    if !is_form(headers) {
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
    app.enter(Dialect::V2).await?;
    app.authorize(&headers)?;
    app.receipt_faults(&receipt_id, Dialect::V2).await?;
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
    app.enter(Dialect::V2).await?;
    app.authorize(&headers)?;
    let request = request?;
    app.receipt_faults(&request.receipt_id, Dialect::V2).await?;
    let receipt = app.confirm(&request.receipt_id)?;
    Ok(Json(receipt).into_response())
}

/// v2 cancel body; Bootpay's other optional fields (`cancel_username`, `cancel_message`,
/// `metadata`, `refund`, ...) are accepted and ignored. SDKs send `null` for what they leave
/// out, and python sends `cancel_id: ""`, which counts as no id.
#[derive(Deserialize)]
struct V2CancelRequest {
    receipt_id: String,
    #[serde(default)]
    cancel_price: Option<Number>,
    #[serde(default)]
    cancel_tax_free: Option<Number>,
    #[serde(default)]
    cancel_id: Option<String>,
}

/// `POST /v2/cancel`: answers the receipt after the cancel (or as it is, for a `cancel_id`
/// already seen). Not subject to fixture faults or chaos, which model lookup and confirm
/// trouble only.
async fn cancel(Extract(app): Extract<Arc<App>>, headers: HeaderMap, body: Bytes) -> Reply {
    let request = parse_json::<V2CancelRequest>(&body);
    let receipt_id = request.as_ref().ok().map(|r| r.receipt_id.as_str());
    app.lock().count_cancel(receipt_id);
    app.enter(Dialect::V2).await?;
    app.authorize(&headers)?;
    let request = request?;
    let cancel = CancelRequest {
        amount: amount(request.cancel_price.as_ref(), "cancel_price")?,
        tax_free: amount(request.cancel_tax_free.as_ref(), "cancel_tax_free")?,
        cancel_id: request.cancel_id,
    };
    let cancelled = app.cancel(&request.receipt_id, &cancel, false)?;
    Ok(Json(cancelled.receipt).into_response())
}

// ---- Bootpay v1 ----

fn v1_error(error: ApiError) -> Response {
    error.render(Dialect::V1)
}

/// `POST /request/token`: v2's token (same store, same reuse rule) in v1's envelope.
async fn v1_request_token(
    Extract(app): Extract<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    app.lock().counters.token_requests += 1;
    app.enter(Dialect::V1).await?;
    let fields = v1::fields(content_type(&headers), &body);
    let wall = SystemTime::now();
    let issued = app
        .lock()
        .request_token(
            v1::text(&fields, "application_id").as_deref(),
            v1::text(&fields, "private_key").as_deref(),
            Instant::now(),
            wall,
        )
        .ok_or_else(|| v1_error(ApiError::credentials_refused()))?;
    Ok(reply::envelope(json!({
        "token": issued.access_token,
        "server_time": clock::unix_secs(wall),
        "expired_at": issued.expired_at,
    })))
}

/// `GET /receipt/{id}`: the receipt in v1's shape.
async fn v1_lookup_receipt(
    Extract(app): Extract<Arc<App>>,
    Path(receipt_id): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let receipt_id = receipt_id.strip_suffix(".json").unwrap_or(&receipt_id);
    app.lock().count_lookup(receipt_id);
    app.enter(Dialect::V1).await?;
    app.authorize_v1(&headers).map_err(v1_error)?;
    app.receipt_faults(receipt_id, Dialect::V1).await?;
    let receipt = app.lock().receipt(receipt_id).map(v1::receipt);
    let receipt = receipt.ok_or_else(|| v1_error(ApiError::receipt_not_found()))?;
    Ok(reply::envelope(receipt))
}

/// `POST /submit`: v1's server confirm, with v2's rules; answers the receipt after.
async fn v1_submit(Extract(app): Extract<Arc<App>>, headers: HeaderMap, body: Bytes) -> Reply {
    let fields = v1::fields(content_type(&headers), &body);
    let receipt_id = v1::text(&fields, "receipt_id");
    app.lock().count_confirm(receipt_id.as_deref());
    app.enter(Dialect::V1).await?;
    app.authorize_v1(&headers).map_err(v1_error)?;
    let receipt_id = receipt_id.ok_or_else(|| v1_error(receipt_id_required()))?;
    app.receipt_faults(&receipt_id, Dialect::V1).await?;
    let receipt = app.confirm(&receipt_id).map_err(v1_error)?;
    Ok(reply::envelope(v1::receipt(&receipt)))
}

/// `POST /cancel`: `price` for a partial cancel, `tax_free`, `cancel_id`; `name` and
/// `reason` are accepted and ignored. Answers v1's cancel data. Like v2's cancel, not
/// subject to faults or chaos.
async fn v1_cancel(Extract(app): Extract<Arc<App>>, headers: HeaderMap, body: Bytes) -> Reply {
    let fields = v1::fields(content_type(&headers), &body);
    let receipt_id = v1::text(&fields, "receipt_id");
    app.lock().count_cancel(receipt_id.as_deref());
    app.enter(Dialect::V1).await?;
    app.authorize_v1(&headers).map_err(v1_error)?;
    let receipt_id = receipt_id.ok_or_else(|| v1_error(receipt_id_required()))?;
    let amount = |name| v1::amount(&fields, name).map_err(ApiError::invalid_request);
    let request = CancelRequest {
        amount: amount("price").map_err(v1_error)?,
        tax_free: amount("tax_free").map_err(v1_error)?,
        cancel_id: v1::text(&fields, "cancel_id"),
    };
    let cancelled = app.cancel(&receipt_id, &request, false).map_err(v1_error)?;
    Ok(reply::envelope(cancelled.data))
}

fn receipt_id_required() -> ApiError {
    ApiError::invalid_request("receipt_id is required")
}

/// Unknown routes and methods: v2's error under `/v2`, v1's envelope at the root, both after
/// latency and outage like any Bootpay call; v2's error, at once, under `/_fake`.
async fn not_found(Extract(app): Extract<Arc<App>>, uri: Uri) -> Reply {
    let path = uri.path();
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if under("/_fake") {
        return Err(ApiError::route_not_found().into());
    }
    let dialect = if under("/v2") {
        Dialect::V2
    } else {
        Dialect::V1
    };
    app.enter(dialect).await?;
    Err(ApiError::route_not_found().render(dialect))
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

/// Replaces the accepted credentials: any of `application_id`, `private_key`, `client_key`
/// and `secret_key`; those left out stay as they are.
async fn set_credentials(Extract(app): Extract<Arc<App>>, body: Bytes) -> Reply {
    let update: CredentialsUpdate = parse_json(&body)?;
    app.lock().update_credentials(update);
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
/// Put in place as paid (1) it sends `PAYMENT_COMPLETED`, as an issued virtual account (5)
/// `PAYMENT_VIRTUAL_ACCOUNT_ISSUED` (v2 only), unless the query says `webhook=false`.
async fn put_receipt(
    Extract(app): Extract<Arc<App>>,
    Path(receipt_id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Reply {
    let announce = webhook_switch(query.as_deref())?;
    let mut value: Value = parse_json(&body)?;
    if let Value::Object(object) = &mut value {
        object
            .entry("receipt_id")
            .or_insert_with(|| receipt_id.clone().into());
    }
    let spec = fixture::parse_receipt(value, SystemTime::now())
        .map_err(|error| ApiError::invalid_request(error.to_string()))?;
    if spec.id != receipt_id {
        return Err(
            ApiError::invalid_request("receipt_id in the body differs from the path").into(),
        );
    }
    let kind = match spec.body.get("status").and_then(Value::as_i64) {
        Some(STATUS_PAID) => Some(WebhookType::PaymentCompleted),
        Some(STATUS_VBANK_ISSUED) => Some(WebhookType::VirtualAccountIssued),
        _ => None,
    };
    let created = {
        let mut state = app.lock();
        let receipt = spec.body.clone();
        let created = state.upsert(spec);
        if let Some(kind) = kind.filter(|_| announce) {
            app.announce(&state, kind, &receipt);
        }
        created
    };
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

/// `webhook=true|false` in a control query; the only parameter taken, true unless given.
fn webhook_switch(query: Option<&str>) -> Result<bool, ApiError> {
    let mut announce = true;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match (key.as_ref(), value.as_ref()) {
            ("webhook", "true") => announce = true,
            ("webhook", "false") => announce = false,
            ("webhook", _) => {
                return Err(ApiError::invalid_request("webhook must be true or false"));
            }
            (other, _) => {
                return Err(ApiError::invalid_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    Ok(announce)
}

/// The buyer deposits into an issued virtual account: status 5 becomes 1, with
/// `PAYMENT_COMPLETED` webhooks. Answers the receipt after, in v2's shape.
async fn deposit(Extract(app): Extract<Arc<App>>, Path(receipt_id): Path<String>) -> Reply {
    let receipt = {
        let mut state = app.lock();
        let receipt = state.deposit(&receipt_id, SystemTime::now())?;
        app.announce(&state, WebhookType::PaymentCompleted, &receipt);
        receipt
    };
    tracing::info!(receipt_id, "Virtual account paid.");
    Ok(Json(receipt).into_response())
}

/// The virtual account's due date passes. Bootpay sends nothing for it, and neither does
/// the fake. Answers the receipt after.
async fn expire(Extract(app): Extract<Arc<App>>, Path(receipt_id): Path<String>) -> Reply {
    let receipt = app.lock().expire(&receipt_id, SystemTime::now())?;
    tracing::info!(receipt_id, "Virtual account expired.");
    Ok(Json(receipt).into_response())
}

/// Control cancel body: an amount (none cancels what remains), its tax-free part, an id, and
/// whether it happens in the PG's console, where Bootpay hears nothing and sends nothing.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlCancelRequest {
    #[serde(default)]
    price: Option<Number>,
    #[serde(default)]
    tax_free: Option<Number>,
    #[serde(default)]
    cancel_id: Option<String>,
    #[serde(default)]
    silent: bool,
}

/// A cancel as a merchant's admin or a PG console makes it: the API cancel's rules and
/// answers (the receipt after, in v2's shape), not counted as an API request.
async fn control_cancel(
    Extract(app): Extract<Arc<App>>,
    Path(receipt_id): Path<String>,
    body: Bytes,
) -> Reply {
    let request: ControlCancelRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ControlCancelRequest::default()
    } else {
        parse_json(&body)?
    };
    let cancel = CancelRequest {
        amount: amount(request.price.as_ref(), "price")?,
        tax_free: amount(request.tax_free.as_ref(), "tax_free")?,
        cancel_id: request.cancel_id,
    };
    let cancelled = app.cancel(&receipt_id, &cancel, request.silent)?;
    tracing::info!(
        receipt_id,
        silent = request.silent,
        "Receipt cancelled outside the API."
    );
    Ok(Json(cancelled.receipt).into_response())
}

async fn webhook_log(Extract(app): Extract<Arc<App>>) -> Json<Value> {
    Json(app.webhooks.log())
}

/// Changes the webhook targets: `v2_url` and `v1_url` (`null` removes one) and
/// `v1_content_type` (`form` or `json`); fields left out stay. Answers the targets in force.
async fn set_webhooks(Extract(app): Extract<Arc<App>>, body: Bytes) -> Reply {
    let update: TargetsUpdate = parse_json(&body)?;
    let targets = app
        .webhooks
        .update_targets(update)
        .map_err(ApiError::invalid_request)?;
    tracing::info!(
        v2 = targets.v2_url.is_some(),
        v1 = targets.v1_url.is_some(),
        "Webhook targets changed."
    );
    Ok(Json(targets.to_json()).into_response())
}

async fn clear_webhook_log(Extract(app): Extract<Arc<App>>) -> Json<Value> {
    Json(json!({ "cleared": app.webhooks.clear() }))
}

// ---- helpers ----

/// An optional amount field of a JSON body; `name` is for the refusal.
fn amount(number: Option<&Number>, name: &str) -> Result<Option<Amount>, ApiError> {
    number
        .map(|number| {
            Amount::from_number(number)
                .ok_or_else(|| ApiError::invalid_request(format!("{name} must be a number")))
        })
        .transpose()
}

/// Parses a JSON body, answering a Bootpay-shaped 400 instead of axum's plain-text rejection.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::invalid_request(format!("invalid JSON body: {error}")))
}

enum Scheme {
    Bearer,
    Basic,
}

/// The scheme and credentials of `Authorization: Bearer <token>` or `Basic <base64>`. A bare
/// token (the v1 style) or another scheme is `None`.
fn authorization(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    if credentials.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((Scheme::Bearer, credentials))
    } else if scheme.eq_ignore_ascii_case("basic") {
        Some((Scheme::Basic, credentials))
    } else {
        None
    }
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(CONTENT_TYPE)?.to_str().ok()
}

fn is_form(headers: &HeaderMap) -> bool {
    content_type(headers)
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"))
}
