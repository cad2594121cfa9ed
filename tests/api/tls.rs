//! TLS on both listeners with a private CA (made here with rcgen), a certificate renewed
//! without a restart, and client certificates for the management calls (mTLS).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use rcgen::{CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tessera::api::grpc::pb::tessera::otp::v1 as check;

use crate::helpers::{Backend, Spawn, TempDir, TestApp, Token};

/// A CA of the test's own, and the files it signs.
struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("tessera test CA {name}"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            dir: TempDir::new(name),
            ca,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    fn ca_file(&self) -> PathBuf {
        let path = self.path("ca.pem");
        std::fs::write(&path, self.ca.pem()).unwrap();
        path
    }

    /// A certificate for `purpose`, signed by this CA: its PEM and its key's PEM.
    fn issue(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "tessera test");
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a new server certificate for loopback; returns its DER.
    fn write_server_files(&self) -> Vec<u8> {
        let (cert, key) = self.issue(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        std::fs::write(self.path("server.key"), key).unwrap();
        std::fs::write(self.path("server.pem"), &cert).unwrap();
        pem_der(&cert)
    }

    fn client_identity(&self) -> reqwest::Identity {
        let (cert, key) = self.issue(&["login-backend"], ExtendedKeyUsagePurpose::ClientAuth);
        reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap()
    }

    fn client(&self, identity: Option<reqwest::Identity>, http1: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10));
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        if http1 {
            builder = builder.http1_only();
        }
        builder.build().unwrap()
    }
}

fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

async fn start(pki: &Pki, client_ca: bool) -> TestApp {
    pki.write_server_files();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let ca = client_ca.then(|| pki.ca_file());
    Spawn::new(Backend::Memory)
        .with(move |s| {
            s.tls.cert_file = cert.to_string_lossy().into_owned();
            s.tls.key_file = key.to_string_lossy().into_owned();
            s.tls.client_ca_file = ca
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            s.tls.reload_interval_secs = 1;
        })
        .start()
        .await
}

fn https(address: &str) -> String {
    address.replace("http://", "https://")
}

/// A login check of a user with no factor: FAILED_PRECONDITION once it passes the gates.
/// Returns the HTTP version and the gRPC status of the answer.
async fn grpc_check(
    client: &reqwest::Client,
    app: &TestApp,
    token: &str,
    web: bool,
) -> (reqwest::Version, Option<String>) {
    let message = check::CheckOtpRequest {
        user_id: "nobody".into(),
        code: "123456".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let content_type = if web {
        "application/grpc-web+proto"
    } else {
        "application/grpc"
    };
    let response = client
        .post(format!(
            "{}/tessera.otp.v1.OtpCheckService/CheckOTP",
            https(&app.grpc_address)
        ))
        .header("content-type", content_type)
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.version(), status)
}

#[actix_web::test]
async fn both_listeners_serve_tls_with_a_private_ca() {
    let pki = Pki::new("tls");
    let app = start(&pki, false).await;
    let alice = Token::user("acme", "alice")
        .role("otp.check", "acme")
        .sign();
    let client = pki.client(None, false);
    let listed = client
        .post(format!(
            "{}/auth/v1/users/me/auth_factors/_search",
            https(&app.address)
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
    assert_eq!(
        listed.version(),
        reqwest::Version::HTTP_11,
        "HTTP/1.1 only on this port"
    );
    // Plain HTTP to a TLS port gets no answer.
    let plain = reqwest::Client::new()
        .post(app.url("/auth/v1/users/me/auth_factors/_search"))
        .bearer_auth(&alice)
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // gRPC over h2, gRPC-web over HTTP/1.1, both through TLS.
    let (version, status) = grpc_check(&client, &app, &alice, false).await;
    assert_eq!(
        (version, status.as_deref()),
        (reqwest::Version::HTTP_2, Some("9"))
    );
    let (version, status) = grpc_check(&pki.client(None, true), &app, &alice, true).await;
    assert_eq!(
        (version, status.as_deref()),
        (reqwest::Version::HTTP_11, Some("9"))
    );
    // A client that does not trust the CA does not get through.
    let stranger = Pki::new("stranger").client(None, false);
    let refused = stranger
        .post(format!(
            "{}/auth/v1/users/me/auth_factors/_search",
            https(&app.address)
        ))
        .send()
        .await;
    assert!(refused.is_err());
}

/// The certificate the server presents on `address` now.
async fn presented(pki: &Pki, address: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let host = address.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[actix_web::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let pki = Pki::new("renewal");
    let app = start(&pki, false).await;
    let first = presented(&pki, &app.address).await;
    assert_eq!(first, presented(&pki, &app.grpc_address).await);
    let renewed = pki.write_server_files();
    assert_ne!(first, renewed);
    let guard = Instant::now() + Duration::from_secs(15);
    for address in [&app.address, &app.grpc_address] {
        while presented(&pki, address).await != renewed {
            assert!(
                Instant::now() < guard,
                "{address} still presents the old certificate"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A half-written file keeps the current certificate in use.
    std::fs::write(
        pki.path("server.pem"),
        "-----BEGIN CERTIFICATE-----\nnot yet",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(presented(&pki, &app.address).await, renewed);
}

#[actix_web::test]
async fn management_calls_need_a_client_certificate_from_the_ca() {
    let pki = Pki::new("mtls");
    let app = start(&pki, true).await;
    let admin = Token::user("acme", "root").role("otp.check", "acme").sign();
    let check = |client: reqwest::Client| {
        let url = format!(
            "{}/management/v1/users/nobody/auth_factors/otp/_check",
            https(&app.address)
        );
        let admin = admin.clone();
        async move {
            let response = client
                .post(url)
                .bearer_auth(&admin)
                .json(&serde_json::json!({"code": "123456"}))
                .send()
                .await?;
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await?;
            Ok::<_, reqwest::Error>((
                status,
                body["details"][0]["id"].as_str().unwrap_or("").to_owned(),
            ))
        }
    };
    // Without a client certificate: the `me` calls work, the management calls do not.
    let anonymous = pki.client(None, false);
    let listed = anonymous
        .post(format!(
            "{}/auth/v1/users/me/auth_factors/_search",
            https(&app.address)
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
    assert_eq!(
        check(anonymous.clone()).await.unwrap(),
        (401, "TESSERA-mtls1".to_owned())
    );
    let (_, status) = grpc_check(&anonymous, &app, &admin, false).await;
    assert_eq!(status.as_deref(), Some("16"));
    // With one that the CA signed: through the gates (the user has no factor).
    let certified = pki.client(Some(pki.client_identity()), false);
    assert_eq!(
        check(certified.clone()).await.unwrap(),
        (400, "COMMAND-3Mif9s".to_owned())
    );
    let (_, status) = grpc_check(&certified, &app, &admin, false).await;
    assert_eq!(status.as_deref(), Some("9"));
    // One that another CA signed: the handshake fails.
    let other = Pki::new("other-ca");
    let impostor = pki.client(Some(other.client_identity()), false);
    assert!(check(impostor).await.is_err());
}
