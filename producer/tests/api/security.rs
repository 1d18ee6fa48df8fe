//! TLS, mutual TLS, bearer tokens and the connection limit, end to end: the producer on port 0
//! with development certificates made for the test, real clients (tonic, reqwest, rustls, the
//! consumer itself).

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::Parser as _;
use producer::{Config, RunError};
use pushpull::{
    errors::{ErrorInfo, ErrorReason, key},
    pb::{self, producer_service_client::ProducerServiceClient},
    tls::{ClientFiles, dev_certs},
};
use tempfile::TempDir;
use testkit::{Served, bind, producer_flags};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{PROMPTLY, new_event, poll_request};

const PUBLISHER: &str = "publisher-token-0123456789";
const READER: &str = "reader-token-0123456789";
const SCRAPER: &str = "scraper-token-0123456789";
const FLAGS: [&str; 3] = ["ca", "cert", "key"];

fn tokens() -> String {
    format!("{PUBLISHER} publish,read\n{READER} read # the consumer's\n{SCRAPER} metrics")
}

/// A producer with TLS (certificates in `certs`) unless `plaintext`, tokens if given.
struct Secure {
    certs: TempDir,
    addr: SocketAddr,
    http: SocketAddr,
    server: Served<RunError>,
}

async fn start(args: &[&str], tokens: Option<String>, plaintext: bool) -> Secure {
    let certs = tempfile::tempdir().unwrap();
    dev_certs(
        certs.path(),
        &["producer".to_owned(), "client".to_owned()],
        &[],
    )
    .unwrap();
    let file = |name: &str| certs.path().join(name).display().to_string();
    let (cert, key) = (file("producer.pem"), file("producer.key"));
    let mut all: Vec<String> = Vec::new();
    if !plaintext {
        all.extend(["--tls-cert".into(), cert, "--tls-key".into(), key]);
    }
    // `{certs}` in an argument is the directory of the certificates made here.
    let dir = certs.path().display().to_string();
    all.extend(args.iter().map(|a| a.replace("{certs}", &dir)));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut config = Config::parse_from(std::iter::once("producer").chain(producer_flags(&all)));
    config.tokens = tokens;
    let (grpc, addr) = bind().await;
    let (http, http_addr) = bind().await;
    let listeners = producer::Listeners {
        grpc,
        http: Some(http),
    };
    let server = Served::spawn(|shutdown| producer::run_with(config, listeners, shutdown));
    Secure {
        certs,
        addr,
        http: http_addr,
        server,
    }
}

impl Secure {
    fn path(&self, name: &str) -> PathBuf {
        self.certs.path().join(name)
    }

    /// A TLS channel trusting the test CA, presenting `client.pem` if `identity`.
    async fn tls(&self, identity: bool) -> Result<Channel, tonic::transport::Error> {
        let files = ClientFiles {
            ca: Some(self.path("ca.pem")),
            cert: identity.then(|| self.path("client.pem")),
            key: identity.then(|| self.path("client.key")),
        };
        let url = format!("https://127.0.0.1:{}", self.addr.port());
        pushpull::tls::endpoint(&url, &files, FLAGS)
            .unwrap()
            .connect()
            .await
    }

    async fn plain(&self) -> Result<Channel, tonic::transport::Error> {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
    }
}

