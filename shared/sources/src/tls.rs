//! What `verify-full` trusts besides the roots the driver already has (Mozilla's,
//! compiled in, for PostgreSQL and MySQL; the system's store for SQL Server): Amazon
//! RDS's certificate authorities, so an RDS or Aurora database verifies with no
//! `ca_cert`, and the secret's `ca_cert`, for a private CA.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sluice_core::{ConnectionSecret, SourceError, SourceErrorKind};

/// Every Amazon RDS region's CAs, as AWS's global bundle holds them
/// (infra/rds-ca-bundle.sh refreshes the file).
pub(crate) const RDS_CA_BUNDLE: &[u8] = include_bytes!("../certs/rds-global-bundle.pem");

/// The CAs to trust on top of the roots, as PEM: Amazon RDS's, then the secret's
/// `ca_cert`, checked first so a bad one is named rather than failing the handshake.
pub(crate) fn extra_roots(secret: &ConnectionSecret) -> Result<Vec<u8>, SourceError> {
    let mut pem = RDS_CA_BUNDLE.to_vec();
    if let Some(ca) = &secret.ca_cert {
        check_ca_cert(ca)?;
        pem.push(b'\n');
        pem.extend_from_slice(ca.as_bytes());
    }
    Ok(pem)
}

/// The secret's `ca_cert` must be one or more PEM certificates.
fn check_ca_cert(ca: &str) -> Result<(), SourceError> {
    let bad = |why: &str| {
        Err(SourceError::new(
            SourceErrorKind::Config,
            format!(
                "the secret's ca_cert {why}: give the PEM of the CA that signed the server's certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----, with its line breaks, written \\n inside JSON)"
            ),
        ))
    };
    match CertificateDer::pem_slice_iter(ca.as_bytes()).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if certs.is_empty() => bad("holds no certificate"),
        Ok(_) => Ok(()),
        Err(_) => bad("is not a readable PEM certificate (cut short, or its line breaks lost)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(ca_cert: Option<&str>) -> ConnectionSecret {
        let mut s = ConnectionSecret::from_json(r#"{"engine": "postgres", "database": "d"}"#).unwrap();
        s.ca_cert = ca_cert.map(str::to_string);
        s
    }

    #[test]
    fn the_rds_bundle_is_every_regions_cas_and_each_parses() {
        let certs = CertificateDer::pem_slice_iter(RDS_CA_BUNDLE)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert!(certs.len() >= 80, "{} certificates", certs.len());
        assert_eq!(extra_roots(&secret(None)).unwrap(), RDS_CA_BUNDLE);
    }

    #[test]
    fn a_ca_cert_is_added_and_a_malformed_one_is_named() {
        let first = String::from_utf8_lossy(RDS_CA_BUNDLE);
        let start = first.find("-----BEGIN").unwrap();
        let end = first.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
        let ca = &first[start..end];
        let roots = extra_roots(&secret(Some(ca))).unwrap();
        assert!(roots.ends_with(ca.as_bytes()));

        let truncated = &ca[..ca.len() / 2];
        let no_lines = ca.replace('\n', "");
        for bad in [truncated, "not a certificate", no_lines.as_str(), ""] {
            let e = extra_roots(&secret(Some(bad))).unwrap_err();
            assert_eq!(e.kind, SourceErrorKind::Config);
            assert!(e.message.contains("the secret's ca_cert"), "{e}");
        }
    }
}
