//! The protocol routes (protocol.md section 2) and the `/admin/` control routes.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{bearer_client, issue_token, refuse};
use crate::{ControlPlane, Fault, HeartbeatRecord, PlaneEvent, Scope};

pub(crate) fn router(plane: ControlPlane) -> Router {
    let paths = plane.shared.config.paths.clone();
    Router::new()
        .route(&paths.token, post(token))
        .route(&paths.register, post(register))
        .route(&paths.heartbeat, post(heartbeat))
        .route(&paths.validate, get(validate))
        .route("/admin/clients/{id}/deactivate", post(admin_deactivate))
        .route("/admin/clients/{id}/activate", post(admin_activate))
        .route("/admin/clients/{id}/rotate", post(admin_rotate))
        .route("/admin/clients/{id}", post(admin_add))
        .route("/admin/fault", post(admin_fault).delete(admin_clear_fault))
        .route("/admin/forget-agents", post(admin_forget))
        .route("/admin/expire-tokens", post(admin_expire))
        .route("/admin/revoke-tokens", post(admin_revoke))
        .route("/admin/requests", get(admin_requests))
        .route("/admin/heartbeats", get(admin_heartbeats))
        .route("/admin/requests", delete(admin_requests))
        .with_state(plane)
}

async fn token(State(plane): State<ControlPlane>, headers: HeaderMap, body: String) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded_pairs(&body);
    issue_token(&plane, &headers, &form)
}

fn serde_urlencoded_pairs(body: &str) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{body}").parse().unwrap_or_default(),
    )
    .map(|q| q.0)
    .unwrap_or_default()
}

#[derive(Deserialize)]
struct RegisterBody {
    logical_agent_id: String,
    hostname: String,
    agent_version: String,
    /// Where known: `{"cloud", "id", ...}` (protocol.md section 2).
    #[serde(default)]
    instance: Option<serde_json::Value>,
}

async fn register(State(plane): State<ControlPlane>, headers: HeaderMap, body: String) -> Response {
    let path = plane.shared.config.paths.register.clone();
    if let Err(refusal) = bearer_client(&plane, &path, &headers) {
        return refusal;
    }
    let Ok(body) = serde_json::from_str::<RegisterBody>(&body) else {
        return refuse(
            &plane,
            &path,
            StatusCode::BAD_REQUEST,
            None,
            json!({"error": "invalid_request", "detail": "logical_agent_id, hostname and agent_version are required"}),
        );
    };
    let instance_well_formed = body.instance.as_ref().is_none_or(|instance| {
        matches!(instance["cloud"].as_str(), Some("ec2" | "gcp" | "azure"))
            && instance["id"].as_str().is_some_and(|id| !id.is_empty())
    });
    if body.logical_agent_id.is_empty()
        || body.hostname.is_empty()
        || body.agent_version.is_empty()
        || !instance_well_formed
    {
        return refuse(
            &plane,
            &path,
            StatusCode::BAD_REQUEST,
            None,
            json!({"error": "invalid_request"}),
        );
    }
    let (agent_id, new) = {
        let mut state = plane.state();
        if let Some(id) = state.agents.get(&body.logical_agent_id) {
            (id.clone(), false)
        } else {
            let id = format!("agt-{:04}", state.next_agent);
            state.next_agent += 1;
            state
                .agents
                .insert(body.logical_agent_id.clone(), id.clone());
            (id, true)
        }
    };
    plane.emit(PlaneEvent::Registered {
        agent_id: agent_id.clone(),
        new,
    });
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(json!({"agent_id": agent_id}))).into_response()
}

