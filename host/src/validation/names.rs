//! Name formats from `k8s.io/apimachinery/pkg/util/validation`: DNS-1123 labels and
//! subdomains, DNS-1035 labels, IANA service names, label keys and values. Each returns the
//! messages Kubernetes returns, empty when the value is valid.

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn label_shape(s: &str, first_alpha: bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && if first_alpha {
            b[0].is_ascii_lowercase()
        } else {
            is_alnum(b[0])
        }
        && is_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_alnum(c) || c == b'-')
}

fn too_long(max: usize) -> String {
    format!("must be no more than {max} characters")
}

pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        e.push(too_long(DNS1123_LABEL_MAX));
    }
    if !label_shape(s, false) {
        e.push("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into());
    }
    e
}

pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        e.push(too_long(DNS1123_LABEL_MAX));
    }
    if !label_shape(s, true) {
        e.push("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".into());
    }
    e
}

pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        e.push(too_long(DNS1123_SUBDOMAIN_MAX));
    }
    if s.is_empty() || !s.split('.').all(|l| label_shape(l, false)) {
        e.push("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into());
    }
    e
}

/// IANA_SVC_NAME (RFC 6335): what a named `targetPort` or container port name must be.
pub fn iana_svc_name(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > 15 {
        e.push(too_long(15));
    }
    let b = s.as_bytes();
    if !b.iter().all(|&c| is_alnum(c) || c == b'-') {
        e.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if s.contains("--") {
        e.push("must not contain consecutive hyphens".into());
    }
    if !b.iter().any(|c| c.is_ascii_lowercase()) {
        e.push("must contain at least one letter (a-z)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        e.push("hyphens cannot be the first or last character".into());
    }
    e
}

fn qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label key: optional DNS subdomain prefix and '/', then a qualified name.
pub fn label_key(s: &str) -> Vec<String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let mut e = Vec::new();
    if let Some(p) = prefix {
        e.extend(
            dns1123_subdomain(p)
                .into_iter()
                .map(|m| format!("prefix part {m}")),
        );
    }
    if !qualified_name_part(name) {
        e.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into());
    }
    e
}

pub fn label_value(s: &str) -> Vec<String> {
    if s.is_empty() || qualified_name_part(s) {
        Vec::new()
    } else {
        vec!["a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_follow_dns1123_label() {
        for ok in ["123-abc", "web", "a", "http-2"] {
            assert!(dns1123_label(ok).is_empty(), "{ok} should be valid");
        }
        for bad in ["123_abc", "-web", "web-", "Web", "", &"a".repeat(64)] {
            assert!(!dns1123_label(bad).is_empty(), "{bad} should be invalid");
        }
    }

    #[test]
    fn service_names_follow_dns1035() {
        assert!(dns1035_label("my-service").is_empty());
        assert!(!dns1035_label("1abc").is_empty());
        assert!(!dns1035_label("my.service").is_empty());
    }

    #[test]
    fn iana_names() {
        let cases: &[(&str, bool)] = &[
            ("http", true),
            ("http-alt", true),
            ("a1", true),
            ("123", false),
            ("http--alt", false),
            ("-http", false),
            ("http_alt", false),
            ("abcdefghijklmnop", false),
        ];
        for (s, ok) in cases {
            assert_eq!(iana_svc_name(s).is_empty(), *ok, "{s}");
        }
    }

    #[test]
    fn subdomains_and_labels() {
        assert!(dns1123_subdomain("foo.example.com").is_empty());
        assert!(!dns1123_subdomain("foo..com").is_empty());
        assert!(label_key("app.kubernetes.io/name").is_empty());
        assert!(label_key("app").is_empty());
        assert!(!label_key("-app").is_empty());
        assert!(label_value("MyApp").is_empty());
        assert!(label_value("").is_empty());
        assert!(!label_value("bad value").is_empty());
    }
}
