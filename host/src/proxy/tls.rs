//! TLS termination (rustls, ring): a server config per listener from the `kubernetes.io/tls`
//! Secrets a Service names in `switchyard.io/tls-secret`. The certificate is chosen by SNI
//! (the first Secret whose certificate is valid for the name the client asked for, else the
//! first); ALPN offers `h2` and `http/1.1` in HTTP mode. A Secret change rebuilds the
//! Service's view and so the listener's target: new handshakes use the new certificate.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::snapshot::TlsPair;

#[derive(Debug)]
struct BySni {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name()
            && let Ok(name) = ServerName::try_from(name)
        {
            let fits = |k: &Arc<CertifiedKey>| {
                k.end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
            };
            if let Some(k) = self.keys.iter().find(|k| fits(k)) {
                return Some(k.clone());
            }
        }
        self.keys.first().cloned()
    }
}

/// The server config for `pairs` (in the annotation's order); `http` offers ALPN h2 and
/// http/1.1. An error names the Secret and what is wrong with it.
pub fn server_config(pairs: &[Arc<TlsPair>], http: bool) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut keys = Vec::with_capacity(pairs.len());
    for p in pairs {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&p.cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("Secret {}: tls.crt: {e}", p.secret))?;
        if certs.is_empty() {
            return Err(format!("Secret {}: tls.crt holds no certificate", p.secret));
        }
        let key = PrivateKeyDer::from_pem_slice(&p.key_pem)
            .map_err(|e| format!("Secret {}: tls.key: {e}", p.secret))?;
        let ck = CertifiedKey::from_der(certs, key, &provider)
            .map_err(|e| format!("Secret {}: {e}", p.secret))?;
        keys.push(Arc::new(ck));
    }
    if keys.is_empty() {
        return Err(
            "none of the Secrets named in switchyard.io/tls-secret exists as a kubernetes.io/tls Secret in the Service's namespace"
                .into(),
        );
    }
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { keys }));
    if http {
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_secrets_are_named_in_the_error() {
        let err = server_config(&[], true).unwrap_err();
        assert!(err.contains("switchyard.io/tls-secret"), "{err}");
        let bad = Arc::new(TlsPair {
            secret: "default/web-tls".into(),
            cert_pem: b"not a certificate".to_vec(),
            key_pem: b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
        });
        let err = server_config(&[bad], true).unwrap_err();
        assert!(err.starts_with("Secret default/web-tls: tls.crt"), "{err}");
    }
}
