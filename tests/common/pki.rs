//! A throwaway certificate authority for the TLS tests: a CA, a server certificate for
//! 127.0.0.1 / localhost, and client certificates with a chosen common name.

#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate signed by a [`Pki`], with its private key (PKCS#8).
pub struct Leaf {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let ca = p.self_signed(&key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    fn leaf(&self, cn: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// The API server's certificate: valid for 127.0.0.1 and localhost.
    pub fn server(&self) -> Leaf {
        self.leaf(
            "kube-apiserver",
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate; the API server takes `cn` as the user name.
    pub fn client(&self, cn: &str) -> Leaf {
        self.leaf(cn, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The subject's common name of a DER certificate. The subject follows the issuer in
/// the TBSCertificate, so the last commonName attribute (OID 2.5.4.3) is the subject's.
pub fn common_name(der: &[u8]) -> Option<String> {
    const OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let at = der.windows(OID.len()).rposition(|w| w == OID)? + OID.len();
    // A string tag (UTF8String, PrintableString, ...) then a short-form length.
    let len = *der.get(at + 1)? as usize;
    if len >= 0x80 {
        return None;
    }
    let bytes = der.get(at + 2..at + 2 + len)?;
    String::from_utf8(bytes.to_vec()).ok()
}
