//! JSON-RPC 2.0 as MCP uses it: requests, notifications and responses, parsed strictly so
//! that a malformed message gets a precise error instead of a guess.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Standard JSON-RPC error codes, and the MCP ones Warden uses.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// MCP: the resource does not exist.
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// Warden: the upstream server could not be reached, crashed or timed out.
    pub const UPSTREAM_UNAVAILABLE: i64 = -32010;
    /// Warden: the request was refused by policy (methods other than `tools/call`, whose
    /// refusals are tool results the model can read).
    pub const POLICY_DENIED: i64 = -32011;
    /// Warden: the audit trail could not record the decision; nothing was done.
    pub const AUDIT_UNAVAILABLE: i64 = -32012;
}

/// A request id: a string or an integer (JSON-RPC allows both; MCP forbids null).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Number(i64),
    String(String),
}

impl Id {
    pub fn to_value(&self) -> Value {
        match self {
            Id::Number(n) => json!(n),
            Id::String(s) => json!(s),
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{s:?}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (JSON-RPC error {})", self.message, self.code)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub id: Id,
    pub method: String,
    pub params: Option<Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    pub method: String,
    pub params: Option<Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub id: Id,
    pub result: Result<Value, RpcError>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Request(Request),
    Notification(Notification),
    Response(Response),
}

/// Why a message could not be understood, and the id to answer with when one was readable.
#[derive(Clone, Debug, PartialEq)]
pub struct Invalid {
    pub id: Option<Id>,
    pub error: RpcError,
}

impl Message {
    /// Parses one JSON-RPC message (not a batch).
    pub fn parse(text: &[u8]) -> Result<Message, Box<Invalid>> {
        let value: Value = serde_json::from_slice(text).map_err(|e| {
            Box::new(Invalid {
                id: None,
                error: RpcError::new(code::PARSE_ERROR, format!("not valid JSON: {e}")),
            })
        })?;
        Message::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Message, Box<Invalid>> {
        let Value::Object(mut obj) = value else {
            let what = if value.is_array() {
                "a batch (JSON array); send one message per request"
            } else {
                "not a JSON object"
            };
            return Err(Box::new(Invalid {
                id: None,
                error: RpcError::new(code::INVALID_REQUEST, format!("the message is {what}")),
            }));
        };
        let raw_id = obj.remove("id");
        let id = match raw_id {
            None => None,
            Some(Value::String(s)) => Some(Id::String(s)),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Some(Id::Number(i)),
                None => {
                    return Err(invalid(None, "`id` must be a string or an integer"));
                }
            },
            Some(Value::Null) => return Err(invalid(None, "`id` may not be null in MCP")),
            Some(_) => return Err(invalid(None, "`id` must be a string or an integer")),
        };
        match obj.remove("jsonrpc") {
            Some(Value::String(v)) if v == "2.0" => {}
            _ => return Err(invalid(id, "`jsonrpc` must be \"2.0\"")),
        }
        let params = obj.remove("params");
        if let Some(p) = &params
            && !p.is_object()
            && !p.is_array()
        {
            return Err(invalid(id, "`params` must be an object"));
        }
        if let Some(method) = obj.remove("method") {
            let Value::String(method) = method else {
                return Err(invalid(id, "`method` must be a string"));
            };
            if let Some(k) = obj.keys().next() {
                return Err(invalid(id, format!("unknown member {k:?} in a request")));
            }
            return Ok(match id {
                Some(id) => Message::Request(Request { id, method, params }),
                None => Message::Notification(Notification { method, params }),
            });
        }
        let Some(id) = id else {
            return Err(invalid(
                None,
                "a message needs `method` (or `id` for a response)",
            ));
        };
        let result = match (obj.remove("result"), obj.remove("error")) {
            (Some(r), None) => Ok(r),
            (None, Some(e)) => Err(serde_json::from_value::<RpcError>(e)
                .map_err(|e| invalid(Some(id.clone()), format!("malformed `error`: {e}")))?),
            _ => {
                return Err(invalid(
                    Some(id),
                    "a response needs exactly one of `result` and `error`",
                ));
            }
        };
        Ok(Message::Response(Response { id, result }))
    }

    pub fn to_value(&self) -> Value {
        match self {
            Message::Request(r) => {
                let mut m = Map::new();
                m.insert("jsonrpc".into(), json!("2.0"));
                m.insert("id".into(), r.id.to_value());
                m.insert("method".into(), json!(r.method));
                if let Some(p) = &r.params {
                    m.insert("params".into(), p.clone());
                }
                Value::Object(m)
            }
            Message::Notification(n) => {
                let mut m = Map::new();
                m.insert("jsonrpc".into(), json!("2.0"));
                m.insert("method".into(), json!(n.method));
                if let Some(p) = &n.params {
                    m.insert("params".into(), p.clone());
                }
                Value::Object(m)
            }
            Message::Response(r) => match &r.result {
                Ok(v) => json!({"jsonrpc": "2.0", "id": r.id.to_value(), "result": v}),
                Err(e) => json!({"jsonrpc": "2.0", "id": r.id.to_value(), "error": e}),
            },
        }
    }

    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

fn invalid(id: Option<Id>, message: impl Into<String>) -> Box<Invalid> {
    Box::new(Invalid {
        id,
        error: RpcError::new(code::INVALID_REQUEST, message),
    })
}

/// The error response for a message that could not be understood (id null when unknown).
pub fn error_response(invalid: &Invalid) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": invalid.id.as_ref().map_or(Value::Null, Id::to_value),
        "error": invalid.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        let r = Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert!(matches!(
            r,
            Message::Request(Request {
                id: Id::Number(1),
                ..
            })
        ));
        let n =
            Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(n, Message::Notification(_)));
        let ok = Message::parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert!(matches!(
            ok,
            Message::Response(Response { result: Ok(_), .. })
        ));
        let err =
            Message::parse(br#"{"jsonrpc":"2.0","id":"a","error":{"code":-32601,"message":"no"}}"#)
                .unwrap();
        let Message::Response(Response { result: Err(e), .. }) = err else {
            panic!("{err:?}")
        };
        assert_eq!(e.code, code::METHOD_NOT_FOUND);
    }

    #[test]
    fn refuses_what_mcp_forbids() {
        let cases: [(&[u8], i64); 8] = [
            (b"{nope", code::PARSE_ERROR),
            (b"[]", code::INVALID_REQUEST),
            (
                br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":true,"method":"x"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":""}}"#,
                code::INVALID_REQUEST,
            ),
        ];
        for (text, expected) in cases {
            let e = Message::parse(text).unwrap_err();
            assert_eq!(e.error.code, expected, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn round_trips() {
        let text = r#"{"jsonrpc":"2.0","id":"7","method":"tools/call","params":{"name":"echo"}}"#;
        let m = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(Message::parse(m.to_json().as_bytes()).unwrap(), m);
    }
}