async fn heartbeat(
    State(plane): State<ControlPlane>,
    Path(agent_id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = plane
        .shared
        .config
        .paths
        .heartbeat
        .replace("{agent_id}", &agent_id);
    let client_id = match bearer_client(&plane, &path, &headers) {
        Ok(id) => id,
        Err(refusal) => return refusal,
    };
    if !plane.state().agents.values().any(|id| *id == agent_id) {
        return refuse(
            &plane,
            &path,
            StatusCode::NOT_FOUND,
            None,
            json!({"error": "unknown_agent", "detail": "Agent not found"}),
        );
    }
    let Ok(body) = serde_json::from_str::<serde_json::Value>(&body) else {
        return refuse(
            &plane,
            &path,
            StatusCode::BAD_REQUEST,
            None,
            json!({"error": "invalid_request", "detail": "body is not JSON"}),
        );
    };
    let well_formed = body["seq"].is_u64()
        && matches!(
            body["status"].as_str(),
            Some("online" | "terminating" | "offline")
        )
        && body["sent_at"].is_string()
        && body["uptime_s"].is_u64();
    if !well_formed {
        return refuse(
            &plane,
            &path,
            StatusCode::BAD_REQUEST,
            None,
            json!({"error": "invalid_request", "detail": "status, seq, sent_at and uptime_s are required"}),
        );
    }
    // protocol.md section 2: a notice names its cloud, what it does and when.
    let notice = &body["interruption"];
    let notice_well_formed = notice.is_null()
        || (matches!(notice["source"].as_str(), Some("ec2" | "gcp" | "azure"))
            && notice["action"].is_string()
            && notice["time"]
                .as_str()
                .is_some_and(|t| humantime::parse_rfc3339_weak(t).is_ok()));
    if !notice_well_formed {
        return refuse(
            &plane,
            &path,
            StatusCode::BAD_REQUEST,
            None,
            json!({"error": "invalid_request", "detail": "interruption needs source (ec2, gcp or azure), action and time (RFC 3339)"}),
        );
    }
    let record = HeartbeatRecord {
        at_ms: plane.now_ms(),
        agent_id,
        client_id,
        bearer: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned(),
        body,
    };
    plane.state().heartbeats.push(record.clone());
    plane.emit(PlaneEvent::Heartbeat(record));
    let mut answer = json!({"success": true});
    if let Some(next) = plane.shared.config.next_heartbeat_in {
        answer["next_heartbeat_in"] = json!(next);
    }
    Json(answer).into_response()
}

async fn validate(State(plane): State<ControlPlane>, headers: HeaderMap) -> Response {
    let path = plane.shared.config.paths.validate.clone();
    match bearer_client(&plane, &path, &headers) {
        Ok(client_id) => {
            let name = plane
                .state()
                .clients
                .get(&client_id)
                .map(|c| c.name.clone());
            Json(json!({"valid": true, "client_id": client_id, "name": name})).into_response()
        }
        Err(refusal) => refusal,
    }
}

async fn admin_deactivate(State(plane): State<ControlPlane>, Path(id): Path<String>) -> StatusCode {
    plane.deactivate(&id);
    StatusCode::NO_CONTENT
}

async fn admin_activate(State(plane): State<ControlPlane>, Path(id): Path<String>) -> StatusCode {
    plane.activate(&id);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct SecretBody {
    secret: String,
}

async fn admin_rotate(
    State(plane): State<ControlPlane>,
    Path(id): Path<String>,
    Json(body): Json<SecretBody>,
) -> StatusCode {
    plane.rotate(&id, &body.secret);
    StatusCode::NO_CONTENT
}

async fn admin_add(
    State(plane): State<ControlPlane>,
    Path(id): Path<String>,
    Json(body): Json<SecretBody>,
) -> StatusCode {
    plane.add_client(&id, &body.secret);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct FaultBody {
    fault: Fault,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    times: Option<u32>,
}

async fn admin_fault(State(plane): State<ControlPlane>, Json(body): Json<FaultBody>) -> StatusCode {
    plane.set_fault(body.fault, body.scope, body.times);
    StatusCode::NO_CONTENT
}

async fn admin_clear_fault(State(plane): State<ControlPlane>) -> StatusCode {
    plane.clear_fault();
    StatusCode::NO_CONTENT
}

async fn admin_forget(State(plane): State<ControlPlane>) -> StatusCode {
    plane.forget_agents();
    StatusCode::NO_CONTENT
}

async fn admin_expire(State(plane): State<ControlPlane>) -> StatusCode {
    plane.expire_tokens();
    StatusCode::NO_CONTENT
}

async fn admin_revoke(State(plane): State<ControlPlane>) -> StatusCode {
    plane.revoke_tokens();
    StatusCode::NO_CONTENT
}

async fn admin_requests(State(plane): State<ControlPlane>) -> Response {
    Json(plane.requests()).into_response()
}

async fn admin_heartbeats(State(plane): State<ControlPlane>) -> Response {
    Json(plane.heartbeats()).into_response()
}
