//! Removing credentials from connection URLs before they reach error messages,
//! `Debug` output and logs.

/// What a removed secret is replaced with.
const MASK: &str = "***";

/// Query parameter names whose values are secret (compared ignoring ASCII case).
const SECRET_PARAMS: &[&str] = &["password", "pass", "pwd", "secret", "token"];

/// Query parameter name endings whose values are secret too (`sslpassword`,
/// `client_secret`, `access_token`, …), compared ignoring ASCII case.
const SECRET_SUFFIXES: &[&str] = &["password", "secret", "token"];

/// `url` with the password of its user info and the values of secret query
/// parameters (`password`, `pass`, `pwd`, `secret`, `token`, and names ending in
/// `password`, `secret` or `token`) replaced by `***`; the user name, hosts, path
/// and other parameters are kept.
///
/// Works on any string and never panics. A password holding a raw `/`, `?`, `#`
/// or `@` (which RFC 3986 requires to be percent-encoded) is still masked unless
/// what precedes its first raw `/`, `?` or `#` looks like `host:port`.
///
/// # Examples
/// ```
/// use sundial_core::redact::redact_url;
/// assert_eq!(
///     redact_url("postgres://app:hunter2@db:5432/app?sslmode=require"),
///     "postgres://app:***@db:5432/app?sslmode=require"
/// );
/// assert_eq!(redact_url("mysql://db/app?password=hunter2"), "mysql://db/app?password=***");
/// ```
pub fn redact_url(url: &str) -> String {
    let split = match url.find("://") {
        Some(i) => i + 3,
        None if url.starts_with("//") => 2,
        None => 0,
    };
    let (prefix, rest) = url.split_at(split);
    let mut out = String::with_capacity(url.len());
    out.push_str(prefix);
    let mut tail = rest;
    if let Some(at) = userinfo_end(rest) {
        let (userinfo, after) = rest.split_at(at);
        match userinfo.split_once(':') {
            Some((user, password)) if !password.is_empty() => {
                out.push_str(user);
                out.push(':');
                out.push_str(MASK);
            }
            _ => out.push_str(userinfo),
        }
        tail = after;
    }
    match tail.split_once('?') {
        Some((before, query)) => {
            out.push_str(before);
            out.push('?');
            redact_query(query, &mut out);
        }
        None => out.push_str(tail),
    }
    out
}

/// The position of the `@` ending the user info of `rest` (the URL after its
/// `scheme://`), if it has user info.
fn userinfo_end(rest: &str) -> Option<usize> {
    const DELIMITERS: [char; 3] = ['/', '?', '#'];
    let first_at = rest.find('@')?;
    // The host part after the user info holds no '/', '?' or '#'; taking the
    // last '@' before one keeps a raw '@' in the password inside the user info.
    let region_end = rest
        .get(first_at..)
        .and_then(|s| s.find(DELIMITERS))
        .map_or(rest.len(), |i| first_at + i);
    let at = rest.get(..region_end)?.rfind('@')?;
    let userinfo = rest.get(..at)?;
    if userinfo.contains(DELIMITERS) {
        // Either a password with a raw delimiter, or an '@' in the path or query
        // of a URL without user info: the latter when the text before the first
        // delimiter is `host` or `host:port`.
        let authority = rest.get(..rest.find(DELIMITERS).unwrap_or(rest.len()))?;
        match authority.rsplit_once(':') {
            Some((_, port)) if port.is_empty() || port.bytes().all(|b| b.is_ascii_digit()) => {
                return None
            }
            None => return None,
            Some(_) => {}
        }
    }
    Some(at)
}

/// Appends `query` (after the `?`, up to the end of the URL) to `out` with the
/// values of secret parameters masked.
fn redact_query(query: &str, out: &mut String) {
    for piece in query.split_inclusive(['&', ';']) {
        let (pair, separator) = match piece.strip_suffix(['&', ';']) {
            Some(pair) => (pair, piece.get(pair.len()..).unwrap_or_default()),
            None => (piece, ""),
        };
        match pair.split_once('=') {
            Some((key, value)) if !value.is_empty() && is_secret_param(key) => {
                out.push_str(key);
                out.push('=');
                out.push_str(MASK);
                out.push_str(separator);
            }
            _ => out.push_str(piece),
        }
    }
}

