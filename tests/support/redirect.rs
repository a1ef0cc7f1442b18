//! Two HTTP servers on loopback: one answers every request with `307` to the same path on the
//! other (another origin, as a Vault standby with another `api_addr`, a hijacked DNS name or a
//! hostile proxy would), the other records what reaches it. A client that carries a credential
//! must leave the second server empty.

use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

pub struct Redirect {
    pub from: MockServer,
    pub to: MockServer,
    runtime: tokio::runtime::Runtime,
    /// With `start_tls`: the redirector behind TLS, `https://127.0.0.1:PORT`.
    tls_url: Option<String>,
}

struct Elsewhere(String);

impl Respond for Elsewhere {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut to = format!("{}{}", self.0, request.url.path());
        if let Some(query) = request.url.query() {
            to.push('?');
            to.push_str(query);
        }
        ResponseTemplate::new(307).insert_header("Location", to.as_str())
    }
}

impl Redirect {
    pub fn start() -> Redirect {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (from, to) = runtime.block_on(async {
            let to = MockServer::start().await;
            Mock::given(any())
                .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({})))
                .mount(&to)
                .await;
            let from = MockServer::start().await;
            Mock::given(any())
                .respond_with(Elsewhere(to.uri()))
                .mount(&from)
                .await;
            (from, to)
        });
        Redirect {
            from,
            to,
            runtime,
            tls_url: None,
        }
    }

    /// The same, the redirector reached over TLS (a certificate for 127.0.0.1 signed by the
    /// throwaway CA `dir/ca.pem`) and redirecting to the other origin on plain http: the
    /// downgrade a Vault standby whose `api_addr` is http answers with.
    pub fn start_tls(dir: &std::path::Path) -> Redirect {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls;
        let mut redirect = Redirect::start();
        super::tls::make_certificates(dir);
        let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let behind = *redirect.from.address();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        // TLS ends here and the bytes go on to the redirector, for as long as the tests run.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let Ok(mut plain) = tokio::net::TcpStream::connect(behind).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        });
        redirect.tls_url = Some(format!("https://127.0.0.1:{port}"));
        redirect
    }

    /// Requests that reached the redirector, and the other origin.
    pub fn seen(&self) -> (usize, usize) {
        self.runtime.block_on(async {
            (
                self.from
                    .received_requests()
                    .await
                    .unwrap_or_default()
                    .len(),
                self.to.received_requests().await.unwrap_or_default().len(),
            )
        })
    }

    /// Where to point a client: the redirector, over TLS when started so.
    pub fn url(&self) -> String {
        self.tls_url.clone().unwrap_or_else(|| self.from.uri())
    }
}
