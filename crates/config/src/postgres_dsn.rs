//! The TLS settings of a Postgres connection string (`dsn` of a `postgres_cdc` source).
//!
//! The `dsn` carries `sslmode` and `sslrootcert` with libpq's names and meanings, in
//! either form libpq accepts (`postgres://…?sslmode=verify-full&sslrootcert=/ca.pem`
//! or `host=… sslmode=verify-full sslrootcert=/ca.pem`). The Postgres client the source
//! uses for SQL understands neither `verify-ca`/`verify-full` nor `sslrootcert`, so
//! [`split_tls`] takes them out of the string and returns them typed; the rest of the
//! string goes to the client unchanged. [`database`] names the database a `dsn` connects
//! to (sinks writing Debezium's format show it). Pure: the certificate file is not read
//! here.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, plaintext otherwise; the certificate is not
    /// checked (libpq's default, and so the default here).
    Prefer,
    /// TLS or no connection. The certificate is checked only when `sslrootcert` is
    /// given (then like `verify-ca`, as libpq does).
    Require,
    /// TLS; the server's certificate chain must lead to `sslrootcert`.
    VerifyCa,
    /// Like `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    pub const NAMES: &'static [&'static str] =
        &["disable", "prefer", "require", "verify-ca", "verify-full"];

    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// No plaintext fallback.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// libpq's `sslrootcert`: the certificates the server's chain must lead to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of CA certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the well-known public CAs (the Mozilla root set bundled
    /// with switchyard). As with libpq, only with `sslmode=verify-full`.
    System,
}

/// What the connection string asks of TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresTls {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
}

impl PostgresTls {
    /// Whether the certificate chain is checked against [`PostgresTls::root_cert`]:
    /// `verify-ca`, `verify-full`, and `require` with a root certificate (libpq).
    pub fn verifies_chain(&self) -> bool {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => self.root_cert.is_some(),
            SslMode::Disable | SslMode::Prefer => false,
        }
    }

    /// Whether the certificate must name the host connected to.
    pub fn verifies_host(&self) -> bool {
        self.mode == SslMode::VerifyFull
    }
}

impl fmt::Display for PostgresTls {
    /// `sslmode=… sslrootcert=…`, as written in the connection string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sslmode={}", self.mode.as_str())?;
        match &self.root_cert {
            Some(RootCert::File(path)) => write!(f, " sslrootcert={}", path.display()),
            Some(RootCert::System) => write!(f, " sslrootcert=system"),
            None => Ok(()),
        }
    }
}

/// A connection string without its TLS parameters, and those parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitDsn {
    /// The connection string without `sslmode` and `sslrootcert`.
    pub dsn: String,
    pub tls: PostgresTls,
}

/// libpq TLS parameters switchyard does not implement: refused with a message rather
/// than silently connecting with less than was asked for.
const UNSUPPORTED: &[&str] = &[
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslnegotiation",
];

/// Takes `sslmode` and `sslrootcert` out of `dsn`. Errors are sentences that say
/// what to write instead.
pub fn split_tls(dsn: &str) -> Result<SplitDsn, String> {
    let (rest, params) = match url_body(dsn) {
        Some(_) => split_url(dsn)?,
        None => split_key_values(dsn)?,
    };
    let mut mode = None;
    let mut root_cert = None;
    for (key, value) in params {
        match key.as_str() {
            "sslmode" => {
                mode = Some(SslMode::parse(&value).ok_or_else(|| {
                    format!(
                        "unknown sslmode={value:?} in the connection string: use one of {}",
                        SslMode::NAMES.join(", ")
                    )
                })?);
            }
            "sslrootcert" if value == "system" => root_cert = Some(RootCert::System),
            "sslrootcert" if value.is_empty() => root_cert = None,
            "sslrootcert" => root_cert = Some(RootCert::File(PathBuf::from(value))),
            other => {
                return Err(format!(
                    "{other} in the connection string is not supported: switchyard connects \
                     without client certificates and with the standard TLS negotiation; \
                     remove {other}"
                ));
            }
        }
    }
    let tls = PostgresTls {
        mode: mode.unwrap_or(SslMode::Prefer),
        root_cert,
    };
    match (&tls.mode, &tls.root_cert) {
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(format!(
                "sslmode={} checks the server's certificate, so it needs the CA that signed \
                 it: add sslrootcert=/path/to/ca.pem to the connection string (or \
                 sslrootcert=system for a certificate from a public CA), or use \
                 sslmode=require to encrypt without checking",
                tls.mode.as_str()
            ));
        }
        (mode, Some(RootCert::System)) if *mode != SslMode::VerifyFull => {
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full (a public CA signs certificates \
                 for anyone, so only the host name check makes it safe); sslmode={} is too \
                 weak",
                mode.as_str()
            ));
        }
        _ => {}
    }
    Ok(SplitDsn { dsn: rest, tls })
}