fn is_secret_param(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    SECRET_PARAMS.contains(&key.as_str()) || SECRET_SUFFIXES.iter().any(|s| key.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_in_user_info_are_masked_and_users_kept() {
        let cases = [
            (
                "postgres://user:secret@host/db",
                "postgres://user:***@host/db",
            ),
            (
                "postgresql://app:secret@db:5432/app?sslmode=require",
                "postgresql://app:***@db:5432/app?sslmode=require",
            ),
            ("mysql://u:secret@h/db", "mysql://u:***@h/db"),
            ("mariadb://u:secret@h:3306/db", "mariadb://u:***@h:3306/db"),
            ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
            ("redis://user:secret@h", "redis://user:***@h"),
            ("rediss://user:secret@h:6380", "rediss://user:***@h:6380"),
            ("mongodb://u:secret@h/db", "mongodb://u:***@h/db"),
            (
                "mongodb://u:secret@h1:27017,h2:27017/db?replicaSet=rs&authSource=admin",
                "mongodb://u:***@h1:27017,h2:27017/db?replicaSet=rs&authSource=admin",
            ),
            (
                "mongodb+srv://u:secret@cluster0.example.net/db",
                "mongodb+srv://u:***@cluster0.example.net/db",
            ),
            (
                "postgres://u:p%40ss%2Fw@[::1]:5432/db",
                "postgres://u:***@[::1]:5432/db",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn secret_query_parameters_are_masked() {
        let cases = [
            (
                "postgres://host/db?password=secret",
                "postgres://host/db?password=***",
            ),
            (
                "mysql://u@h/db?ssl-mode=REQUIRED&PASSWORD=secret&x=1",
                "mysql://u@h/db?ssl-mode=REQUIRED&PASSWORD=***&x=1",
            ),
            (
                "redis://h?pass=secret;pwd=secret2&Secret=s3&token=t&db=2",
                "redis://h?pass=***;pwd=***&Secret=***&token=***&db=2",
            ),
            (
                "postgres://h/db?sslpassword=secret&access_token=t&client_secret=c",
                "postgres://h/db?sslpassword=***&access_token=***&client_secret=***",
            ),
            (
                "mongodb://u:secret@h/db?password=secret#table=jobs",
                "mongodb://u:***@h/db?password=***",
            ),
            (
                "sqlite://jobs.db?mode=rwc&pwd=secret",
                "sqlite://jobs.db?mode=rwc&pwd=***",
            ),
            ("postgres://h/db?password=", "postgres://h/db?password="),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for url in [
            "postgres://db/app",
            "postgres://app@db:5432/app",
            "postgresql://127.0.0.1:5432/test?sslmode=disable",
            "mysql://root@127.0.0.1:3306/test",
            "redis://127.0.0.1:6379/0",
            "mongodb://127.0.0.1:27018/sundial_test?appName=x",
            "mongodb://h1,h2/db",
            "sqlite://jobs.db",
            "sqlite::memory:",
            "sqlite:///tmp/jobs@2024.db",
            "memory://",
            "oracle://db/x",
            "postgres://h:5432/db?email=a@b.example",
            "postgres://h/db?user=a@b:c",
            "postgres://[::1]:5432/db?e=a@b",
            "",
            "x",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn malformed_input_does_not_panic_or_leak() {
        let cases = [
            // Raw delimiters in the password, which drivers reject.
            ("postgres://u:se/cret@h/db", "postgres://u:***@h/db"),
            ("postgres://u:se?cr#et@h/db", "postgres://u:***@h/db"),
            ("postgres://u:se@cret@h/db", "postgres://u:***@h/db"),
            // No scheme, or no "//".
            ("user:secret@host/db", "user:***@host/db"),
            ("//user:secret@host/db", "//user:***@host/db"),
            ("postgres:u:secret@h", "postgres:***@h"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
        for url in [
            "://",
            ":///",
            "://@",
            "://:@",
            "@",
            ":@",
            "?",
            "?=",
            "?&;=&",
            "a://b:c@",
            "a://@@@///???###",
            "p://ü:ß@ö/ä?pass=é&token=ü",
            "p://\u{1F600}:\u{1F600}@\u{1F600}",
        ] {
            let redacted = redact_url(url);
            assert!(!redacted.contains('ß') && !redacted.contains('é'), "{url}");
        }
        assert_eq!(redact_url("a://b:c@"), "a://b:***@");
        assert_eq!(redact_url("://:@"), "://:@");
    }
}
