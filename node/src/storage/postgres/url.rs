//! A PostgreSQL URL as it may be shown: the password taken out, wherever it was given.

/// `url` with any password replaced (in the user part or a `password=` parameter), for what is printed
/// or written down: secrets never appear in output.
pub fn redacted(url: &str) -> String {
    let url = &redact_query_password(url);
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &rest[..colon], &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Replaces the value of a `password=` query parameter.
fn redact_query_password(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_string() };
    let params: Vec<String> =
        query.split('&').map(|p| if p.starts_with("password=") { "password=***".to_string() } else { p.to_string() }).collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_appear() {
        assert_eq!(redacted("postgres://exchange:s3cret@db:5432/gz"), "postgres://exchange:***@db:5432/gz");
        assert_eq!(redacted("postgres://root@127.0.0.1/test"), "postgres://root@127.0.0.1/test");
        assert_eq!(redacted("postgres://db/gz?sslmode=require&password=x"), "postgres://db/gz?sslmode=require&password=***");
    }
}
