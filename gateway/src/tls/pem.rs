//! PEM files: certificate chains, private keys and CA bundles, each error
//! naming the file and the reason.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain (leaf first), at least one certificate.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = path.display();
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{file}: {}", reason(&e)))?;
    let chain = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{file}: {}", reason(&e)))?;
    if chain.is_empty() {
        return Err(format!("{file}: no PEM certificate found"));
    }
    Ok(chain)
}

/// A private key: PKCS#8, SEC1 (EC) or PKCS#1 (RSA), the first in the file.
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let file = path.display();
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("{file}: no PEM private key found (PKCS#8, SEC1 or PKCS#1)")
        }
        e => format!("{file}: {}", reason(&e)),
    })
}

/// A root store from a PEM bundle of CA certificates; each must parse as
/// a trust anchor.
pub fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}

fn reason(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM item found".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A missing file, a file with no certificate and garbage each get an
    /// error naming the file.
    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(certs(&missing).unwrap_err().contains("missing.pem"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let e = certs(&empty).unwrap_err();
        assert!(
            e.contains("empty.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = key(&empty).unwrap_err();
        assert!(e.contains("empty.pem") && e.contains("private key"), "{e}");
    }
}
