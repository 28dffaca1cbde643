//! Real network components on loopback, started by a test and stopped when dropped: the
//! corporate network of DESIGN.md 3.8 in miniature.
//!
//! - [`HttpProxy`]: tinyproxy, an HTTP proxy (`CONNECT` tunnels and absolute-form requests),
//!   with or without basic credentials;
//! - [`SocksProxy`]: microsocks, a SOCKS5 proxy, with or without credentials;
//! - [`Gateway`]: stunnel, a TLS-inspecting gateway: it ends TLS with a certificate from a
//!   company CA ([`TestCa`]) and forwards plain TCP to the real server;
//! - [`RefusingProxy`]: a proxy that answers every request with a fixed status, and
//!   [`dead_port`]: a proxy that is down;
//! - [`StuckV6`]: an IPv6 path that black-holes SYNs.
//!
//! Each process component runs in the foreground in its own temporary directory (config and
//! log), on a free port of 127.0.0.1, and is killed and its directory removed on drop. A start
//! returns once the component accepts connections, and panics naming the missing binary if
//! its Debian package is not installed (`scripts/test.sh` installs them).
//!
//! The counters read the component's own log: the ground truth of where traffic went, never
//! the client's own account of it. Each component writes the line before it answers the
//! client, so a count is complete as soon as the client has seen the answer.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How long a component may take to start before the test fails.
const START_WAIT: Duration = Duration::from_secs(10);
/// How often a start checks whether the component is ready.
const POLL: Duration = Duration::from_millis(10);
/// How many free ports a start tries: another process may take a port between the moment it
/// is found free and the moment the component binds it.
const START_ATTEMPTS: usize = 3;
/// The names a loopback target may go by in a proxy's log.
const LOOPBACK_NAMES: [&str; 4] = ["127.0.0.1", "localhost", "::1", "[::1]"];

