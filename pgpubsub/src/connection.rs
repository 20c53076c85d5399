//! Connection strings and connections: both forms PostgreSQL accepts (URL
//! and `key=value`), read once into parameters; printed without secrets;
//! opened with timeouts and TCP keepalives; TLS for the `LISTEN` session as
//! libpq does it for Diesel's.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::{Connection, PgConnection};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// What pgpubsub adds to a connection string that does not set it: a bound
/// on connecting, TCP keepalives that notice a dead peer within about 25 s,
/// and a bound on unacknowledged writes (a half-open connection fails
/// instead of hanging until the kernel gives up, hours later).
const DEFAULTS: &[(&str, &str)] = &[
    ("connect_timeout", "10"),
    ("keepalives", "1"),
    ("keepalives_idle", "10"),
    ("keepalives_interval", "5"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "20000"),
];

/// Parameters that hold secrets: never printed.
const SECRETS: &[&str] = &["password", "sslpassword"];

/// libpq parameters the `LISTEN` session's client (`tokio-postgres`) does
/// not know; pgpubsub handles the TLS ones itself and leaves the others to
/// libpq (the workers' connections).
const LIBPQ_ONLY: &[&str] = &[
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslcompression",
    "sslsni",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "keepalives_count",
    "tcp_user_timeout",
    "gssencmode",
    "gsslib",
    "gssdelegation",
    "krbsrvname",
    "requirepeer",
    "require_auth",
    "service",
    "passfile",
    "client_encoding",
    "fallback_application_name",
    "replication",
];

