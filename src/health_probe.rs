//! A client for the gRPC health protocol (`grpc.health.v1.Health/Check`), behind the
//! `healthcheck` subcommand of both binaries.
//!
//! Container images carry only the service binary (no `grpcurl`, no `grpc_health_probe`, no
//! shell tools to speak HTTP/2), so the binary probes itself: a Docker or Kubernetes healthcheck
//! runs `producer healthcheck` inside the container, which asks the server on loopback and exits
//! 0 only for `SERVING`. Asking the health service, rather than merely connecting, also reports a
//! server that is up but draining (`NOT_SERVING` after SIGTERM) as unhealthy.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::ExitCode,
    time::Duration,
};

use tonic::transport::Endpoint;

use crate::errors::error_chain;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Why a health check did not find the server `SERVING`.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("invalid address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("no answer from {address} within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("health check of {address} failed: {code:?}: {message}")]
    Rpc {
        address: String,
        code: tonic::Code,
        message: String,
    },
    #[error("{address} reports {status}")]
    NotServing { address: String, status: String },
}

/// Flags of the `healthcheck` subcommand.
///
/// They have no environment-variable twins on purpose: inside a container the subcommand
/// inherits the service's own environment, and its default address comes from the service's
/// `--listen` (`PRODUCER_LISTEN` / `CONSUMER_LISTEN`), so the probe follows the service when its
/// port is changed.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// gRPC address to check, `host:port` or `http://host:port`. Default: the service's own
    /// --listen port on loopback.
    #[arg(long)]
    pub address: Option<String>,

    /// Service name to ask about, e.g. `pushpull.v1.ProducerService`; empty means the whole
    /// server.
    #[arg(long, default_value = "")]
    pub service: String,

    /// Give up (and report unhealthy) after this long, connection included.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub tls: ProbeTls,
}

/// TLS flags of the probing subcommands (`healthcheck`, the consumer's `stats`). The default
/// address is `https://` when the service itself serves TLS (its --tls-cert).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProbeTls {
    /// CA (PEM) that signed the server's certificate; the system's roots without it.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Certificate (PEM) to present if the server asks for one (mutual TLS); with
    /// --tls-client-key.
    #[arg(long, value_name = "PATH")]
    pub tls_client_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-client-cert (PEM).
    #[arg(long, value_name = "PATH")]
    pub tls_client_key: Option<std::path::PathBuf>,
}

impl ProbeTls {
    /// The flags' names, for messages.
    pub const FLAGS: [&'static str; 3] = ["--tls-ca", "--tls-client-cert", "--tls-client-key"];

    pub fn files(&self) -> crate::tls::ClientFiles {
        crate::tls::ClientFiles {
            ca: self.tls_ca.clone(),
            cert: self.tls_client_cert.clone(),
            key: self.tls_client_key.clone(),
        }
    }

    /// `address` as given, or the service's own port on loopback, `https://` when the service
    /// serves TLS (`serves_tls`) or TLS flags are given.
    pub fn address(&self, address: Option<&str>, listen: SocketAddr, serves_tls: bool) -> String {
        match address {
            Some(address) if address.contains("://") => address.to_owned(),
            Some(address) if serves_tls || self.files().is_set() => format!("https://{address}"),
            Some(address) => address.to_owned(),
            None if serves_tls || self.files().is_set() => {
                format!("https://{}", local_address(listen))
            }
            None => local_address(listen).to_string(),
        }
    }

    /// The endpoint for `address` (see [`ProbeTls::address`]).
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, ProbeError> {
        let uri = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        crate::tls::endpoint(&uri, &self.files(), Self::FLAGS).map_err(|reason| {
            ProbeError::Address {
                address: address.to_owned(),
                reason,
            }
        })
    }
}

impl HealthcheckArgs {
    /// Runs the check against `--address`, or the loopback address of `listen`, and prints one
    /// line: the result on stdout, or the reason on stderr. Docker keeps this output in the
    /// container's health log (`docker inspect`).
    pub async fn run(&self, listen: SocketAddr, serves_tls: bool) -> ExitCode {
        let address = self
            .tls
            .address(self.address.as_deref(), listen, serves_tls);
        let endpoint = match self.tls.endpoint(&address) {
            Ok(endpoint) => endpoint,
            Err(err) => {
                eprintln!("unhealthy: {err}");
                return ExitCode::FAILURE;
            }
        };
        match check_endpoint(endpoint, &address, &self.service, self.timeout).await {
            Ok(()) => {
                println!("{address}: SERVING");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("unhealthy: {err}");
                ExitCode::FAILURE
            }
        }
    }
}

/// The address a process reaches its own server on: a wildcard listen address (`0.0.0.0`,
/// `::`) becomes loopback of the same family, anything else is used as it is.
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Asks `address` whether `service` ("" for the whole server) is serving. `Ok` only for
/// `SERVING`; an unreachable server, an error status or anything else is an error. The whole
/// call, connection included, is bounded by `timeout`, so a hung server cannot hang the probe.
pub async fn check(address: &str, service: &str, timeout: Duration) -> Result<(), ProbeError> {
    check_endpoint(endpoint(address)?, address, service, timeout).await
}

/// [`check`] over an endpoint already set up (TLS).
pub async fn check_endpoint(
    endpoint: Endpoint,
    address: &str,
    service: &str,
    timeout: Duration,
) -> Result<(), ProbeError> {
    // The outer `tokio::time::timeout` bounds the call, so a hung server is reported as a
    // timeout rather than as tonic's own CANCELLED status.
    let endpoint = endpoint.connect_timeout(timeout);
    let call = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|err| ProbeError::Connect {
                address: address.to_owned(),
                reason: error_chain(&err),
            })?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map_err(|status| ProbeError::Rpc {
                address: address.to_owned(),
                code: status.code(),
                message: status.message().to_owned(),
            })
    };
    let response = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ProbeError::Timeout {
            address: address.to_owned(),
            timeout,
        })??
        .into_inner();
    match ServingStatus::try_from(response.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(status) => Err(ProbeError::NotServing {
            address: address.to_owned(),
            status: status.as_str_name().to_owned(),
        }),
        Err(_) => Err(ProbeError::NotServing {
            address: address.to_owned(),
            status: format!("unknown status {}", response.status),
        }),
    }
}