/// A port of 127.0.0.1 that nothing listens on: a connect to it is refused at once, as to a
/// proxy that is down. The port was free when this returned (bound, then released).
pub fn dead_port() -> u16 {
    StdListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until `check` holds, polling every 10 ms, and panics naming `what` after 5 s: for
/// what a component logs after the client has already seen the outcome (stunnel logs a
/// client's alert after the client has given up).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// An HTTP proxy (tinyproxy) on 127.0.0.1: tunnels `CONNECT` to any port, forwards
/// absolute-form requests, and logs each request it reads.
///
/// tinyproxy answers a request without credentials with `407 Proxy Authentication Required`,
/// but one with wrong credentials with `401 Unauthorized` (and a `WWW-Authenticate` header),
/// `CONNECT` included: a client that only treats 407 as "proxy credentials" misreads it.
/// Neither answer is logged beyond the request line, so [`connects_to`](Self::connects_to)
/// counts refused attempts too.
#[derive(Debug)]
pub struct HttpProxy {
    // Declared before `dir`: the process is killed before its directory is removed.
    _child: Child,
    port: u16,
    auth: Option<(String, String)>,
    log_path: PathBuf,
    _dir: TempDir,
}

impl HttpProxy {
    /// Starts tinyproxy on a free port, requiring `auth` (user, password) as basic
    /// credentials when given. tinyproxy's config accepts only `-`, `.`, `_`, letters and
    /// digits in them; anything else is a panic here rather than a proxy that rejects all.
    pub async fn start(auth: Option<(&str, &str)>) -> Self {
        if let Some((user, pass)) = auth {
            let plain = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            };
            assert!(
                plain(user) && plain(pass),
                "tinyproxy's BasicAuth takes only [-._A-Za-z0-9]+ for user and password"
            );
        }
        let dir = component_dir("tinyproxy");
        let log_path = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = dead_port();
            // No `ConnectPort` line: tinyproxy then tunnels to any port, the dev server's random
            // one included (with one, it answers others with 403). `Timeout` is the idle limit
            // of a connection: long, so a quiet WebSocket is not cut by the proxy mid-test.
            let mut text = format!(
                "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 600\nMaxClients 100\n\
                 LogLevel Info\nLogFile \"{}\"\n",
                log_path.display()
            );
            if let Some((user, pass)) = auth {
                text.push_str(&format!("BasicAuth {user} {pass}\n"));
            }
            write_file(&conf, &text);
            // A truncated log, so the readiness line found is this attempt's.
            write_file(&log_path, "");
            // The log file says when it listens; a probe connection would show in the log
            // as a client.
            let ready = Ready::LogLine(log_path.clone(), "Starting main loop".into());
            match launch(
                &TINYPROXY,
                &["-d".as_ref(), "-c".as_ref(), conf.as_os_str()],
                dir.path(),
                &ready,
            )
            .await
            {
                Ok(child) => {
                    return Self {
                        _child: child,
                        port,
                        auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
                        log_path,
                        _dir: dir,
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("tinyproxy did not start: {last}");
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, with the credentials it was started with as `user:pass@`.
    pub fn url(&self) -> String {
        match &self.auth {
            Some((user, pass)) => self.url_with(user, pass),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// `http://user:pass@127.0.0.1:PORT` with any credentials (percent-encoded), such as
    /// wrong ones.
    pub fn url_with(&self, user: &str, pass: &str) -> String {
        format!(
            "http://{}:{}@127.0.0.1:{}",
            userinfo(user),
            userinfo(pass),
            self.port
        )
    }

    /// How many `CONNECT` requests for a loopback address (`127.0.0.1`, `localhost`, `::1`)
    /// at `port` it has read, whether it then tunnelled them or refused them. The line, at
    /// level `CONNECT`: `... [32702]: Request (file descriptor 5): CONNECT 127.0.0.1:18080
    /// HTTP/1.1`; an absolute-form request has `GET http://127.0.0.1:18080/health HTTP/1.1`
    /// in its place.
    pub fn connects_to(&self, port: u16) -> usize {
        self.requests()
            .iter()
            .filter(|(method, target)| method == "CONNECT" && loopback_target(target, port))
            .count()
    }

    /// How many `CONNECT` requests for `host:port` (any host) it has read.
    pub fn connects_to_host(&self, host: &str, port: u16) -> usize {
        self.requests()
            .iter()
            .filter(|(method, target)| method == "CONNECT" && *target == format!("{host}:{port}"))
            .count()
    }

    /// How many forwarded (absolute-form) requests for `http://host:port/...` it has read.
    pub fn requests_to_host(&self, host: &str, port: u16) -> usize {
        let prefix = format!("http://{host}:{port}/");
        self.requests()
            .iter()
            .filter(|(method, target)| method != "CONNECT" && target.starts_with(&prefix))
            .count()
    }

    /// How many absolute-form requests (`GET http://127.0.0.1:PORT/...`, any method but
    /// `CONNECT`) for a loopback address at `port` it has read: plain HTTP forwarded by the
    /// proxy rather than tunnelled.
    pub fn requests_to(&self, port: u16) -> usize {
        self.requests()
            .iter()
            .filter(|(method, target)| {
                method != "CONNECT"
                    && target
                        .strip_prefix("http://")
                        .map(|rest| rest.split('/').next().unwrap_or(rest))
                        .is_some_and(|authority| loopback_target(authority, port))
            })
            .count()
    }

    /// How many client connections it has accepted (`Connect (file descriptor 5): 127.0.0.1`),
    /// including those that never sent a request.
    pub fn clients(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("]: Connect (file descriptor "))
            .count()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// (method, target) of every request line in the log.
    fn requests(&self) -> Vec<(String, String)> {
        self.log()
            .lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once("]: Request (file descriptor ")?;
                let (_, line) = rest.split_once("): ")?;
                let mut words = line.split_whitespace();
                Some((words.next()?.to_owned(), words.next()?.to_owned()))
            })
            .collect()
    }
}

/// A SOCKS5 proxy (microsocks) on 127.0.0.1, logging each connection it makes for a client.
#[derive(Debug)]
pub struct SocksProxy {
    _child: Child,
    port: u16,
    auth: Option<(String, String)>,
    log_path: PathBuf,
    _dir: TempDir,
}

impl SocksProxy {
    /// Starts microsocks on a free port, requiring `auth` (user, password) when given
    /// (RFC 1929 username/password authentication).
    pub async fn start(auth: Option<(&str, &str)>) -> Self {
        let dir = component_dir("microsocks");
        // microsocks has no log file: what it prints is its log.
        let log_path = dir.path().join(OUTPUT);
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = dead_port();
            let port_arg = port.to_string();
            let mut args = vec!["-i", "127.0.0.1", "-p", port_arg.as_str()];
            if let Some((user, pass)) = auth {
                args.extend(["-u", user, "-P", pass]);
            }
            let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
            // microsocks prints nothing when it starts, and nothing for a connection that
            // never asks for a target, so a probe connection leaves no trace.
            match launch(&MICROSOCKS, &args, dir.path(), &Ready::Accepts(port)).await {
                Ok(child) => {
                    return Self {
                        _child: child,
                        port,
                        auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
                        log_path,
                        _dir: dir,
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("microsocks did not start: {last}");
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `socks5h://[user:pass@]127.0.0.1:PORT`: the proxy resolves host names.
    pub fn url_h(&self) -> String {
        self.url_scheme("socks5h")
    }

    /// `socks5://[user:pass@]127.0.0.1:PORT`: the client resolves host names.
    pub fn url(&self) -> String {
        self.url_scheme("socks5")
    }

    fn url_scheme(&self, scheme: &str) -> String {
        match &self.auth {
            Some((user, pass)) => format!(
                "{scheme}://{}:{}@127.0.0.1:{}",
                userinfo(user),
                userinfo(pass),
                self.port
            ),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// How many connections it made for clients to a loopback address at `port`. The line:
    /// `client[4] 127.0.0.1: connected to localhost:18080`, the target as the client named it
    /// (a name with `socks5h`, an address with `socks5`). Failed authentications and failed
    /// connects print nothing.
    pub fn connections_to(&self, port: u16) -> usize {
        self.log()
            .lines()
            .filter_map(|l| l.split_once(": connected to ").map(|(_, t)| t.trim()))
            .filter(|target| loopback_target(target, port))
            .count()
    }

    /// How many connections it made to `host:port` (any host).
    pub fn connections_to_host(&self, host: &str, port: u16) -> usize {
        let want = format!("{host}:{port}");
        self.log()
            .lines()
            .filter_map(|l| l.split_once(": connected to ").map(|(_, t)| t.trim()))
            .filter(|target| *target == want)
            .count()
    }

    /// Its log (everything it printed) so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }
}

/// A proxy that answers every request with one status and closes: a proxy that refuses
/// (403 from a policy, 502 from a dead upstream, 407 without a challenge a client can meet).
#[derive(Debug)]
pub struct RefusingProxy {
    port: u16,
    hits: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl RefusingProxy {
    /// Listens on a free port of 127.0.0.1 and answers `status_line` (`HTTP/1.1 403
    /// Forbidden`) with `Content-Length: 0` and `Connection: close`. Extra header lines may
    /// follow the status in `status_line`, separated by `\r\n`.
    pub async fn start(status_line: &str) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the refusing proxy");
        let port = listener.local_addr().expect("its address").port();
        let answer: Arc<str> =
            format!("{status_line}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into();
        let hits = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (h, r) = (hits.clone(), heads.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                h.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(refuse(tcp, answer.clone(), r.clone()));
            }
        });
        Self {
            port,
            hits,
            heads,
            task,
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many connections it has accepted.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// What each client sent before the answer (a request head, lossily decoded), in order.
    pub fn requests(&self) -> Vec<String> {
        self.heads.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

impl Drop for RefusingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads what the client sends first, then answers and closes. Reading first matters: a
/// socket closed with unread input sends a reset, which can destroy the answer before the
/// client reads it.
async fn refuse(mut tcp: TcpStream, answer: Arc<str>, heads: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        // An HTTP head ends with a blank line; anything else (a SOCKS greeting) is answered
        // as soon as its first bytes are in, since it will not send more before a reply.
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            if !head.first().is_some_and(u8::is_ascii_uppercase) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    if let Ok(mut h) = heads.lock() {
        h.push(String::from_utf8_lossy(&head).into_owned());
    }
    let _ = tcp.write_all(answer.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

/// A certificate authority for tests: a company's inspecting CA, or a server's own.
pub struct TestCa {
    name: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("name", &self.name).finish()
    }
}

impl TestCa {
    /// A new CA whose certificate's subject (and so its certificates' issuer) has the common
    /// name `name`: the name a "certificate not trusted" failure should report.
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("a CA needs no subject alternative names");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Tether Tests");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("a CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("the CA certificate");
        Self {
            name: name.to_owned(),
            issuer,
        }
    }

    /// The common name it was made with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Its certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// Writes its certificate as PEM into `dir` (a file named after the CA) and returns the
    /// path: a trust store of this CA alone, as `SSL_CERT_FILE` expects.
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let stem: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let path = dir.join(format!("{stem}.pem"));
        write_file(&path, &self.cert_pem());
        path
    }

    /// A server certificate for `names` (host names or IP addresses, as subject alternative
    /// names; the first is also the common name) signed by this CA: (certificate PEM, key
    /// PEM).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let (cert, key) = self.issue_cert(names);
        (cert.pem(), key.serialize_pem())
    }

    /// A certificate this CA issued for `names`, and its private key (PKCS#8), both DER: a
    /// dev server's TLS identity.
    pub fn issue_der(&self, names: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let (cert, key) = self.issue_cert(names);
        (cert.der().to_vec(), key.serialize_der())
    }

    fn issue_cert(&self, names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params =
            rcgen::CertificateParams::new(sans).expect("names are host names or IP addresses");
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, *first);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("a server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("the CA signs the server certificate");
        (cert, key)
    }
}

/// The SPKI pin of a certificate: base64 (standard, padded) of the SHA-256 digest of its
/// SubjectPublicKeyInfo, as HPKP and most pinning settings write it. Panics on bytes that
/// are not a DER X.509 certificate.
pub fn spki_sha256_base64(cert_der: &[u8]) -> String {
    use base64::Engine as _;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).expect("a DER X.509 certificate");
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A TLS-inspecting gateway (stunnel) on 127.0.0.1: it ends TLS with a certificate for
/// `localhost` and `127.0.0.1` signed by a company CA, and forwards the plain bytes to the
/// real server. A client reaches the server through it only if it trusts that CA.
#[derive(Debug)]
pub struct Gateway {
    _child: Child,
    port: u16,
    cert_pem: String,
    cert_der: Vec<u8>,
    log_path: PathBuf,
    _dir: TempDir,
}

impl Gateway {
    /// Starts stunnel on a free port, forwarding to `127.0.0.1:backend_port`, with a
    /// certificate signed by `ca`.
    pub async fn start(backend_port: u16, ca: &TestCa) -> Self {
        let dir = component_dir("stunnel");
        let (cert, key) = ca.issue_cert(&["localhost", "127.0.0.1"]);
        let cert_path = dir.path().join("gateway.pem");
        let key_path = dir.path().join("gateway.key");
        write_file(&cert_path, &cert.pem());
        write_file(&key_path, &key.serialize_pem());
        let conf = dir.path().join("stunnel.conf");
        // With `foreground = yes` stunnel logs to stderr, which is captured; `syslog = no`
        // keeps it out of the machine's log and `pid =` writes no pid file. Level `info`
        // has the line that says it listens and one per finished handshake.
        // `TIMEOUTclose = 0`: no wait for the peer's close_notify, so a closed connection
        // is closed at once on the other side too.
        let log_path = dir.path().join(OUTPUT);
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = dead_port();
            write_file(
                &conf,
                &format!(
                    "foreground = yes\npid =\nsyslog = no\ndebug = info\n\n[gateway]\n\
                     accept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{backend_port}\n\
                     cert = {}\nkey = {}\nTIMEOUTclose = 0\n",
                    cert_path.display(),
                    key_path.display()
                ),
            );
            // The log says when it listens; a probe connection would count as a connection.
            let ready = Ready::LogLine(log_path.clone(), format!(" bound to 127.0.0.1:{port}"));
            match launch(&STUNNEL, &[conf.as_os_str()], dir.path(), &ready).await {
                Ok(child) => {
                    return Self {
                        _child: child,
                        port,
                        cert_pem: cert.pem(),
                        cert_der: cert.der().to_vec(),
                        log_path,
                        _dir: dir,
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("stunnel did not start: {last}");
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT` (its certificate also names `localhost`).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The certificate it presents, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate it presents, DER (for [`spki_sha256_base64`]).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// How many TCP connections it has accepted, whatever became of their handshake. The
    /// line: `LOG5[0]: Service [gateway] accepted connection from 127.0.0.1:50172`.
    pub fn connections(&self) -> usize {
        self.count("accepted connection from")
    }

    /// How many TLS handshakes it has completed: `LOG6[0]: TLS accepted: new session
    /// negotiated`. A client that refuses the certificate ends the handshake with an alert,
    /// logged as `LOG3[1]: SSL_accept: ...: tlsv1 alert unknown ca`.
    pub fn handshakes(&self) -> usize {
        self.count("TLS accepted:")
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }
}

/// A listener on `[::1]:PORT` that never answers: models an IPv6 path that black-holes SYNs
/// (a broken tunnel, a firewall that drops rather than rejects), for a host name with a
/// working IPv4 address on the same port. A connect to it neither succeeds nor fails; only
/// the client's own timeout or a race with IPv4 ends it.
///
/// How: the listener's accept queue is made full and nobody accepts. Linux then drops new
/// SYNs without a reset (unless `net.ipv4.tcp_abort_on_overflow` is set), so the client
/// retransmits them for as long as it waits.
#[derive(Debug)]
pub struct StuckV6 {
    port: u16,
    // Kept open, never accepted: they are what fills the queue.
    _listener: TcpListener,
    _held: Vec<TcpStream>,
}

impl StuckV6 {
    /// Listens on `[::1]:port` (backlog 0) and connects to it until a connect hangs. Panics
    /// if `[::1]:port` cannot be bound (no IPv6 loopback, or the port taken on `::1`), or if
    /// the queue does not fill.
    pub async fn start(port: u16) -> Self {
        let addr = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        let socket = TcpSocket::new_v6().expect("an IPv6 socket (is IPv6 enabled?)");
        socket
            .bind(addr)
            .unwrap_or_else(|e| panic!("bind {addr} for the stuck IPv6 path: {e}"));
        let listener = socket.listen(0).expect("listen on [::1]");
        let mut held = Vec::new();
        // Linux keeps one connection in a queue of backlog 0 (it admits up to backlog + 1);
        // a few more attempts cover a kernel that admits more.
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => held.push(tcp),
                Ok(Err(e)) => panic!("connect to {addr} while filling its queue: {e}"),
                Err(_) => {
                    return Self {
                        port,
                        _listener: listener,
                        _held: held,
                    };
                }
            }
        }
        panic!(
            "{addr}: {} connections queued and the next still answered: the queue does not fill",
            held.len()
        );
    }

    /// The port, on `[::1]`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `[::1]:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv6Addr::LOCALHOST, self.port))
    }
}

/// A program a component runs: the names it may be installed under and its Debian package.
struct Program {
    binaries: &'static [&'static str],
    package: &'static str,
}

const TINYPROXY: Program = Program {
    binaries: &["tinyproxy"],
    package: "tinyproxy",
};
const MICROSOCKS: Program = Program {
    binaries: &["microsocks"],
    package: "microsocks",
};
// Debian installs `stunnel4` with `stunnel` as a link to it; other systems only `stunnel`.
const STUNNEL: Program = Program {
    binaries: &["stunnel4", "stunnel"],
    package: "stunnel4",
};

/// Where a component's stdout and stderr go, in its directory.
const OUTPUT: &str = "output.log";

/// How a start knows the component is ready.
enum Ready {
    /// The file contains this text.
    LogLine(PathBuf, String),
    /// 127.0.0.1 at this port accepts a connection.
    Accepts(u16),
}

impl Ready {
    async fn check(&self) -> bool {
        match self {
            Ready::LogLine(path, needle) => read_log(path).contains(needle.as_str()),
            Ready::Accepts(port) => TcpStream::connect((Ipv4Addr::LOCALHOST, *port))
                .await
                .is_ok(),
        }
    }
}

/// Runs `program` with `args` in `dir` (stdout and stderr to [`OUTPUT`] there), killed when
/// the returned child is dropped, and waits until `ready`. An `Err` (the process exited, or
/// was not ready in time) is worth another try on another port; a missing binary is a panic.
async fn launch(
    program: &Program,
    args: &[&std::ffi::OsStr],
    dir: &Path,
    ready: &Ready,
) -> Result<Child, String> {
    let output_path = dir.join(OUTPUT);
    let mut child = None;
    for binary in program.binaries {
        let output = std::fs::File::create(&output_path).expect("create the output file");
        let stderr = output.try_clone().expect("share the output file");
        match Command::new(binary)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => {
                child = Some(c);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => panic!("run {binary}: {e}"),
        }
    }
    let Some(mut child) = child else {
        panic!(
            "`{}` is not installed: apt-get install {} (scripts/test.sh installs it when missing)",
            program.binaries.join("` or `"),
            program.package
        );
    };
    let deadline = Instant::now() + START_WAIT;
    loop {
        if ready.check().await {
            return Ok(child);
        }
        let failure = if let Ok(Some(status)) = child.try_wait() {
            status.to_string()
        } else if Instant::now() > deadline {
            format!("not ready after {START_WAIT:?}")
        } else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let mut report = format!("{failure}; its output:\n{}", read_log(&output_path));
        if let Ready::LogLine(log, _) = ready
            && *log != output_path
        {
            report.push_str(&format!("\nits log:\n{}", read_log(log)));
        }
        return Err(report);
    }
}

/// A fresh temporary directory for one component, removed on drop.
fn component_dir(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tether-{name}-"))
        .tempdir()
        .expect("a temporary directory")
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A log's text; empty before the component wrote it.
fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Whether `target` (`host:port` as a proxy logs it) is a loopback address at `port`.
fn loopback_target(target: &str, port: u16) -> bool {
    target
        .rsplit_once(':')
        .is_some_and(|(host, p)| p == port.to_string() && LOOPBACK_NAMES.contains(&host))
}

/// `s` percent-encoded for the user or password of a URL.
fn userinfo(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// This machine's address on the interface of its default route, if it has one: a server
/// there is not loopback, so the environment's proxies and the plain-text rule apply to it.
/// Connecting a UDP socket only picks a route; nothing is sent.
pub fn non_loopback_ipv4() -> Option<std::net::IpAddr> {
    let udp = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    udp.connect(("10.255.255.1", 9)).ok()?;
    let ip = udp.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// The `tether` command at `program` (a test's `env!("CARGO_BIN_EXE_tether-under-test")`)
/// with `args` and `env`, and none of this process's proxy, certificate, credential or log
/// variables (in either case): a test that runs at the same time as others never sets them in
/// its own process, and a CI machine's `NO_PROXY` must not send it around the proxy under test.
/// Every stream is piped; the process is killed when dropped.
pub fn tether_command(
    program: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "TETHER_PROXY",
        "TETHER_TOKEN",
        "TETHER_PASSWORD",
        "TETHER_LOG",
        "RUST_LOG",
    ] {
        cmd.env_remove(var).env_remove(var.to_lowercase());
    }
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_match_by_name_and_port() {
        assert!(loopback_target("127.0.0.1:8080", 8080));
        assert!(loopback_target("localhost:8080", 8080));
        assert!(loopback_target("[::1]:8080", 8080));
        assert!(loopback_target("::1:8080", 8080));
        assert!(!loopback_target("127.0.0.1:80800", 8080));
        assert!(!loopback_target("example.com:8080", 8080));
    }

    #[test]
    fn userinfo_escapes_what_a_url_cannot_hold() {
        assert_eq!(userinfo("alice"), "alice");
        assert_eq!(userinfo("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
    }
}