/// A connection string read into its parameters.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    /// In order; a later one wins, as in libpq.
    params: Vec<(String, String)>,
    /// A URL the `url` crate cannot read (several hosts, say): passed to
    /// libpq untouched.
    opaque: Option<String>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl ConnInfo {
    /// Reads a URL (`postgres://user:password@host:port/db?key=value`) or a
    /// `key=value` string (values may be single-quoted, with `\` escapes).
    pub(crate) fn parse(text: &str) -> Result<ConnInfo> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Error::Config("the database URL is empty".into()));
        }
        if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
            return Ok(ConnInfo::parse_url(trimmed));
        }
        Ok(ConnInfo {
            params: parse_key_values(trimmed)?,
            opaque: None,
        })
    }

    fn parse_url(text: &str) -> ConnInfo {
        let Ok(url) = url::Url::parse(text) else {
            return ConnInfo {
                params: Vec::new(),
                opaque: Some(text.to_owned()),
            };
        };
        let decode = |value: &str| {
            url::form_urlencoded::parse(format!("x={}", value.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default()
        };
        let mut params = Vec::new();
        if let Some(host) = url.host_str().filter(|host| !host.is_empty()) {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            params.push(("host".to_owned(), decode(host)));
        }
        if let Some(port) = url.port() {
            params.push(("port".to_owned(), port.to_string()));
        }
        if !url.username().is_empty() {
            params.push(("user".to_owned(), decode(url.username())));
        }
        if let Some(password) = url.password() {
            params.push(("password".to_owned(), decode(password)));
        }
        let path = url.path().trim_start_matches('/');
        if !path.is_empty() {
            params.push(("dbname".to_owned(), decode(path)));
        }
        params.extend(
            url.query_pairs()
                .map(|(key, value)| (key.into_owned(), value.into_owned())),
        );
        ConnInfo {
            params,
            opaque: None,
        }
    }

    /// The value of `key`, the last one given.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    fn set_default(&mut self, key: &str, value: &str) {
        if self.get(key).is_none() {
            self.params.push((key.to_owned(), value.to_owned()));
        }
    }

    /// Where this connects, for messages: host, port, user and database,
    /// never a password.
    pub(crate) fn redacted(&self) -> String {
        if let Some(opaque) = &self.opaque {
            return redact_opaque(opaque);
        }
        let shown: Vec<String> = ["host", "hostaddr", "port", "user", "dbname"]
            .iter()
            .filter_map(|key| self.get(key).map(|value| format!("{key}={}", quote(value))))
            .collect();
        if shown.is_empty() {
            "the default server (PG* environment variables, local socket)".to_owned()
        } else {
            shown.join(" ")
        }
    }

    /// The parameters with pgpubsub's defaults, for libpq (`key=value`).
    pub(crate) fn for_libpq(&self) -> String {
        if let Some(opaque) = &self.opaque {
            return opaque.clone();
        }
        let mut info = self.clone();
        for (key, value) in DEFAULTS {
            info.set_default(key, value);
        }
        info.params
            .iter()
            .map(|(key, value)| format!("{key}={}", quote(value)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The `LISTEN` session's client configuration and TLS connector.
    pub(crate) fn for_listen(&self) -> Result<(postgres::Config, Tls)> {
        let mut info = match &self.opaque {
            // Let tokio-postgres read what `url` could not (several hosts).
            Some(opaque) => {
                let config: postgres::Config = opaque.parse().map_err(|err| {
                    Error::Config(format!(
                        "cannot read the connection string ({}): {err}",
                        redact_opaque(opaque)
                    ))
                })?;
                return Ok((config, Tls::from_mode(&TlsMode::Prefer, None)?));
            }
            None => self.clone(),
        };
        for (key, value) in DEFAULTS {
            info.set_default(key, value);
        }
        let mode = TlsMode::parse(info.get("sslmode").unwrap_or("prefer"))?;
        let root = info.get("sslrootcert").map(str::to_owned);
        let tls = Tls::from_mode(&mode, root.as_deref())?;
        let passed: Vec<String> = info
            .params
            .iter()
            .filter(|(key, _)| !LIBPQ_ONLY.contains(&key.as_str()) && key != "sslmode")
            .map(|(key, value)| format!("{key}={}", quote(value)))
            .chain(std::iter::once(format!("sslmode={}", mode.client_mode())))
            .collect();
        let mut config: postgres::Config = passed.join(" ").parse().map_err(|err| {
            Error::Config(format!(
                "cannot read the connection string ({}): {err}",
                self.redacted()
            ))
        })?;
        if let Some(count) = info
            .get("keepalives_count")
            .and_then(|count| count.parse().ok())
        {
            config.keepalives_retries(count);
        }
        // libpq reads milliseconds, tokio-postgres seconds.
        if let Some(millis) = info
            .get("tcp_user_timeout")
            .and_then(|millis| millis.parse::<u64>().ok())
            .filter(|millis| *millis > 0)
        {
            config.tcp_user_timeout(Duration::from_millis(millis));
        }
        Ok((config, tls))
    }
}

/// `sslmode` as libpq reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Result<TlsMode> {
        Ok(match value {
            "disable" => TlsMode::Disable,
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                "invalid sslmode `{other}`: expected disable, allow, prefer, require, verify-ca or verify-full"
            )))
            }
        })
    }

    /// What the client itself is told: it negotiates, the connector checks.
    fn client_mode(&self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            _ => "require",
        }
    }
}

/// The `LISTEN` session's TLS.
pub(crate) enum Tls {
    Off(postgres::NoTls),
    On(MakeRustlsConnect),
}

