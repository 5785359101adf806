//! Every HTTP error becomes a JSON body `{"code","message"}` here, and only
//! here: [`ApiError`] for errors our handlers return, [`json_errors`] for the
//! ones actix-web produces itself (404, 405, 413, ...). Headers already on
//! the response (CORS, `X-Request-Id`) are kept.

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// The JSON body of every HTTP error.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`not_found`, `method_not_allowed`, ...).
    pub code: &'static str,
    /// A sentence for a human.
    pub message: String,
}

/// Errors the handlers return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (e.g. not a WebSocket handshake).
    #[error("{0}")]
    BadRequest(String),
    /// A missing, invalid or expired token.
    #[error("{0}")]
    Unauthorized(String),
    /// Not allowed (e.g. an origin outside the allow-list).
    #[error("{0}")]
    Forbidden(String),
    /// No route, or no such actor.
    #[error("{0}")]
    NotFound(String),
    /// The request does not apply to the resource as it is now.
    #[error("{0}")]
    Conflict(String),
    /// A dependency of the request is down or restarting; safe to retry.
    #[error("{0}")]
    Unavailable(String),
}

impl From<holdfast_actors::supervision::SupervisionError> for ApiError {
    fn from(e: holdfast_actors::supervision::SupervisionError) -> Self {
        use holdfast_actors::supervision::SupervisionError as E;
        let message = e.to_string();
        match e {
            E::NoSuchChild(name) => ApiError::NotFound(format!("no actor named '{name}'")),
            E::DuplicateName(_) | E::NotApplicable { .. } => ApiError::Conflict(message),
            E::ShuttingDown | E::SupervisorDown(_) => ApiError::Unavailable(message),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut res = HttpResponse::build(status);
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: tell the client which scheme to use.
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        res.json(ErrorBody {
            code: code_for(status),
            message: self.to_string(),
        })
    }
}

/// The error code for an HTTP status.
pub fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        406 => "not_acceptable",
        408 => "request_timeout",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        429 => "rate_limited",
        431 => "headers_too_large",
        501 => "not_implemented",
        503 => "unavailable",
        504 => "gateway_timeout",
        s if s >= 500 => "internal",
        _ => "client_error",
    }
}

/// `ErrorHandlers` callback: gives any error response without a JSON body
/// one, keeping status and headers.
///
/// # Errors
/// Never; the signature is actix-web's.
pub fn json_errors<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let message = match status {
        StatusCode::NOT_FOUND => {
            format!(
                "no route for {} {}",
                res.request().method(),
                res.request().path()
            )
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            format!(
                "{} is not allowed on {}",
                res.request().method(),
                res.request().path()
            )
        }
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let body = serde_json::to_string(&ErrorBody {
        code: code_for(status),
        message,
    })
    .unwrap_or_else(|_| String::from("{}"));
    let res = res.map_body(|head, _| {
        head.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        head.headers.remove(header::CONTENT_LENGTH);
        EitherBody::<B, BoxBody>::right(BoxBody::new(body))
    });
    Ok(ErrorHandlerResponse::Response(res))
}
