//! TLS for both services and their clients, from PEM files: the server side (rustls, for
//! [`crate::serve`]), the client side (tonic's `ClientTlsConfig`), the check that refuses a
//! TLS configuration with an `http://` address (tonic would silently connect in plaintext), and
//! certificates for development and tests ([`dev_certs`]).
//!
//! One crypto provider, ring, is named explicitly everywhere: with a second one compiled in by
//! some dependency, rustls' process-wide default would be ambiguous and panic.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::{CryptoProvider, ring},
    server::WebPkiClientVerifier,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Why a TLS configuration could not be built: always names the file and the flag's role.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {}: {reason}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
}

/// The crypto provider every TLS configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// What a server serves TLS with (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Clients must present a certificate signed by one of these CAs (PEM); none: any client
    /// may connect (authenticated, if at all, by a token).
    pub client_ca: Option<PathBuf>,
}

impl ServerFiles {
    /// From the three flags: both of cert and key, or neither (then plaintext); a client CA
    /// only with them.
    pub fn from_flags(
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
    ) -> Result<Option<Self>, String> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self {
                cert: cert.to_owned(),
                key: key.to_owned(),
                client_ca: client_ca.map(Path::to_owned),
            })),
            (None, None) if client_ca.is_some() => Err(
                "--tls-client-ca needs --tls-cert and --tls-key: client certificates are asked \
                 for in a TLS handshake"
                    .into(),
            ),
            (None, None) => Ok(None),
            (Some(_), None) => Err("--tls-cert needs --tls-key".into()),
            (None, Some(_)) => Err("--tls-key needs --tls-cert".into()),
        }
    }

    /// The rustls configuration (ALPN is set by the server that uses it). Reads the files now,
    /// so a bad one stops the process at start with its name.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let certs = load_certs("--tls-cert", &self.cert)?;
        let key = load_key("--tls-key", &self.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(path) => {
                let roots = load_roots("--tls-client-ca", path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TlsError::Pem {
                            what: "--tls-client-ca",
                            path: path.clone(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Pem {
                what: "--tls-cert/--tls-key",
                path: self.cert.clone(),
                reason: e.to_string(),
            })
    }
}

/// What a client connects with: the CA to trust (only it; none: the system's roots) and, for
/// mutual TLS, its own certificate and key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientFiles {
    /// Whether any TLS setting was given (then the address must be `https://`).
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// tonic's client TLS configuration; `flags` names the flags in messages (e.g.
    /// `--producer-ca/--producer-cert/--producer-key`).
    pub fn client_config(&self, flags: [&'static str; 3]) -> Result<ClientTlsConfig, TlsError> {
        // A CA given is the one trusted; the system's roots only without one (a minimal
        // container image has none, and tonic fails to build a configuration from zero).
        let mut config = ClientTlsConfig::new();
        match &self.ca {
            Some(path) => {
                let pem = read(flags[0], path)?;
                // Fails here, with the file's name, rather than at the first connection.
                load_roots(flags[0], path)?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            None => config = config.with_native_roots(),
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                load_certs(flags[1], cert)?;
                load_key(flags[2], key)?;
                config = config.identity(Identity::from_pem(
                    read(flags[1], cert)?,
                    read(flags[2], key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(TlsError::Config(format!(
                    "{} and {} go together",
                    flags[1], flags[2]
                )));
            }
        }
        Ok(config)
    }
}

/// An endpoint for `url` with `tls` applied, refusing the combinations tonic would accept
/// silently: TLS settings with an `http://` address (tonic connects in plaintext and never
/// uses them). `https://` without settings uses the system's roots.
pub fn endpoint(
    url: &str,
    tls: &ClientFiles,
    flags: [&'static str; 3],
) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| format!("{url}: {e}"))?;
    let https = url.starts_with("https://");
    if tls.is_set() && !https {
        return Err(format!(
            "{url} is a plaintext address but TLS settings ({}) are given: use https://{}, or \
             drop the TLS flags",
            flags.join(", "),
            url.split_once("://").map_or(url, |(_, rest)| rest)
        ));
    }
    if !https {
        return Ok(endpoint);
    }
    let config = tls.client_config(flags).map_err(|e| e.to_string())?;
    endpoint.tls_config(config).map_err(|e| {
        let hint = if tls.ca.is_none() {
            format!(
                " (no CA was given: are there system root certificates? or give {})",
                flags[0]
            )
        } else {
            String::new()
        };
        format!("{url}: TLS: {}{hint}", crate::errors::error_chain(&e))
    })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file; at least one.
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_owned(),
            reason: "no CERTIFICATE block in the file".into(),
        });
    }
    Ok(certs)
}

fn load_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what,
        path: path.to_owned(),
        reason: format!("no usable private key: {e}"),
    })
}

fn load_roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Files [`dev_certs`] writes into its directory.
pub mod dev {
    /// The CA certificate: what clients trust (`--producer-ca`, grpcurl `-cacert`) and servers
    /// check client certificates against (`--tls-client-ca`).
    pub const CA_CERT: &str = "ca.pem";
    /// The CA's key: kept beside it so more certificates can be signed; never give it away.
    pub const CA_KEY: &str = "ca.key";
}

/// Development and test certificates: a CA (`ca.pem`, `ca.key`) and, for each name, a leaf
/// `<name>.pem` / `<name>.key` signed by it, valid for `<name>`, `localhost`, `127.0.0.1` and
/// `::1` plus `extra_sans`, usable as both server and client certificate (so one file pair
/// serves a port and authenticates to a peer under mutual TLS). Keys are written 0600.
pub fn dev_certs(dir: &Path, names: &[String], extra_sans: &[String]) -> Result<(), String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |file: &str, text: &str, secret: bool| -> Result<(), String> {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        if secret {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    };
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    ca.distinguished_name
        .push(DnType::CommonName, "pushpull development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| e.to_string())?;
    write(dev::CA_CERT, &ca_cert.pem(), false)?;
    write(dev::CA_KEY, &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca, ca_key);
    for name in names {
        let mut sans = vec![
            name.clone(),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        sans.extend(extra_sans.iter().cloned());
        sans.dedup();
        let mut params = CertificateParams::new(sans).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
        write(&format!("{name}.pem"), &cert.pem(), false)?;
        write(&format!("{name}.key"), &key.serialize_pem(), true)?;
    }
    Ok(())
}
