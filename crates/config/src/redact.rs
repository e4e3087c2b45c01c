//! Safe forms of values that may carry credentials, for messages, logs, metrics, dead-letter
//! headers and admin answers.
//!
//! * [`url`]: the password of the userinfo and every query and fragment value become
//!   `***`; scheme, user name, host, port, path and parameter names stay, so a message
//!   still says where and what.
//! * [`dsn`]: a URL as above, or a libpq `key=value` string with its secret values masked.
//! * [`is_secret_name`] / [`header_value`]: names like `authorization`, `cookie`,
//!   `*token*`, `*secret*`, `*password*`, `*signature*`, `*key*` hold secrets.
//! * [`text`]: free text (an error message) with every URL in it and every
//!   `secret_name=value` pair masked.
//! * [`scrub`]: free text with known secret values replaced, for messages of libraries
//!   that quote the values they were given.
//!
//! The URL parser here is deliberately tolerant and string-based rather than the `url`
//! crate's: the values that most need masking are the ones that do not parse (a typo in
//! the port of `https://user:pass@host:80a/`), and a strict parser has no safe form of
//! those to offer.

use std::borrow::Cow;

/// What a hidden value is replaced with.
pub const MASK: &str = "***";

/// Header names that are never secrets although they match a secret-like word: they carry
/// the event's own key and the producer's deduplication id, which users need to see.
const PUBLIC_NAMES: &[&str] = &["idempotency-key", "x-key", "x-switchyard-key"];

/// Whether a header, option or config key with this name holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if PUBLIC_NAMES.contains(&name.as_str()) {
        return false;
    }
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "dsn" | "pass"
    ) || [
        "token",
        "secret",
        "password",
        "passwd",
        "signature",
        "key",
        "credential",
        "auth",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// Schemes whose userinfo without a `:` is a secret token, not a user name
/// (`nats://TOKEN@host:4222`).
pub const TOKEN_SCHEMES: &[&str] = &["nats://", "tls://", "ws://", "wss://"];

/// `value` when `name` is not a secret's name, else [`MASK`].
pub fn header_value<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    if is_secret_name(name) {
        Cow::Borrowed(MASK)
    } else {
        Cow::Borrowed(value)
    }
}

/// The safe form of a URL (also of one that does not parse): userinfo password → `***`
/// (the user name stays), every query and fragment value → `***` (names stay). In the
/// schemes of [`TOKEN_SCHEMES`] a user name alone is a token and is masked too.
///
/// `https://user:pw@example.com/hook?token=abc&v=1` →
/// `https://user:***@example.com/hook?token=***&v=***`.
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Fragment first: it may hold `access_token=…` and may itself contain `?`.
    let (before_fragment, fragment) = match text.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (text, None),
    };
    let (before_query, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    match before_query.find("://") {
        Some(at) => {
            let (scheme, rest) = before_query.split_at(at + 3);
            out.push_str(scheme);
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            // The last `@` ends the userinfo: a password may contain `@` unescaped.
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    match userinfo.split_once(':') {
                        Some((user, _password)) => {
                            out.push_str(user);
                            out.push(':');
                            out.push_str(MASK);
                        }
                        None if TOKEN_SCHEMES.contains(&scheme) => out.push_str(MASK),
                        None => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        push_masked_pairs(&mut out, query);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        push_masked_pairs(&mut out, fragment);
    }
    out
}

/// `a=1&b=2` → `a=***&b=***`; an item without `=` may itself be a token: masked.
fn push_masked_pairs(out: &mut String, pairs: &str) {
    for (index, pair) in pairs.split('&').enumerate() {
        if index > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) => {
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
            }
            None if pair.is_empty() => {}
            None => out.push_str(MASK),
        }
    }
}

/// The safe form of a Postgres connection string: [`url`] for the URL form; for the
/// `key=value` form every value of a secret-named key is masked (`password='…'` too).
pub fn dsn(text: &str) -> String {
    if text.contains("://") {
        url(text)
    } else {
        mask_secret_pairs(text).into_owned()
    }
}

/// Free text with every URL (`scheme://…` up to white space or a quote) in its [`url`]
/// form and every `secret_name=value` word masked. Text without either comes back
/// borrowed.
pub fn text(text: &str) -> Cow<'_, str> {
    let urls = mask_urls(text);
    match mask_secret_pairs(&urls) {
        Cow::Borrowed(_) => urls,
        Cow::Owned(masked) => Cow::Owned(masked),
    }
}

/// `text` with every occurrence of each non-empty `secret` replaced by [`MASK`].
pub fn scrub<'a, 's>(text: &'a str, secrets: impl IntoIterator<Item = &'s str>) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for secret in secrets {
        // Very short values would mask ordinary words; they are not worth hiding.
        if secret.len() >= 3 && out.contains(secret) {
            out = Cow::Owned(out.replace(secret, MASK));
        }
    }
    out
}

fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')' | ']' | '}' | ',')
}

