//! One real cluster's certificates and keys: a CA, the API server's serving certificate, the
//! admin's client certificate (group `system:masters`), and the ServiceAccount signing key. Made
//! with rcgen, under a CA made as the sandbox makes its own.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};

/// The files of one cluster's PKI, written into its directory.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The CA certificate, PEM (as kubeconfigs embed it).
    pub ca_pem: String,
    /// The API server's serving certificate and key.
    pub serving_cert: PathBuf,
    /// The serving certificate's key.
    pub serving_key: PathBuf,
    /// The admin's client certificate (PEM), `CN=kubernetes-admin, O=system:masters`.
    pub admin_cert_pem: String,
    /// The admin's key (PEM).
    pub admin_key_pem: String,
    /// The key that signs ServiceAccount tokens.
    pub service_account_key: PathBuf,
    /// Its public half, which checks them.
    pub service_account_public_key: PathBuf,
}

impl Pki {
    /// Makes the PKI of cluster `name`, whose API server is reached at `127.0.0.1` (and at
    /// `also`, the address pods and peers reach it at with the pod network) and whose
    /// `kubernetes` Service has `service_ip`, and writes its files into `dir`.
    pub fn create(name: &str, service_ip: &str, also: Option<IpAddr>, dir: &Path) -> anyhow::Result<Self> {
        let (ca_cert, issuer) = mcsd_sandbox::certificate_authority(&format!("mcsd-real-ca-{name}"))?;

        let sans = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            service_ip,
        ];
        let also = also.map(|a| a.to_string());
        let mut serving = CertificateParams::new(
            sans.iter()
                .copied()
                .chain(also.as_deref())
                .map(str::to_string)
                .collect::<Vec<_>>(),
        )?;
        serving
            .distinguished_name
            .push(DnType::CommonName, format!("kube-apiserver-{name}"));
        serving.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "kubernetes-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_key = KeyPair::generate()?;
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let service_account_key = KeyPair::generate()?;

        let write = |file: &str, pem: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(file);
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
        Ok(Self {
            ca: write("ca.crt", &ca_cert.pem())?,
            ca_pem: ca_cert.pem(),
            serving_cert: write("apiserver.crt", &serving_cert.pem())?,
            serving_key: write("apiserver.key", &serving_key.serialize_pem())?,
            admin_cert_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
            service_account_key: write("service-account.key", &service_account_key.serialize_pem())?,
            service_account_public_key: write("service-account.pub", &service_account_key.public_key_pem())?,
        })
    }
}
