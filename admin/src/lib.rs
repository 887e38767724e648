//! Admin HTTP API for a Sundial scheduler: a mountable [axum] router.
//!
//! [`router`] returns an `axum::Router` that an application nests into its own
//! (`app.nest("/sundial", router)`) or serves alone. It manages jobs (list,
//! show, add, modify, pause, resume, run now, remove), shows the run ledger,
//! the live nodes and the registered tasks, previews trigger fire times, and
//! reports health and metrics. `GET /openapi.json` describes every route.
//! `GET ui/jobs` is a dashboard of the same in HTML (signed in with a token
//! kept in an `HttpOnly; SameSite=Strict` cookie).
//!
//! Requests carry a bearer token: an *admin* token may do everything, a
//! *viewer* token only reads (`GET`, and `POST /triggers/preview`). Tokens are
//! compared in constant time. `GET /healthz` needs no token. A router with no
//! token refuses to build unless [`AdminConfig::allow_anonymous`] says so (for
//! a listener on loopback only). No CORS headers are sent.
//!
//! Errors are JSON: `{"error": {"code": "not_found", "message": "..."}}` with
//! status 400 (malformed request), 401 (no or wrong token), 403 (viewer token
//! on a write), 404 (unknown job or route), 409 (duplicate id, changed
//! concurrently), 413 (body over the limit), 415 (not JSON), 422 (invalid
//! trigger, task, arguments or field), 503 (scheduler stopped, store away).
//!
//! ```no_run
//! # async fn demo(scheduler: sundial_core::scheduler::Scheduler) -> Result<(), Box<dyn std::error::Error>> {
//! use sundial_admin::{router, AdminConfig};
//!
//! let admin = router(
//!     scheduler,
//!     AdminConfig::new().admin_token(std::env::var("SUNDIAL_ADMIN_TOKEN")?),
//! )?;
//! let app = axum::Router::new().nest("/sundial", admin);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod error;
mod info;
mod jobs;
mod openapi;
mod ui;
mod view;

use std::fmt;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use sundial_core::scheduler::Scheduler;

pub use axum::Router;
pub use error::ApiError;
pub use view::{job_json, node_json, parse_since, run_json};

/// The largest request body accepted by default (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Reads and writes.
    Admin,
    /// Reads only.
    Viewer,
}

type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// How the admin router authenticates and what it serves.
#[derive(Clone, Default)]
pub struct AdminConfig {
    tokens: Vec<(String, Role)>,
    anonymous: bool,
    body_limit: Option<usize>,
    metrics: Option<Render>,
    pub(crate) public_origin: Option<String>,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("anonymous", &self.anonymous)
            .field("body_limit", &self.body_limit)
            .field("metrics", &self.metrics.is_some())
            .field("public_origin", &self.public_origin)
            .finish()
    }
}

impl AdminConfig {
    /// No tokens yet: add some, or allow anonymous access.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` for reads and writes.
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push((token.into(), Role::Admin));
        self
    }

    /// Accepts `token` for reads only.
    pub fn viewer_token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push((token.into(), Role::Viewer));
        self
    }

    /// Serves requests without a token as admin. Only for a router reachable
    /// from this machine alone (bound to loopback).
    pub fn allow_anonymous(mut self) -> Self {
        self.anonymous = true;
        self
    }

    /// Rejects request bodies larger than `bytes` with 413 (default 1 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = Some(bytes);
        self
    }

    /// Serves `GET /metrics` with what `render` returns (Prometheus text
    /// format), such as `PrometheusHandle::render` of `metrics-exporter-prometheus`.
    pub fn metrics(mut self, render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.metrics = Some(Arc::new(render));
        self
    }

    /// The origin browsers reach the dashboard at (`https://ops.example.com`),
    /// for the same-origin check of its forms behind a proxy that rewrites
    /// `Host`; by default the request's `Host` is the origin.
    pub fn public_origin(mut self, origin: impl Into<String>) -> Self {
        self.public_origin = Some(origin.into());
        self
    }

    pub(crate) fn role_of(&self, token: Option<&str>) -> Option<Role> {
        let Some(token) = token else {
            return self.anonymous.then_some(Role::Admin);
        };
        // Every token is compared, so the time taken says nothing of which matched.
        let mut found = None;
        for (t, role) in &self.tokens {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) && found != Some(Role::Admin) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) scheduler: Scheduler,
    pub(crate) config: Arc<AdminConfig>,
}

