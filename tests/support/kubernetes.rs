//! No cluster runs here: this is a fake of the one Kubernetes API endpoint rotor calls,
//! `PATCH /apis/apps/v1/namespaces/{namespace}/deployments/{name}`, served by wiremock on
//! loopback with real state. It checks what the API server checks (bearer token, one of the
//! documented patch media types, the object exists), applies a strategic-merge patch to the
//! pod-template annotations, bumps `metadata.generation` only when the template changed (a
//! changed template is what starts a rollout), and answers with the Deployment object or a
//! `Status` object for errors, as the API documents them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wiremock::{MockServer, Request, Respond, ResponseTemplate};

pub const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InJvdG9yLXRlc3QifQ.service-account.token";

#[derive(Debug, Clone, Default)]
pub struct Deployment {
    pub annotations: BTreeMap<String, String>,
    /// Bumped when the pod template changes: each bump is a rollout.
    pub generation: u64,
}

#[derive(Debug, Default)]
pub struct State {
    /// By "namespace/name".
    pub deployments: BTreeMap<String, Deployment>,
    /// Every request, as "METHOD /path content-type".
    pub calls: Vec<String>,
}

pub struct Kubernetes {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
    _runtime: tokio::runtime::Runtime,
}

struct Api {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }))
}

const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let content_type = request
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut state = self.state.lock().unwrap();
        state.calls.push(format!(
            "{} {} {content_type}",
            request.method,
            request.url.path()
        ));
        let authorized = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
        if !authorized {
            return status(401, "Unauthorized", "Unauthorized");
        }
        let parts: Vec<&str> = request.url.path().trim_matches('/').split('/').collect();
        let [
            "apis",
            "apps",
            "v1",
            "namespaces",
            namespace,
            "deployments",
            name,
        ] = parts[..]
        else {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        };
        if request.method.as_str() != "PATCH" {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            );
        }
        if !PATCH_TYPES.contains(&content_type.as_str()) {
            return status(
                415,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: {}",
                    PATCH_TYPES.join(", ")
                ),
            );
        }
        let Ok(patch) = serde_json::from_slice::<serde_json::Value>(&request.body) else {
            return status(400, "BadRequest", "the request body is not valid JSON");
        };
        let key = format!("{namespace}/{name}");
        let Some(deployment) = state.deployments.get_mut(&key) else {
            let mut body = status(
                404,
                "NotFound",
                &format!("deployments.apps \"{name}\" not found"),
            );
            body = body.set_body_json(serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("deployments.apps \"{name}\" not found"), "reason": "NotFound",
                "details": {"name": name, "group": "apps", "kind": "deployments"}, "code": 404,
            }));
            return body;
        };
        let annotations = patch["spec"]["template"]["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut changed = false;
        for (k, v) in annotations {
            let v = v.as_str().unwrap_or_default().to_owned();
            if deployment.annotations.get(&k) != Some(&v) {
                deployment.annotations.insert(k, v);
                changed = true;
            }
        }
        if changed {
            deployment.generation += 1;
        }
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": "6f1c2c3e-8f4e-4a8e-9d55-2b1f0c9d7a11",
                "resourceVersion": (1000 + deployment.generation).to_string(),
                "generation": deployment.generation,
                "labels": {"app": name},
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": deployment.annotations},
                    "spec": {"containers": [{"name": name, "image": "registry.example/app:1.4.2"}]},
                },
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            },
            "status": {
                "observedGeneration": deployment.generation.saturating_sub(1),
                "replicas": 2,
                "updatedReplicas": 0,
            },
        }))
    }
}

impl Kubernetes {
    /// A fake API server holding the Deployments `namespace/name` given.
    pub fn start(deployments: &[&str]) -> Kubernetes {
        let state = Arc::new(Mutex::new(State::default()));
        for d in deployments {
            state.lock().unwrap().deployments.insert(
                (*d).to_owned(),
                Deployment {
                    generation: 1,
                    ..Default::default()
                },
            );
        }
        let api = Api {
            state: state.clone(),
        };
        let (server, runtime) = super::serve(api);
        Kubernetes {
            server,
            state,
            _runtime: runtime,
        }
    }

    pub fn deployment(&self, key: &str) -> Deployment {
        self.state.lock().unwrap().deployments[key].clone()
    }
}