/// The part after `postgres://` or `postgresql://`, for a URL.
fn url_body(dsn: &str) -> Option<&str> {
    ["postgres://", "postgresql://"]
        .iter()
        .find_map(|prefix| dsn.strip_prefix(prefix))
}

fn is_tls_key(key: &str) -> bool {
    key == "sslmode" || key == "sslrootcert" || UNSUPPORTED.contains(&key)
}

/// URL form: the query parameters after `?` (percent-encoded). The credentials come
/// first and end at the first `@` (a `?` in a password is not the query).
fn split_url(dsn: &str) -> Result<(String, Vec<(String, String)>), String> {
    let body = url_body(dsn).expect("checked by the caller");
    let prefix_len = dsn.len() - body.len();
    let after_credentials = body.find('@').map_or(0, |at| at + 1);
    let Some(q) = body[after_credentials..].find('?') else {
        return Ok((dsn.to_owned(), Vec::new()));
    };
    let query_start = prefix_len + after_credentials + q;
    let (head, query) = (&dsn[..query_start], &dsn[query_start + 1..]);
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let key = decode(key)?;
        if is_tls_key(&key) {
            taken.push((key, decode(value)?));
        } else {
            kept.push(param);
        }
    }
    let rest = if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    Ok((rest, taken))
}

fn decode(text: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| {
            "the connection string has a percent-encoded value that is not UTF-8".to_owned()
        })
}