async fn publish(channel: Channel, token: Option<&str>) -> Result<u64, tonic::Status> {
    let mut request = tonic::Request::new(pb::PublishRequest {
        events: vec![new_event("t", b"x")],
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let response = tokio::time::timeout(
        PROMPTLY,
        ProducerServiceClient::new(channel).publish(request),
    )
    .await
    .expect("answered promptly")?;
    Ok(response.into_inner().last_sequence)
}

async fn head(channel: Channel, token: Option<&str>) -> u64 {
    let mut request = tonic::Request::new(poll_request(Some(0)));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    ProducerServiceClient::new(channel)
        .poll(request)
        .await
        .expect("poll")
        .into_inner()
        .head_sequence
}

fn assert_refused(status: &tonic::Status, code: Code, reason: ErrorReason) -> ErrorInfo {
    assert_eq!(status.code(), code, "{status:?}");
    let info = ErrorInfo::from_status(status).expect("an ErrorInfo");
    assert_eq!(info.reason, reason, "{status:?}");
    info
}

#[tokio::test]
async fn grpc_and_http_serve_tls_and_a_plaintext_client_gets_nothing() {
    let producer = start(&[], None, false).await;
    let tls = producer.tls(false).await.expect("TLS connects");
    assert_eq!(publish(tls.clone(), None).await.unwrap(), 1);

    // Plaintext HTTP/2 to the TLS port: no connection, or no answer; never a served call.
    let plain = match producer.plain().await {
        Ok(channel) => publish(channel, None).await.map(|_| ()),
        Err(err) => Err(tonic::Status::unavailable(err.to_string())),
    };
    assert!(plain.is_err(), "a plaintext call was served: {plain:?}");
    assert_eq!(
        head(tls.clone(), None).await,
        1,
        "nothing more was appended"
    );

    // The HTTP port speaks TLS too (HTTP/1.1 by ALPN here).
    let response = https_get(&producer, "/poll?after=0").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"head_sequence\":1"), "{response}");
    producer.server.stop().await.unwrap();
}

