//! Bearer tokens, compared so that neither timing nor length gives the token away.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiError;

/// The token of an `Authorization: Bearer <token>` header; the scheme's case does not
/// matter (RFC 9110 §11.1).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether the request carries `expected` as its bearer token. Both sides are hashed
/// first, so the comparison takes the same time whatever the given token's length.
pub fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    bearer_token(headers).is_some_and(|given| {
        let given = Sha256::digest(given.as_bytes());
        let expected = Sha256::digest(expected.as_bytes());
        bool::from(given.ct_eq(&expected))
    })
}

/// Checks the admin bearer token (`server.admin_token`, which guards the admin and queue
/// APIs), compared in constant time: 403 when the admin API is disabled (`expected` is
/// `None`), 401 with `WWW-Authenticate` for a missing or wrong token.
pub fn authorize_admin(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: set server.admin_token in the config",
        ));
    };
    if bearer_matches(headers, expected) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "missing or wrong admin token: send `Authorization: Bearer <server.admin_token>`",
        ))
    }
}

/// The state of a router whose handlers take [`Admin`]: where the admin token is.
pub trait AdminToken: Send + Sync + 'static {
    fn admin_token(&self) -> Option<&str>;
}

/// A request that carries the admin token ([`authorize_admin`]): an admin or queue API
/// handler takes it as an argument where it would read the headers, so the token is
/// checked before the handler reads anything else (body included).
pub struct Admin;

impl<T: AdminToken> FromRequestParts<Arc<T>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &Arc<T>,
    ) -> Result<Self, ApiError> {
        authorize_admin(state.admin_token(), &parts.headers).map(|()| Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_exact() {
        let token = "0123456789abcdef";
        for ok in [
            "Bearer 0123456789abcdef",
            "bearer 0123456789abcdef",
            "BEARER  0123456789abcdef ",
        ] {
            assert!(bearer_matches(&with(ok), token), "{ok}");
        }
        for wrong in [
            "Bearer 0123456789abcdeF",
            "Bearer 0123456789abcde",
            "Basic 0123456789abcdef",
            "Bearer",
            "0123456789abcdef",
        ] {
            assert!(!bearer_matches(&with(wrong), token), "{wrong}");
        }
        assert!(!bearer_matches(&HeaderMap::new(), token));
    }
}
