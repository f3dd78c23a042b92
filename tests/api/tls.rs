//! The HTTP clients' TLS (`src/tls.rs`, rustls on *ring*) against a real HTTPS server here:
//! Python's `ssl` serving a certificate for 127.0.0.1 that `openssl` signed with a CA of
//! its own. A client that trusts the CA gets the page; one that does not is refused the handshake.

use std::process::Command;

use crate::servers::{free_port, start_guarded, wait_tcp};

const SERVE: &str = r#"
import http.server, ssl, sys
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"over tls"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.HTTPServer(("127.0.0.1", port), Page)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

#[tokio::test]
async fn an_https_server_is_reached_with_the_one_provider_and_an_unknown_certificate_refused() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let made = Command::new("openssl").args(args).output().unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    };
    // A certificate authority, and the server's certificate for 127.0.0.1 signed by it
    // (a self-signed one as the server's own is refused as a CA used as an end entity).
    std::fs::write(
        at("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        &at("ca.key"),
        "-out",
        &at("ca.pem"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &at("key.pem"),
        "-out",
        &at("leaf.csr"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &at("leaf.csr"),
        "-CA",
        &at("ca.pem"),
        "-CAkey",
        &at("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &at("leaf.ext"),
        "-out",
        &at("cert.pem"),
    ]);
    let (cert, key) = (at("cert.pem"), at("key.pem"));
    let port = free_port();
    let _server = start_guarded(
        "python3",
        &["-c".into(), SERVE.into(), port.to_string(), cert, key],
        &dir.path().join("server.log"),
    );
    wait_tcp(port, "the HTTPS server").await;
    let url = format!("https://127.0.0.1:{port}/");

    let pem = std::fs::read(at("ca.pem")).unwrap();
    let trusting = deploy_diagnosis::tls::client()
        .tls_certs_merge([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let page = trusting.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().await.unwrap(), "over tls");

    let refused = deploy_diagnosis::tls::client()
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap_err();
    let why = format!("{refused:?}");
    assert!(why.to_lowercase().contains("certificate"), "{why}");
}