impl Tls {
    /// As libpq: `prefer` and `require` encrypt without checking the
    /// server's certificate unless a root certificate is given
    /// (`sslrootcert`, or `~/.postgresql/root.crt`), `verify-ca` checks the
    /// chain, `verify-full` the chain and the host name. `sslrootcert=system`
    /// trusts the system's roots.
    ///
    /// rustls, not OpenSSL: setting up an OpenSSL connector reads the
    /// system's whole certificate bundle (twice, through native-tls), tens
    /// of milliseconds of CPU at every listener start even when nothing is
    /// checked against it. Here roots are read only when a check needs them.
    fn from_mode(mode: &TlsMode, root: Option<&str>) -> Result<Tls> {
        if *mode == TlsMode::Disable {
            return Ok(Tls::Off(postgres::NoTls));
        }
        let default_root = std::env::var_os("HOME")
            .map(|home| std::path::Path::new(&home).join(".postgresql/root.crt"))
            .filter(|path| path.exists());
        let root_path = match root {
            Some("system") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => default_root,
        };
        // Built once per kind per process (a root certificate file replaced
        // while the process runs is read again only by a new process).
        static BUILT: Mutex<Vec<(TlsMode, Option<PathBuf>, MakeRustlsConnect)>> =
            Mutex::new(Vec::new());
        let mut built = BUILT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, _, connector)) = built
            .iter()
            .find(|(kind, path, _)| kind == mode && *path == root_path)
        {
            return Ok(Tls::On(connector.clone()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verify_chain = matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull);
        let roots = if let Some(path) = &root_path {
            // libpq: a root certificate makes `require` check the chain too.
            Some(roots_from_file(path)?)
        } else if verify_chain {
            if root != Some("system") {
                return Err(Error::Config(
                    "sslmode verify-ca/verify-full needs a root certificate: set sslrootcert (or sslrootcert=system for the system's roots)".into(),
                ));
            }
            Some(system_roots()?)
        } else {
            None
        };
        let chain = match roots {
            Some(roots) => Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|err| Error::Config(format!("cannot set up TLS: {err}")))?,
            ),
            None => None,
        };
        let verifier = Verifier {
            chain,
            host: *mode == TlsMode::VerifyFull,
            provider: provider.clone(),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::Config(format!("cannot set up TLS: {err}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let connector = MakeRustlsConnect::new(config);
        built.push((mode.clone(), root_path, connector.clone()));
        Ok(Tls::On(connector))
    }
}

/// The root certificates in PEM file `path` (`sslrootcert`).
fn roots_from_file(path: &std::path::Path) -> Result<RootCertStore> {
    let unreadable = |err: &dyn std::fmt::Display| {
        Error::Config(format!(
            "cannot read the root certificate `{}` (sslrootcert): {err}",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|err| unreadable(&err))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|err| unreadable(&err))?;
        roots.add(certificate).map_err(|err| unreadable(&err))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"no certificate in it"));
    }
    Ok(roots)
}

/// The system's root certificates (`sslrootcert=system`).
fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(Error::Config(format!(
            "sslrootcert=system: no usable root certificate found on this system{}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join("; "))
            }
        )));
    }
    Ok(roots)
}

/// What the `LISTEN` session checks of the server's certificate, as libpq
/// does: nothing without a root certificate (`prefer`, `require`), the chain
/// (`verify-ca`, or any mode given a root certificate), and the host name
/// too (`verify-full`). The handshake's signatures are always checked.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    host: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.host => Ok(ServerCertVerified::assertion()),
            outcome => outcome,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Opens a worker connection (Diesel, libpq) with pgpubsub's timeouts and
/// keepalives.
pub(crate) fn worker(info: &ConnInfo) -> Result<PgConnection> {
    PgConnection::establish(&info.for_libpq()).map_err(|source| Error::Connect {
        target: info.redacted(),
        source: Box::new(source),
    })
}

/// Opens the `LISTEN` session's client, with TLS as the string asks.
pub(crate) fn listen(info: &ConnInfo) -> Result<postgres::Client> {
    let (config, tls) = info.for_listen()?;
    let connected = match tls {
        Tls::Off(no_tls) => config.connect(no_tls),
        Tls::On(connector) => config.connect(connector),
    };
    connected.map_err(|source| Error::Connect {
        target: info.redacted(),
        source: Box::new(source),
    })
}

/// How often the `LISTEN` session is pinged.
pub(crate) const PING_AFTER: Duration = Duration::from_secs(10);

/// How long a ping of the `LISTEN` session may go unanswered before the
/// session is taken for dead and replaced: with [`PING_AFTER`], a half-open
/// session is replaced within 20 s.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(10);

