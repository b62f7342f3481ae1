//! Who is calling: OAuth client authentication at the token endpoint, bearer tokens
//! everywhere else, and the exact refusals real backends send.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::time::Instant;

use crate::{ControlPlane, Issued, PlaneEvent};

/// A refusal, with the event it makes.
pub(crate) fn refuse(
    plane: &ControlPlane,
    path: &str,
    status: StatusCode,
    www: Option<&str>,
    body: serde_json::Value,
) -> Response {
    plane.emit(PlaneEvent::Refused {
        path: path.to_owned(),
        status: status.as_u16(),
        error: body["error"].as_str().unwrap_or("").to_owned(),
    });
    let mut response = (status, Json(body)).into_response();
    if let Some(value) = www.and_then(|v| v.parse().ok()) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The client behind a bearer token, or the refusal to send.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself
pub(crate) fn bearer_client(
    plane: &ControlPlane,
    path: &str,
    headers: &HeaderMap,
) -> Result<String, Response> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
    else {
        return Err(refuse(
            plane,
            path,
            StatusCode::UNAUTHORIZED,
            Some(r#"Bearer realm="hostbeat""#),
            json!({"error": "missing_token", "message": "No token provided"}),
        ));
    };
    let state = plane.state();
    let client_id = if let Some(issued) = state.tokens.get(token) {
        if Instant::now() >= issued.expires_at {
            drop(state);
            return Err(refuse(
                plane,
                path,
                StatusCode::UNAUTHORIZED,
                Some(
                    r#"Bearer error="invalid_token", error_description="The access token expired""#,
                ),
                json!({"error": "token_expired"}),
            ));
        }
        issued.client_id.clone()
    } else if let Some((id, _)) = state.clients.iter().find(|(_, c)| c.secret == token) {
        // Static mode: the client token itself is the bearer.
        id.clone()
    } else {
        drop(state);
        return Err(refuse(
            plane,
            path,
            StatusCode::UNAUTHORIZED,
            Some(r#"Bearer error="invalid_token""#),
            json!({"error": "Invalid client token"}),
        ));
    };
    let active = state.clients.get(&client_id).is_some_and(|c| c.active);
    drop(state);
    if !active {
        return Err(refuse(
            plane,
            path,
            StatusCode::FORBIDDEN,
            None,
            json!({"valid": false, "error": "client_inactive", "detail": "Client account is not active"}),
        ));
    }
    Ok(client_id)
}

/// The token endpoint: client credentials by HTTP Basic or form fields.
pub(crate) fn issue_token(
    plane: &ControlPlane,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Response {
    let path = plane.shared.config.paths.token.clone();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if field("grant_type").as_deref() != Some("client_credentials") {
        return refuse(
            plane,
            &path,
            StatusCode::BAD_REQUEST,
            None,
            json!({"error": "unsupported_grant_type"}),
        );
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            Some((form_decode(id), form_decode(secret)))
        });
    let credentials = basic.or_else(|| Some((field("client_id")?, field("client_secret")?)));
    let invalid_client = |description: &str| {
        refuse(
            plane,
            &path,
            StatusCode::UNAUTHORIZED,
            Some(r#"Basic realm="hostbeat""#),
            json!({"error": "invalid_client", "error_description": description}),
        )
    };
    let Some((client_id, secret)) = credentials else {
        return invalid_client("client authentication missing");
    };
    let (active, known) = {
        let state = plane.state();
        match state.clients.get(&client_id) {
            Some(c) if c.secret == secret => (c.active, true),
            _ => (false, false),
        }
    };
    if !known {
        return invalid_client("Invalid client credentials");
    }
    if !active {
        return invalid_client("Client account is not active");
    }
    let config = &plane.shared.config;
    let lifetime = config.token_lifetime;
    let jti = format!("{:016x}", crate::fastrand_u64());
    let access_token = if config.jwt {
        sign_jwt(plane, &client_id, &jti, lifetime)
    } else {
        format!("opaque-{jti}")
    };
    plane.state().tokens.insert(
        access_token.clone(),
        Issued {
            client_id: client_id.clone(),
            expires_at: Instant::now() + lifetime,
        },
    );
    plane.emit(PlaneEvent::TokenIssued {
        client_id,
        lifetime,
    });
    let mut body = json!({"access_token": access_token, "token_type": "Bearer"});
    if config.send_expires_in {
        body["expires_in"] = json!(lifetime.as_secs());
    }
    Json(body).into_response()
}

fn sign_jwt(
    plane: &ControlPlane,
    client_id: &str,
    jti: &str,
    lifetime: std::time::Duration,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        json!({"iss": "hostbeat-refplane", "sub": client_id, "iat": now, "exp": now + lifetime.as_secs(), "jti": jti})
            .to_string(),
    );
    let signing_input = format!("{header}.{claims}");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&plane.shared.signing_key).expect("any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// `application/x-www-form-urlencoded` decoding (RFC 6749 2.3.1 encodes Basic parts).
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