/// Key-value form: `key=value` pairs separated by spaces; a value may be quoted with
/// `'…'`, and `\` escapes the next character (libpq's rules).
fn key_values(dsn: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            if chars.peek().is_some() {
                return Err(
                    "the connection string has `=` without a key before it: write \
                     key=value pairs, e.g. host=db.example.com sslmode=verify-full"
                        .into(),
                );
            }
            return Ok(pairs);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "`{key}` in the connection string has no value: write {key}=value (or a \
                 URL such as postgres://user@host:5432/db)"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err(format!(
                            "the value of `{key}` in the connection string has no closing quote"
                        ));
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// Pairs back into the key-value form, quoting values that need it.
fn join_key_values<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .map(|(k, v)| {
            if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
                format!("{k}={v}")
            } else {
                format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn split_key_values(dsn: &str) -> Result<(String, Vec<(String, String)>), String> {
    let (taken, kept): (Vec<_>, Vec<_>) = key_values(dsn)?
        .into_iter()
        .partition(|(k, _)| is_tls_key(k));
    let rest = join_key_values(kept.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok((rest, taken))
}

/// The database `dsn` connects to, as libpq picks it: `dbname` (the URL's path, or a
/// `dbname` parameter), else the user name. `None` when the string names neither (libpq
/// would then take the operating system's user name) or cannot be read.
pub fn database(dsn: &str) -> Option<String> {
    let (mut dbname, mut user) = (None, None);
    if let Some(body) = url_body(dsn) {
        let (credentials, rest) = match body.find('@') {
            Some(at) => (Some(&body[..at]), &body[at + 1..]),
            None => (None, body),
        };
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        if let Some((_, path)) = location.split_once('/') {
            dbname = Some(decode(path).ok()?);
        }
        if let Some(credentials) = credentials {
            let name = credentials.split_once(':').map_or(credentials, |(u, _)| u);
            user = Some(decode(name).ok()?);
        }
        for param in query.split('&') {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key {
                "dbname" => dbname = Some(decode(value).ok()?),
                "user" => user = Some(decode(value).ok()?),
                _ => {}
            }
        }
    } else {
        for (key, value) in key_values(dsn).ok()? {
            match key.as_str() {
                "dbname" => dbname = Some(value),
                "user" => user = Some(value),
                _ => {}
            }
        }
    }
    dbname
        .filter(|name| !name.is_empty())
        .or(user)
        .filter(|name| !name.is_empty())
}

/// `dsn` with its password replaced by `***`, for messages and logs.
pub fn redact(dsn: &str) -> String {
    if let Some(body) = url_body(dsn) {
        let prefix = &dsn[..dsn.len() - body.len()];
        let mut out = prefix.to_owned();
        let rest = match body.find('@') {
            Some(at) => {
                let credentials = &body[..at];
                match credentials.split_once(':') {
                    Some((user, _)) => out.push_str(&format!("{user}:***@")),
                    None => out.push_str(&format!("{credentials}@")),
                }
                &body[at + 1..]
            }
            None => body,
        };
        match rest.split_once('?') {
            Some((head, query)) => {
                let query = query
                    .split('&')
                    .map(|p| match p.split_once('=') {
                        Some(("password", _)) => "password=***".to_owned(),
                        _ => p.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("&");
                out.push_str(&format!("{head}?{query}"));
            }
            None => out.push_str(rest),
        }
        return out;
    }
    match key_values(dsn) {
        Ok(pairs) => join_key_values(pairs.iter().map(|(k, v)| {
            if k == "password" {
                (k.as_str(), "***")
            } else {
                (k.as_str(), v.as_str())
            }
        })),
        // Not parseable: show nothing of it rather than a password.
        Err(_) => "(connection string)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(dsn: &str) -> SplitDsn {
        split_tls(dsn).unwrap_or_else(|e| panic!("{dsn}: {e}"))
    }

    #[test]
    fn a_url_loses_its_tls_parameters_and_keeps_the_others() {
        let s = split(
            "postgres://u:p%3Fw@h:5432/db?application_name=x&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem&connect_timeout=5",
        );
        assert_eq!(
            s.dsn,
            "postgres://u:p%3Fw@h:5432/db?application_name=x&connect_timeout=5"
        );
        assert_eq!(s.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            s.tls.root_cert,
            Some(RootCert::File("/etc/ca dir/ca.pem".into()))
        );
        let s = split("postgresql://h/db?sslmode=disable");
        assert_eq!(s.dsn, "postgresql://h/db");
        assert_eq!(s.tls.mode, SslMode::Disable);
    }

    #[test]
    fn a_question_mark_in_a_url_password_is_not_the_query() {
        let s = split("postgres://u:a?sslmode=disable@h/db?sslmode=require");
        assert_eq!(s.dsn, "postgres://u:a?sslmode=disable@h/db");
        assert_eq!(s.tls.mode, SslMode::Require);
    }

    #[test]
    fn key_value_strings_lose_their_tls_parameters_with_quotes_understood() {
        let s = split(
            r"host=h port = 5432 password='it\'s' sslmode=verify-ca sslrootcert='/a b/c\'a.pem' dbname=app",
        );
        assert_eq!(s.dsn, r"host=h port=5432 password='it\'s' dbname=app");
        assert_eq!(s.tls.mode, SslMode::VerifyCa);
        assert_eq!(s.tls.root_cert, Some(RootCert::File("/a b/c'a.pem".into())));
    }

    #[test]
    fn the_default_is_prefer_like_libpq() {
        let s = split("postgres://postgres@127.0.0.1:5432/app");
        assert_eq!(s.dsn, "postgres://postgres@127.0.0.1:5432/app");
        assert_eq!(s.tls.mode, SslMode::Prefer);
        assert!(!s.tls.verifies_chain());
    }

    #[test]
    fn require_with_a_root_certificate_checks_the_chain_like_libpq() {
        let plain = split("host=h sslmode=require").tls;
        assert!(plain.mode.requires_tls() && !plain.verifies_chain());
        let with_root = split("host=h sslmode=require sslrootcert=/ca.pem").tls;
        assert!(with_root.verifies_chain() && !with_root.verifies_host());
        let full = split("host=h sslmode=verify-full sslrootcert=system").tls;
        assert!(full.verifies_chain() && full.verifies_host());
        assert_eq!(full.root_cert, Some(RootCert::System));
    }

    #[test]
    fn bad_tls_parameters_are_refused_with_the_fix() {
        let e = split_tls("postgres://h/db?sslmode=verify").unwrap_err();
        assert!(
            e.contains("unknown sslmode=\"verify\"") && e.contains("verify-full"),
            "{e}"
        );
        let e = split_tls("host=h sslmode=verify-full").unwrap_err();
        assert!(e.contains("sslrootcert=/path/to/ca.pem"), "{e}");
        let e = split_tls("host=h sslmode=require sslrootcert=system").unwrap_err();
        assert!(e.contains("needs sslmode=verify-full"), "{e}");
        let e = split_tls("postgres://h/db?sslcert=/c.pem").unwrap_err();
        assert!(e.contains("sslcert") && e.contains("not supported"), "{e}");
        let e = split_tls("host='h").unwrap_err();
        assert!(e.contains("closing quote"), "{e}");
    }

    #[test]
    fn the_database_is_the_dbname_else_the_user_as_libpq_picks_it() {
        for (dsn, expected) in [
            (
                "postgres://app:pw@db:5432/orders?sslmode=require",
                Some("orders"),
            ),
            ("postgresql://db/my%20db", Some("my db")),
            ("postgres://app@db:5432", Some("app")),
            ("postgres://app@db/", Some("app")),
            ("postgres://db/x?dbname=y&user=u", Some("y")),
            ("postgres://db?user=u", Some("u")),
            ("postgres://db", None),
            ("host=db user=app dbname='my db' password=x", Some("my db")),
            ("host=db user=app", Some("app")),
            ("host=db", None),
            ("host='db", None),
        ] {
            assert_eq!(database(dsn).as_deref(), expected, "{dsn}");
        }
    }

    #[test]
    fn passwords_are_redacted_in_both_forms() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x?sslmode=require&password=p2"),
            "postgres://app:***@db:5432/x?sslmode=require&password=***"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(
            redact("host=db password='a b' user=app"),
            "host=db password=*** user=app"
        );
        assert_eq!(redact("host=db password = s3cret"), "host=db password=***");
        assert!(!redact("host=db password='unterminated").contains("unterminated"));
    }
}