/// The admin routes over `scheduler`, guarded as `config` says.
///
/// # Errors
/// [`sundial_core::Error::Config`] when no token is configured and anonymous
/// access was not allowed, or a token is empty.
pub fn router(scheduler: Scheduler, config: AdminConfig) -> sundial_core::Result<Router> {
    if config.tokens.is_empty() && !config.anonymous {
        return Err(sundial_core::Error::Config(
            "the admin router needs a token (AdminConfig::admin_token / viewer_token), or AdminConfig::allow_anonymous() for a loopback-only listener".into(),
        ));
    }
    if config.tokens.iter().any(|(t, _)| t.trim().is_empty()) {
        return Err(sundial_core::Error::Config(
            "an admin or viewer token is empty".into(),
        ));
    }
    let limit = config.body_limit.unwrap_or(DEFAULT_BODY_LIMIT);
    let app = App {
        scheduler,
        config: Arc::new(config),
    };
    let guarded = Router::new()
        .route("/jobs", get(jobs::list).post(jobs::add))
        .route(
            "/jobs/{id}",
            get(jobs::show).patch(jobs::modify).delete(jobs::remove),
        )
        .route("/jobs/{id}/pause", post(jobs::pause))
        .route("/jobs/{id}/resume", post(jobs::resume))
        .route("/jobs/{id}/run", post(jobs::run))
        .route("/jobs/{id}/runs", get(info::job_runs))
        .route("/jobs/{id}/next", get(jobs::next))
        .route("/runs", get(info::runs))
        .route("/triggers/preview", post(info::preview))
        .route("/tasks", get(info::tasks))
        .route("/nodes", get(info::nodes))
        .route("/metrics", get(info::metrics))
        .route("/openapi.json", get(openapi::document))
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize));
    let dashboard = Router::new()
        .route("/ui/jobs", get(ui::jobs))
        .route("/ui/job", get(ui::job))
        .route("/ui/runs", get(ui::runs))
        .route("/ui/nodes", get(ui::nodes))
        .route("/ui/action", post(ui::action))
        .route("/ui/add", get(ui::add_page).post(ui::add))
        .route("/ui/edit", get(ui::edit_page).post(ui::edit))
        .route("/ui/logout", post(ui::logout))
        .route_layer(middleware::from_fn_with_state(app.clone(), ui::signed_in))
        .route("/ui", get(|| async { Redirect::to("ui/jobs") }))
        .route("/ui/", get(|| async { Redirect::to("jobs") }))
        .route("/ui/login", get(ui::login_form).post(ui::login))
        .layer(middleware::map_response(no_framing));
    Ok(Router::new()
        .route("/healthz", get(info::healthz))
        .merge(guarded)
        .merge(dashboard)
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app))
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish.
///
/// # Errors
/// The listener's I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Lets a request through when its token's role allows it.
async fn authorize(State(app): State<App>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(role) = app.config.role_of(token) else {
        let message = if token.is_some() {
            "the bearer token is not valid"
        } else {
            "this route needs an `Authorization: Bearer <token>` header"
        };
        let mut res = ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            message,
        )
        .into_response();
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return res;
    };
    // The route template, not the request path: a job id cannot pose as it.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let reads =
        matches!(*req.method(), Method::GET | Method::HEAD) || route.ends_with("/triggers/preview");
    if role == Role::Viewer && !reads {
        return ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "a viewer token may only read; this needs an admin token",
        )
        .into_response();
    }
    next.run(req).await
}

/// Dashboard pages are not to be shown in frames (clickjacking).
async fn no_framing(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    res
}

async fn no_route(req: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "no_route",
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn no_method(req: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        let c = AdminConfig::new().viewer_token("v").admin_token("a");
        assert_eq!(c.role_of(Some("a")), Some(Role::Admin));
        assert_eq!(c.role_of(Some("v")), Some(Role::Viewer));
        assert_eq!(c.role_of(Some("x")), None);
        assert_eq!(c.role_of(None), None);
        assert_eq!(
            AdminConfig::new().allow_anonymous().role_of(None),
            Some(Role::Admin)
        );
    }
}
