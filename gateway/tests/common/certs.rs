//! Test certificates made with rcgen: a CA, server certificates for given
//! names, client certificates, an expired one, all written as PEM files into
//! a temporary directory so that the gateway, curl, openssl, nginx and
//! PostgreSQL read the very same files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate authority that signs the certificates of one test.
pub struct Ca {
    pub dir: tempfile::TempDir,
    /// `ca.pem`: the CA certificate, for `--cacert`, `sslrootcert`, `tls_ca`.
    pub cert: PathBuf,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A signed certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate followed by its issuer's (a full chain).
    pub cert: PathBuf,
    /// PKCS#8 PEM.
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// A new CA named `name`, its files in a fresh temporary directory.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::in_dir(dir, name)
    }

    fn in_dir(dir: tempfile::TempDir, name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        let pem = cert.pem();
        let path = dir.path().join(format!("{}-ca.pem", slug(name)));
        write(&path, &pem);
        Self {
            dir,
            cert: path,
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate as PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid now.
    pub fn server(&self, file: &str, names: &[&str]) -> Issued {
        self.sign(file, names[0], names, Kind::Server, Validity::Now)
    }

    /// A server certificate for `names` that expired on 2021-01-01.
    pub fn expired_server(&self, file: &str, names: &[&str]) -> Issued {
        self.sign(file, names[0], names, Kind::Server, Validity::Expired)
    }

    /// A client certificate with the common name `cn`.
    pub fn client(&self, file: &str, cn: &str) -> Issued {
        self.sign(file, cn, &[], Kind::Client, Validity::Now)
    }

    /// A client certificate whose subject is `O=org` then `CN=cn`, which
    /// RFC 4514 writes `CN=cn,O=org`.
    pub fn client_in(&self, file: &str, org: &str, cn: &str) -> Issued {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, org);
        dn.push(DnType::CommonName, cn);
        self.sign_dn(file, dn, &[], Kind::Client, Validity::Now)
    }

    fn sign(&self, file: &str, cn: &str, names: &[&str], kind: Kind, validity: Validity) -> Issued {
        self.sign_dn(file, dn(cn), names, kind, validity)
    }

    fn sign_dn(
        &self,
        file: &str,
        subject: DistinguishedName,
        names: &[&str],
        kind: Kind,
        validity: Validity,
    ) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("DNS name")),
            })
            .collect();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match kind {
            Kind::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Kind::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if let Validity::Expired = validity {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let cert_pem = format!("{}{}", cert.pem(), self.pem);
        let key_pem = key.serialize_pem();
        let cert_path = self.dir.path().join(format!("{file}.pem"));
        let key_path = self.dir.path().join(format!("{file}.key"));
        write(&cert_path, &cert_pem);
        write(&key_path, &key_pem);
        Issued {
            cert: cert_path,
            key: key_path,
            cert_pem,
            key_pem,
        }
    }

    /// The directory the files are in.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

enum Kind {
    Server,
    Client,
}

enum Validity {
    Now,
    Expired,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "authgw tests");
    dn
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Writes `contents` to `path`, mode 0600 (PostgreSQL refuses a group- or
/// world-readable key).
fn write(path: &Path, contents: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("write PEM");
    std::io::Write::write_all(&mut f, contents.as_bytes()).expect("write PEM");
}
