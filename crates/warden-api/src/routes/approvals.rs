//! Approval requests for the people who answer them: list, read, approve, deny.

use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warden_core::{
    Approval, ApprovalAnswer, ApprovalChannel, ApprovalStatus, Error, NamespacePath,
};
use warden_store::ApprovalFilter;

use crate::approvals::{api_answerer, as_of};
use crate::extract::{Caller, OptionalJsonBody};
use crate::problem::{ApiResult, Problem};
use crate::query::QueryParams;
use crate::routes::audit::{DEFAULT_PAGE, MAX_PAGE};
use crate::state::AppState;

/// Longest comment accepted with an answer, in bytes.
pub const MAX_COMMENT_BYTES: usize = 4096;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApprovalQuery {
    /// `pending`, `approved`, `denied`, `expired` (including pending requests past their
    /// expiry) or `consumed`.
    pub status: Option<ApprovalStatus>,
    /// A namespace and everything below it.
    pub namespace: Option<String>,
    /// Page size (default 100, at most 1,000).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApprovalPage {
    /// Newest first. `status` is as of now: a pending request past its expiry is `expired`.
    pub approvals: Vec<Approval>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// Why; kept with the approval and in the audit event.
    #[serde(default)]
    pub comment: Option<String>,
}

fn can_read(caller: &Caller) -> Result<(), Problem> {
    caller.require(caller.role().can_read_approvals(), "read approval requests")
}

fn parse_cursor(c: &Option<String>) -> Result<Option<Uuid>, Problem> {
    c.as_deref()
        .map(|c| {
            Uuid::parse_str(c)
                .map_err(|_| Error::invalid("`cursor` is not one this API returned").into())
        })
        .transpose()
}

#[utoipa::path(
    get, path = "/api/v1/approvals", tag = "approvals", params(ApprovalQuery),
    responses((status = 200, description = "Newest first, keyset-paginated", body = ApprovalPage),
              (status = 400, description = "Bad filter", body = Problem),
              (status = 403, description = "Role may not read approvals, or namespace outside the token's scope", body = Problem)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ApprovalQuery>,
) -> ApiResult<Json<ApprovalPage>> {
    can_read(&caller)?;
    let namespace = match &q.namespace {
        Some(ns) => {
            let ns = NamespacePath::parse(ns)?;
            caller.check_namespace(&ns)?;
            Some(ns)
        }
        None => caller.token.namespace.clone(),
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let now = Utc::now();
    let filter = ApprovalFilter {
        status: q.status,
        namespace,
        before: parse_cursor(&q.cursor)?,
        limit,
        now,
    };
    let rows = state
        .store
        .list_approvals(&caller.token.tenant, &filter)
        .await?;
    let next_cursor = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|a| a.id.to_string()))
        .flatten();
    Ok(Json(ApprovalPage {
        approvals: rows.into_iter().map(|a| as_of(a, now)).collect(),
        next_cursor,
    }))
}

/// The approval, if it is the caller's tenant's and inside the token's scope; 404 otherwise
/// (another tenant's approval looks like one that does not exist).
async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<Approval, Problem> {
    let not_found = || Problem::from(Error::not_found(format!("approval {id} not found")));
    let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
    let a = state
        .store
        .get_approval(&caller.token.tenant, uuid)
        .await?
        .ok_or_else(not_found)?;
    if let Some(scope) = &caller.token.namespace {
        let ns = NamespacePath::parse(&a.namespace).map_err(|_| not_found())?;
        if !ns.is_within(scope) {
            return Err(not_found());
        }
    }
    Ok(a)
}

#[utoipa::path(
    get, path = "/api/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "Approval id (UUID)")),
    responses((status = 200, body = Approval), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Approval>> {
    can_read(&caller)?;
    Ok(Json(as_of(find(&state, &caller, &id).await?, Utc::now())))
}

#[utoipa::path(
    post, path = "/api/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = String, Path, description = "Approval id (UUID)")),
    request_body(content = AnswerBody, description = "Optional; an empty body is no comment"),
    responses(
        (status = 200, description = "Recorded and in force: the held action may proceed once", body = Approval),
        (status = 403, description = "Role may not answer approvals", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Already answered, or expired", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<AnswerBody>,
) -> ApiResult<Json<Approval>> {
    answer(&state, &caller, &id, true, body).await.map(Json)
}

#[utoipa::path(
    post, path = "/api/v1/approvals/{id}/deny", tag = "approvals",
    params(("id" = String, Path, description = "Approval id (UUID)")),
    request_body(content = AnswerBody, description = "Optional; an empty body is no comment"),
    responses(
        (status = 200, description = "Recorded; the held action does not proceed", body = Approval),
        (status = 403, description = "Role may not answer approvals", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Already answered, or expired", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn deny(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<AnswerBody>,
) -> ApiResult<Json<Approval>> {
    answer(&state, &caller, &id, false, body).await.map(Json)
}

async fn answer(
    state: &AppState,
    caller: &Caller,
    id: &str,
    approve: bool,
    body: AnswerBody,
) -> Result<Approval, Problem> {
    caller.require(
        caller.role().can_answer_approvals(),
        "answer approval requests",
    )?;
    if body
        .comment
        .as_ref()
        .is_some_and(|c| c.len() > MAX_COMMENT_BYTES)
    {
        return Err(Error::invalid(format!(
            "`comment` is longer than {MAX_COMMENT_BYTES} bytes"
        ))
        .into());
    }
    let approval = find(state, caller, id).await?;
    let answer = ApprovalAnswer {
        approve,
        by: api_answerer(&caller.token.id),
        via: ApprovalChannel::Api,
        comment: body.comment.filter(|c| !c.trim().is_empty()),
    };
    let answered = state
        .approvals
        .answer_as(&caller.token.tenant, approval.id, answer, caller.actor())
        .await?;
    Ok(as_of(answered, Utc::now()))
}
