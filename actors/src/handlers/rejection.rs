//! [`Rejection`]: a handler's "no", answered to the client as an `error`.

use std::borrow::Cow;

/// The built-in error codes of the protocol, which an application's own
/// code must not reuse (but `forbidden`, `bad_request`, `unavailable` and
/// `unknown_method`, which a handler may answer through
/// [`Rejection::forbidden`], [`Rejection::bad_request`],
/// [`Rejection::unavailable`] and [`Rpc::unknown`](super::Rpc::unknown)).
const BUILT_IN: &[&str] = &[
    "bad_request",
    "invalid_room",
    "not_member",
    "forbidden",
    "rate_limited",
    "too_large",
    "unsupported",
    "unavailable",
    "unknown_method",
    "timeout",
];

/// The code answered in place of an application code that breaks the
/// protocol's rule (the handler's bug, logged with the code it gave).
pub const INVALID_CODE: &str = "handler_error";

/// A handler refusing a request: the client gets
/// `{"type":"error","id":…,"code":…,"message":…}` and the connection stays
/// open. Nothing of a refused request takes effect (no membership, no
/// offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    code: Cow<'static, str>,
    message: String,
}

impl Rejection {
    /// A refusal with the application's own `code`: `[a-z][a-z0-9_.-]{0,63}`,
    /// not one of the protocol's built-in codes (a code that breaks this
    /// rule reaches the client as `handler_error`, and is logged).
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// `forbidden`: the default refusal of a join.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new("forbidden", message)
    }

    /// `bad_request`: the request's `data` is not what the handler reads.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new("bad_request", message)
    }

    /// `unavailable`: what the handler needs (its database, say) is down;
    /// the client may try again.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new("unavailable", message)
    }

    /// `unknown_method`: the handler has no method `method`.
    pub fn unknown_method(method: &str) -> Self {
        Self::new("unknown_method", format!("no method '{method}'"))
    }

    /// The code, as given.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The code the client gets: the one given when the protocol allows it.
    pub fn wire_code(&self) -> &str {
        match &*self.code {
            "forbidden" | "bad_request" | "unavailable" | "unknown_method" => &self.code,
            code if application_code(code) => code,
            _ => INVALID_CODE,
        }
    }
}

/// `[a-z][a-z0-9_.-]{0,63}`, and not a built-in code.
fn application_code(code: &str) -> bool {
    let mut bytes = code.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && code.len() <= 64
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
        && !BUILT_IN.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_codes_follow_the_protocol() {
        for ok in ["printer_busy", "a", "x.y-z_1", &"a".repeat(64)] {
            assert_eq!(Rejection::new(ok.to_owned(), "m").wire_code(), ok);
        }
        for bad in [
            "",
            "Busy",
            "1x",
            "a b",
            "timeout",
            "not_member",
            &"a".repeat(65),
        ] {
            assert_eq!(
                Rejection::new(bad.to_owned(), "m").wire_code(),
                INVALID_CODE,
                "{bad}"
            );
        }
        assert_eq!(Rejection::forbidden("no").wire_code(), "forbidden");
        assert_eq!(Rejection::bad_request("no").wire_code(), "bad_request");
        assert_eq!(
            Rejection::unknown_method("x.y").wire_code(),
            "unknown_method"
        );
    }
}
