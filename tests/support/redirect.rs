//! Two HTTP servers on loopback: one answers every request with `307` to the same path on the
//! other (another origin, as a Vault standby with another `api_addr`, a hijacked DNS name or a
//! hostile proxy would), the other records what reaches it. A client that carries a credential
//! must leave the second server empty.

use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

pub struct Redirect {
    pub from: MockServer,
    pub to: MockServer,
    runtime: tokio::runtime::Runtime,
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
        Redirect { from, to, runtime }
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

    pub fn url(&self) -> String {
        self.from.uri()
    }
}