fn mask_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme: letters, digits, `+`, `-`, `.` right before `://`.
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..].find(ends_url).map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Masks the value of every `name=value` word whose name is a secret's; a value may be
/// single-quoted (libpq) and then runs to the closing quote.
fn mask_secret_pairs(text: &str) -> Cow<'_, str> {
    if !text.contains('=') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let name_start = rest[..eq]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let name = &rest[name_start..eq];
        out.push_str(&rest[..=eq]);
        let after = &rest[eq + 1..];
        if name.is_empty() || !is_secret_name(name) {
            rest = after;
            continue;
        }
        let value_len = if let Some(quoted) = after.strip_prefix('\'') {
            // libpq: `\'` inside quotes is a quote.
            let mut len = 1;
            let mut chars = quoted.char_indices();
            loop {
                match chars.next() {
                    Some((_, '\\')) => {
                        chars.next();
                    }
                    Some((i, '\'')) => {
                        len += i + 1;
                        break;
                    }
                    Some(_) => {}
                    None => {
                        len += quoted.len();
                        break;
                    }
                }
            }
            len
        } else {
            after
                .find(|c: char| c.is_whitespace() || matches!(c, '&' | ';' | ',') || ends_url(c))
                .unwrap_or(after.len())
        };
        if value_len > 0 {
            out.push_str(MASK);
            changed = true;
        }
        rest = &after[value_len..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_masks_password_and_query_values() {
        assert_eq!(
            url("https://user:PASSWORD456@example.com:8443/hook?token=SECRETVALUE123&v=1#frag"),
            "https://user:***@example.com:8443/hook?token=***&v=***#***"
        );
        assert_eq!(
            url("http://127.0.0.1:9/x?a=1&&b"),
            "http://127.0.0.1:9/x?a=***&&***"
        );
        // Nothing secret: unchanged.
        assert_eq!(
            url("https://example.com/hooks/orders"),
            "https://example.com/hooks/orders"
        );
        // A user name alone stays; a password with `@` and `/` in it goes entirely.
        assert_eq!(url("https://bot@example.com/"), "https://bot@example.com/");
        // ... but where a user name alone is a token, it goes.
        assert_eq!(
            url("nats://s3cr3t-token@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(url("tls://tok@nats.example"), "tls://***@nats.example");
        assert_eq!(
            url("postgres://app:p@ss@db:5432/shop"),
            "postgres://app:***@db:5432/shop"
        );
        // Values that do not parse as URLs are masked all the same.
        assert_eq!(
            url("ftp://u:hunter2@host:80a/?k=v"),
            "ftp://u:***@host:80a/?k=***"
        );
        assert_eq!(url("example.com/?token=abc"), "example.com/?token=***");
    }

    #[test]
    fn dsn_key_value_form() {
        assert_eq!(
            dsn("host=db user=app password=hunter2 dbname=shop"),
            "host=db user=app password=*** dbname=shop"
        );
        assert_eq!(
            dsn("host=db password='a b\\' c' dbname=shop"),
            "host=db password=*** dbname=shop"
        );
        assert_eq!(
            dsn("postgresql://app:hunter2@db/shop?sslpassword=x"),
            "postgresql://app:***@db/shop?sslpassword=***"
        );
    }

    #[test]
    fn secret_names() {
        for name in [
            "Authorization",
            "cookie",
            "X-Api-Key",
            "x-auth-token",
            "webhook-signature",
            "sasl.password",
            "ssl.key.password",
            "client_secret",
            "admin_token",
            "dsn",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "content-type",
            "x-switchyard-source",
            "idempotency-key",
            "x-switchyard-key",
            "x-trace",
            "url",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
        assert_eq!(header_value("Authorization", "Bearer abc"), MASK);
        assert_eq!(header_value("x-trace", "abc"), "abc");
    }

    #[test]
    fn text_masks_urls_and_pairs_inside_messages() {
        let message = "http://u:PASSWORD456@127.0.0.1:1/hook?token=SECRETVALUE123 answered 500 Internal Server Error: (empty body)";
        let masked = text(message);
        assert_eq!(
            masked,
            "http://u:***@127.0.0.1:1/hook?token=*** answered 500 Internal Server Error: (empty body)"
        );
        assert_eq!(
            text("cannot reach \"https://h/x?sig=abc\", password=hunter2; retrying"),
            "cannot reach \"https://h/x?sig=***\", password=***; retrying"
        );
        assert_eq!(
            text("error sending request for url (https://u:pw@h/x?token=abc)"),
            "error sending request for url (https://u:***@h/x?token=***)"
        );
        assert!(matches!(
            text("plain message, x=1"),
            Cow::Borrowed("plain message, x=1")
        ));
    }

    #[test]
    fn scrub_replaces_known_values() {
        assert_eq!(
            scrub(
                "Invalid value \"s3cr3t\" for configuration property \"sasl.password\"",
                ["s3cr3t", ""]
            ),
            "Invalid value \"***\" for configuration property \"sasl.password\""
        );
    }
}
