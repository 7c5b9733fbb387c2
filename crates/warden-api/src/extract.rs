//! Extractors: JSON bodies with clear errors, and the authenticated caller.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use warden_core::{Error, Role};
use warden_store::TokenRecord;

use crate::problem::Problem;
use crate::state::AppState;

/// A JSON body. Malformed JSON, unknown fields and wrong types are 400 with the JSON path of
/// the problem; bodies over the limit are 413; a non-JSON content type is 415.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        check_json_content_type(req.headers())?;
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`; anything else is parsed
/// as [`JsonBody`] would.
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        let content_type = check_json_content_type(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        content_type?;
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

pub fn check_json_content_type(headers: &axum::http::HeaderMap) -> Result<(), Problem> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !(ct.starts_with("application/json")
            || ct.starts_with("application/cloudevents-batch+json")
            || ct.contains("+json"))
        {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!("expected Content-Type application/json, got {ct}"),
            ));
        }
    }
    Ok(())
}

pub async fn read_body(req: Request, state: &AppState) -> Result<Bytes, Problem> {
    let limit = state.config.max_body_bytes;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large(limit));
    }
    let body = req.into_body();
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))
}

fn too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        format!(
            "request body is larger than the limit of {limit} bytes; split it into smaller requests"
        ),
    )
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = if inner.is_syntax() || inner.is_eof() {
            format!("request body is not valid JSON: {inner}")
        } else if path.is_empty() || path == "." {
            format!("request body does not match the expected shape: {inner}")
        } else {
            format!("invalid value at `{path}`: {inner}")
        };
        Problem::new(StatusCode::BAD_REQUEST, "invalid-json", detail)
    })
}

/// The authenticated caller: a live token of some tenant.
#[derive(Clone, Debug)]
pub struct Caller {
    pub token: TokenRecord,
}

impl Caller {
    pub fn require(&self, allowed: bool, what: &str) -> Result<(), Problem> {
        if allowed {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "a token with role {} may not {what}",
                self.token.role
            ))
            .into())
        }
    }

    /// A namespace this caller may act in: one of its tenant's (another tenant's namespace
    /// is reported as not found) and inside the token's scope, if it has one.
    pub fn check_namespace(&self, ns: &warden_core::NamespacePath) -> Result<(), Error> {
        if ns.tenant() != self.token.tenant {
            return Err(Error::not_found(format!("namespace {ns} not found")));
        }
        match &self.token.namespace {
            Some(scope) if !ns.is_within(scope) => Err(Error::forbidden(format!(
                "this token is confined to namespace {scope}; {ns} lies outside it"
            ))),
            _ => Ok(()),
        }
    }

    pub fn role(&self) -> Role {
        self.token.role
    }

    pub fn actor(&self) -> warden_core::Actor {
        warden_core::Actor {
            principal: None,
            agent: self.token.agent.clone(),
            on_behalf_of: self.token.on_behalf_of.clone(),
            session: (self.token.role == Role::Agent).then(|| self.token.id.clone()),
            token_id: Some(self.token.id.clone()),
            role: Some(self.token.role.as_str().to_owned()),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            Problem::from(Error::unauthenticated(
                "missing Authorization: Bearer <token> header",
            ))
        })?;
        let value = value.to_str().unwrap_or_default();
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Problem::from(Error::unauthenticated(
                    "Authorization header must be `Bearer <token>`",
                ))
            })?;
        let token = state
            .tokens
            .authenticate(state.store.as_ref(), secret)
            .await?;
        Ok(Caller { token })
    }
}

/// The peer address, when the server was started with connection info.
pub struct ClientAddr(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}