/// `GET path` over TLS with rustls, trusting the test CA; the whole response as text.
async fn https_get(producer: &Secure, path: &str) -> String {
    let pem = std::fs::read(producer.path("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(&pem)
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(pushpull::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(producer.http).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PROMPTLY, tls.read_to_end(&mut response))
        .await
        .expect("answered")
        .ok();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn mutual_tls_serves_only_clients_with_a_certificate_from_the_ca() {
    let certs = tempfile::tempdir().unwrap();
    dev_certs(certs.path(), &["producer".into(), "client".into()], &[]).unwrap();
    let other = tempfile::tempdir().unwrap();
    dev_certs(other.path(), &["client".into()], &[]).unwrap();
    let p = |dir: &TempDir, name: &str| dir.path().join(name).display().to_string();
    let args = [
        "--tls-cert".to_owned(),
        p(&certs, "producer.pem"),
        "--tls-key".to_owned(),
        p(&certs, "producer.key"),
        "--tls-client-ca".to_owned(),
        p(&certs, "ca.pem"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = Config::parse_from(std::iter::once("producer").chain(producer_flags(&args)));
    let (grpc, addr) = bind().await;
    let server = Served::spawn(|shutdown| {
        producer::run_with(config, producer::Listeners { grpc, http: None }, shutdown)
    });
    let url = format!("https://127.0.0.1:{}", addr.port());
    let connect = |cert: Option<(String, String)>| {
        let files = ClientFiles {
            ca: Some(certs.path().join("ca.pem")),
            cert: cert.as_ref().map(|(c, _)| c.into()),
            key: cert.as_ref().map(|(_, k)| k.into()),
        };
        let url = url.clone();
        async move {
            let channel = pushpull::tls::endpoint(&url, &files, FLAGS)
                .unwrap()
                .connect()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            publish(channel, None).await
        }
    };
    assert!(connect(None).await.is_err(), "no client certificate");
    let foreign = (p(&other, "client.pem"), p(&other, "client.key"));
    assert!(
        connect(Some(foreign)).await.is_err(),
        "a certificate from another CA"
    );
    let ours = (p(&certs, "client.pem"), p(&certs, "client.key"));
    assert_eq!(connect(Some(ours)).await.unwrap(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_calls_need_a_token_with_their_scope_and_health_stays_open() {
    let producer = start(&[], Some(tokens()), true).await;
    let channel = producer.plain().await.unwrap();

    let missing = publish(channel.clone(), None).await.unwrap_err();
    assert_refused(&missing, Code::Unauthenticated, ErrorReason::TokenMissing);
    let unknown = publish(channel.clone(), Some("not-a-token-0123456789"))
        .await
        .unwrap_err();
    assert_refused(&unknown, Code::Unauthenticated, ErrorReason::TokenInvalid);
    assert!(
        !unknown.message().contains("not-a-token"),
        "a token is never echoed: {unknown:?}"
    );
    let denied = publish(channel.clone(), Some(READER)).await.unwrap_err();
    let info = assert_refused(&denied, Code::PermissionDenied, ErrorReason::ScopeMissing);
    assert_eq!(info.get(key::SCOPE), Some("publish"));
    assert_eq!(publish(channel.clone(), Some(PUBLISHER)).await.unwrap(), 1);

    // Reading needs `read`: the reader may, the scraper may not, nobody without a token.
    assert_eq!(
        head(channel.clone(), Some(READER)).await,
        1,
        "only one append"
    );
    let mut poll = ProducerServiceClient::new(channel.clone());
    let status = poll.poll(poll_request(Some(0))).await.unwrap_err();
    assert_refused(&status, Code::Unauthenticated, ErrorReason::TokenMissing);
    let mut request = tonic::Request::new(pb::SubscribeRequest {
        after_sequence: Some(0),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {SCRAPER}").parse().unwrap(),
    );
    let status = poll.subscribe(request).await.unwrap_err();
    assert_refused(&status, Code::PermissionDenied, ErrorReason::ScopeMissing);

    // Health needs nothing: probes and load balancers hold no secret.
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is open")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");
    producer.server.stop().await.unwrap();
}

#[tokio::test]
async fn http_routes_need_a_token_with_their_scope() {
    let producer = start(&["--metrics-auth"], Some(tokens()), true).await;
    let base = format!("http://{}", producer.http);
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let response = get("/poll?after=0", None).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"pushpull\""
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "TOKEN_MISSING", "{body}");
    assert_eq!(body["code"], "unauthenticated", "{body}");
    assert_eq!(
        get("/poll?after=0", Some(READER)).await.unwrap().status(),
        200
    );
    assert_eq!(
        get("/poll?after=0", Some("wrong-token-0123456789"))
            .await
            .unwrap()
            .status(),
        401
    );

    let publish = |token: &'static str| {
        http.post(format!("{base}/publish"))
            .bearer_auth(token)
            .json(&serde_json::json!({"events": [{"topic": "t", "payload": "x"}]}))
            .send()
    };
    let denied = publish(READER).await.unwrap();
    assert_eq!(denied.status(), 403);
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["reason"], "SCOPE_MISSING", "{body}");
    assert_eq!(body["metadata"]["scope"], "publish", "{body}");
    assert_eq!(publish(PUBLISHER).await.unwrap().status(), 200);

    // EventSource cannot send headers: /events takes the token as a query parameter; other
    // routes do not (a token in a URL ends up in logs and histories).
    let events = get(&format!("/events?after=0&access_token={READER}"), None)
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    drop(events);
    assert_eq!(
        get(&format!("/poll?after=0&access_token={READER}"), None)
            .await
            .unwrap()
            .status(),
        401
    );

    // The page itself holds no data; metrics need the `metrics` scope with --metrics-auth.
    assert_eq!(get("/", None).await.unwrap().status(), 200);
    assert_eq!(get("/metrics", None).await.unwrap().status(), 401);
    assert_eq!(get("/metrics", Some(READER)).await.unwrap().status(), 403);
    let metrics = get("/metrics", Some(SCRAPER)).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("reason=\"TOKEN_MISSING\""),
        "refusals are counted"
    );
    producer.server.stop().await.unwrap();
}

#[tokio::test]
async fn the_consumer_reads_over_tls_with_its_token() {
    let producer = start(&[], Some(tokens()), false).await;
    let tls = producer.tls(false).await.unwrap();
    for _ in 0..5 {
        publish(tls.clone(), Some(PUBLISHER)).await.unwrap();
    }
    let url = format!("https://127.0.0.1:{}", producer.addr.port());
    let ca = producer.path("ca.pem").display().to_string();
    for mode in ["push", "poll"] {
        let mut config = consumer::Config::parse_from([
            "consumer",
            "--producer",
            &url,
            "--producer-ca",
            &ca,
            "--mode",
            mode,
            "--from",
            "0",
        ]);
        config.producer_token = Some(READER.to_owned());
        let (listener, addr) = bind().await;
        let running = Served::spawn(|shutdown| consumer::run(config, listener, shutdown));
        let stats = testkit::channel(addr).await;
        let mut stats = pb::consumer_service_client::ConsumerServiceClient::new(stats);
        let received = tokio::time::timeout(PROMPTLY, async {
            loop {
                let s = stats
                    .get_stats(pb::GetStatsRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                if s.events_received >= 5 {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{mode}: the consumer read the 5 events over TLS"));
        assert_eq!(received.events_received, 5, "{mode}");
        assert_eq!(received.events_missed, 0, "{mode}");
        running.stop().await.unwrap();
    }
    producer.server.stop().await.unwrap();
}

#[tokio::test]
async fn over_max_connections_a_connection_is_answered_and_closed() {
    let producer = start(&["--max-connections", "1"], None, true).await;
    let first = producer.plain().await.unwrap();
    assert_eq!(publish(first.clone(), None).await.unwrap(), 1);

    let second = producer.plain().await.unwrap();
    let refused = publish(second, None).await.unwrap_err();
    let info = assert_refused(
        &refused,
        Code::ResourceExhausted,
        ErrorReason::TooManyConnections,
    );
    assert_eq!(info.get(key::FLAG), Some("--max-connections"));
    assert_eq!(info.get(key::LIMIT), Some("1"));
    // The first connection is still served.
    assert_eq!(publish(first.clone(), None).await.unwrap(), 2);

    // The HTTP port has its own limit: one idle connection takes it.
    let held = tokio::net::TcpStream::connect(producer.http).await.unwrap();
    let response = reqwest::get(format!("http://{}/poll", producer.http))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "TOO_MANY_CONNECTIONS", "{body}");
    drop(held);

    // Once the first gRPC connection is gone, another is served.
    drop(first);
    let served = tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Ok(channel) = producer.plain().await
                && publish(channel, None).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(served.is_ok(), "a slot came free");
    producer.server.stop().await.unwrap();
}

#[tokio::test]
async fn webhooks_reach_a_consumer_serving_tls() {
    // The producer trusts the consumer's private CA for https:// deliveries.
    let producer = start(&["--webhook-ca", "{certs}/ca.pem"], None, true).await;
    let file = |name: &str| producer.path(name).display().to_string();
    let (cert, key) = (file("client.pem"), file("client.key"));
    let config = consumer::Config::parse_from([
        "consumer",
        "--producer",
        &format!("http://{}", producer.addr),
        "--mode",
        "webhook",
        "--from",
        "0",
        "--webhook-id",
        "tls-receiver",
        "--metrics-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let (grpc, addr) = bind().await;
    let (http, _) = bind().await;
    let running = Served::spawn(|shutdown| {
        consumer::run_with(
            config,
            consumer::Listeners {
                grpc,
                metrics: Some(http),
            },
            shutdown,
        )
    });
    // Its GetStats port serves TLS too.
    let files = ClientFiles {
        ca: Some(producer.path("ca.pem")),
        ..ClientFiles::default()
    };
    let url = format!("https://127.0.0.1:{}", addr.port());
    let channel = match pushpull::tls::endpoint(&url, &files, FLAGS)
        .unwrap()
        .connect()
        .await
    {
        Ok(channel) => channel,
        Err(err) => panic!(
            "the consumer's gRPC port speaks TLS: {err}; the consumer: {:?}",
            running.stop().await
        ),
    };
    let mut stats = pb::consumer_service_client::ConsumerServiceClient::new(channel);
    let until = |done: fn(&pb::GetStatsResponse) -> bool| {
        let mut stats = stats.clone();
        async move {
            tokio::time::timeout(PROMPTLY, async {
                loop {
                    let s = stats
                        .get_stats(pb::GetStatsRequest {})
                        .await
                        .unwrap()
                        .into_inner();
                    if done(&s) {
                        return s;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .expect("in time")
        }
    };
    until(|s| s.connected).await;
    let plain = producer.plain().await.unwrap();
    for _ in 0..5 {
        publish(plain.clone(), None).await.unwrap();
    }
    let s = until(|s| s.events_received >= 5 && s.webhooks_received >= 1).await;
    assert_eq!(s.events_received, 5);
    assert_eq!(s.events_missed, 0);
    let _ = stats.get_stats(pb::GetStatsRequest {}).await;
    running.stop().await.unwrap();
    producer.server.stop().await.unwrap();
}