fn quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && c != '\'' && c != '\\')
    {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

/// Reads `key = value` pairs as libpq does: spaces around `=` allowed,
/// values single-quoted with `\` escapes or bare up to the next space.
fn parse_key_values(text: &str) -> Result<Vec<(String, String)>> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(Error::Config(format!(
                "cannot read the connection string: `{key}` has no `=` after it"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => break,
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(Error::Config(format!(
                            "cannot read the connection string: the value of `{key}` has no closing quote"
                        )))
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        params.push((key, value));
    }
    Ok(params)
}

/// A URL that could not be read into parameters, with anything that may be
/// a password removed: the user-info's password and `password=` values.
fn redact_opaque(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{hosts}")
            }
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    match query {
        Some(query) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| {
                    let key = pair.split('=').next().unwrap_or_default();
                    !SECRETS.contains(&key)
                })
                .collect();
            if kept.is_empty() {
                base
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        }
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(text: &str) -> ConnInfo {
        match ConnInfo::parse(text) {
            Ok(info) => info,
            Err(err) => panic!("{text}: {err}"),
        }
    }

    #[test]
    fn urls_and_key_values_read_alike() {
        let url = info(
            "postgres://u%40x:p%20w@db.example:6543/app%2Fdb?sslmode=require&application_name=a+b",
        );
        assert_eq!(url.get("host"), Some("db.example"));
        assert_eq!(url.get("port"), Some("6543"));
        assert_eq!(url.get("user"), Some("u@x"));
        assert_eq!(url.get("password"), Some("p w"));
        assert_eq!(url.get("dbname"), Some("app/db"));
        assert_eq!(url.get("sslmode"), Some("require"));
        let kv = info("host=db.example port = 6543 user='u@x' password='p \\'w' dbname=app");
        assert_eq!(kv.get("host"), Some("db.example"));
        assert_eq!(kv.get("port"), Some("6543"));
        assert_eq!(kv.get("password"), Some("p 'w"));
        assert_eq!(info("postgres://[::1]:5432/x").get("host"), Some("::1"));
    }

    #[test]
    fn passwords_are_never_shown() {
        for text in [
            "host=h port=5 user=u password=hunter2 dbname=d",
            "host=h password='hun ter2' user=u",
            "postgres://u:hunter2@h:5/d",
            "postgres://u@h/d?password=hunter2",
            "postgres://u:hunter2@h1:5,h2:6/d?password=hunter2&sslmode=require",
        ] {
            let parsed = info(text);
            let shown = format!("{} {:?}", parsed.redacted(), parsed);
            assert!(!shown.contains("hunter2"), "{text} shown as {shown}");
            assert!(!shown.contains("hun ter2"), "{text} shown as {shown}");
        }
        assert_eq!(
            info("host=h port=5 user=u password=hunter2 dbname=d").redacted(),
            "host=h port=5 user=u dbname=d"
        );
    }

    #[test]
    fn defaults_do_not_override_the_users_settings() {
        let libpq = info("postgres://u@h/d?connect_timeout=3").for_libpq();
        assert!(libpq.contains("connect_timeout=3"), "{libpq}");
        assert!(!libpq.contains("connect_timeout=10"), "{libpq}");
        assert!(libpq.contains("keepalives=1"), "{libpq}");
        assert!(libpq.contains("tcp_user_timeout=20000"), "{libpq}");
        let quoted = info("host=h password='a b\\'c'").for_libpq();
        assert!(quoted.contains("password='a b\\'c'"), "{quoted}");
    }

    #[test]
    fn bad_strings_say_what_is_wrong() {
        let err = ConnInfo::parse("host=h user")
            .err()
            .map(|err| err.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|err| err.contains("`user` has no `=`")),
            "{err:?}"
        );
        let err = info("host=h sslmode=verify-full").for_listen().err();
        assert!(
            err.is_some_and(|err| err.to_string().contains("needs a root certificate")),
            "verify-full without a root certificate must fail"
        );
        let err = info("host=h sslmode=sometimes").for_listen().err();
        assert!(err.is_some_and(|err| err.to_string().contains("invalid sslmode `sometimes`")));
    }
}