/// The endpoint for a command-line address: `host:port` (plaintext HTTP/2, as both services
/// serve) or a full `http://host:port` URI.
pub fn endpoint(address: &str) -> Result<Endpoint, ProbeError> {
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    Endpoint::from_shared(uri).map_err(|e| ProbeError::Address {
        address: address.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;
    use tonic::transport::Server;
    use tonic_health::{ServingStatus as Reported, server::HealthReporter};

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(2);

    /// A health service on 127.0.0.1:0; the reporter sets what it answers.
    async fn health_server() -> (String, HealthReporter) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming(crate::grpc::incoming(listener)),
        );
        (address, reporter)
    }

    #[tokio::test]
    async fn serving_is_ok_with_or_without_a_scheme() {
        let (address, _reporter) = health_server().await;
        check(&address, "", TIMEOUT).await.unwrap();
        check(&format!("http://{address}"), "", TIMEOUT)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn not_serving_is_an_error() {
        let (address, reporter) = health_server().await;
        reporter.set_service_status("", Reported::NotServing).await;
        let err = check(&address, "", TIMEOUT).await.unwrap_err();
        assert!(
            matches!(&err, ProbeError::NotServing { status, .. } if status == "NOT_SERVING"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_named_service_is_checked_by_name() {
        let (address, reporter) = health_server().await;
        reporter
            .set_service_status("pushpull.v1.Test", Reported::Serving)
            .await;
        check(&address, "pushpull.v1.Test", TIMEOUT).await.unwrap();
        let err = check(&address, "pushpull.v1.Unknown", TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProbeError::Rpc {
                    code: tonic::Code::NotFound,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unreachable_is_an_error() {
        // A port that was just free: nothing listens there.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = check(&address, "", TIMEOUT).await.unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        // The kernel completes the TCP handshake, but nobody speaks HTTP/2.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let started = std::time::Instant::now();
        let err = check(&address, "", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2), "{err}");
        drop(listener);
    }

    #[test]
    fn wildcard_listen_addresses_become_loopback() {
        let local = |s: &str| local_address(s.parse().unwrap()).to_string();
        assert_eq!(local("0.0.0.0:50051"), "127.0.0.1:50051");
        assert_eq!(local("[::]:50061"), "[::1]:50061");
        assert_eq!(local("10.1.2.3:7"), "10.1.2.3:7");
    }

    #[test]
    fn bad_addresses_are_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime
            .block_on(check("http://bad host:1", "", TIMEOUT))
            .unwrap_err();
        assert!(matches!(err, ProbeError::Address { .. }), "{err}");
    }
}
