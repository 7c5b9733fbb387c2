//! A real Warden server on a random port over a real SQLite file in a temporary folder.

#![allow(dead_code)]

pub mod mcp;

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::Value;
use warden_api::tokens::{TokenSpec, create_token};
use warden_api::{Running, ServerConfig};
use warden_core::{Actor, NamespacePath, Role, TenantId};

pub struct TestServer {
    pub base: String,
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

pub fn example_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, configure).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let mut config = ServerConfig::new(dir.path().join("data"));
        config.listen = "127.0.0.1:0".into();
        configure(&mut config);
        let running = warden_api::start(config, None)
            .await
            .expect("server starts");
        TestServer {
            base: format!("http://{}", running.addr),
            running: Some(running),
            dir,
            client: reqwest::Client::new(),
        }
    }

    pub fn state(&self) -> &warden_api::state::AppState {
        &self.running.as_ref().expect("running").state
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn token(
        &self,
        tenant: &str,
        role: Role,
        agent: Option<&str>,
        user: Option<&str>,
        ns: Option<&str>,
    ) -> String {
        let spec = TokenSpec {
            tenant: TenantId::parse(tenant).unwrap(),
            role,
            agent: agent.map(str::to_owned),
            on_behalf_of: user.map(str::to_owned),
            namespace: ns.map(|n| NamespacePath::parse(n).unwrap()),
            ttl: None,
            description: None,
        };
        create_token(self.state().store.as_ref(), &spec, Actor::default(), "test")
            .await
            .expect("token")
            .secret
    }

    pub async fn agent_token(&self, tenant: &str, agent: &str, user: &str, ns: &str) -> String {
        self.token(tenant, Role::Agent, Some(agent), Some(user), Some(ns))
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request");
        read(r).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request")).await
    }

    pub async fn put_text(&self, path: &str, token: &str, text: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .put(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "text/plain")
            .body(text.to_owned())
            .send()
            .await
            .expect("request");
        read(r).await
    }

    pub async fn put(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .client
            .put(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request");
        read(r).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .delete(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        read(r).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        read(r).await
    }

    pub async fn get_text(&self, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("request");
        let status = r.status();
        (status, r.text().await.expect("body"))
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean shutdown");
        }
        self.dir
    }
}

pub async fn read(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = r.text().await.expect("body");
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(
            ct, "application/problem+json",
            "error without problem+json: {status} {text}"
        );
    }
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// A call_tool request on a tool with registry-like attributes.
pub fn tool_call(tool: &str, risk: &str, args: Value) -> Value {
    let (server, name) = tool.split_once("__").unwrap_or(("test", tool));
    serde_json::json!({
        "action": "call_tool",
        "resource": {"type": "Tool", "id": tool, "attributes": {"name": name, "server": server, "risk": risk, "categories": []}},
        "context": {"args": args}
    })
}
