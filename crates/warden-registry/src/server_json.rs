//! Import of the official MCP registry's `server.json`: the file a server's publisher writes
//! (schema `https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json`;
//! the 2025-09-29 and 2025-10-17 versions are accepted too).
//!
//! An import is all or nothing and reports every problem at once, each with the JSON path it
//! is about (`$.packages[0].environmentVariables[1].value`), so a publisher fixes the file in
//! one pass. Beyond the schema's own rules Warden refuses:
//!
//! - unknown members anywhere but under `_meta` (the one place the format leaves open): a
//!   misspelt `isSecret` must not silently turn a secret into a plain value;
//! - a secret (`isSecret: true`) that carries a literal `value` or `default`: the registry
//!   stores references to secrets, never secrets. A value that is itself a reference
//!   (`env:NAME`, `file:/path`) is accepted, and so is a template whose parts are declared
//!   `variables` (`Bearer {api_key}`), which holds no secret either — provided those
//!   variables hold none: the variables of a secret input count as secret themselves.
//!
//! The imported server is `pending_review`, with the transport Warden would use: the first
//! package with a stdio transport it knows how to start (npm → `npx -y id@version`, pypi →
//! `uvx id==version`, oci → `docker run -i --rm … image`, otherwise the package's
//! `runtimeHint`), else the first remote. All packages and remotes are kept as given.
//!
//! The mirror types below keep `server.json`'s own member names (camelCase), so what was
//! imported can be shown and exported in the format it came in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{
    EnvValue, EnvVar, Header, Owner, Package, PinPolicy, SecretRef, ServerName, Source, State,
    ToolServer, Transport, check_http_url,
};

/// The `$schema` URLs accepted, newest first. A file without `$schema` is read as the newest.
pub const SCHEMA_URLS: [&str; 3] = [
    "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json",
    "https://static.modelcontextprotocol.io/schemas/2025-10-17/server.schema.json",
    "https://static.modelcontextprotocol.io/schemas/2025-09-29/server.schema.json",
];

/// The registry's limit on `description`.
pub const MAX_DESCRIPTION_CHARS: usize = 100;

/// One thing wrong with a `server.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// JSON path of the offending member, `$` for the whole document.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

// --- Mirror of the format ------------------------------------------------------------------

/// `server.json` as written. Every member is optional here so that one missing member does
/// not hide the others' problems; `import` checks what is required.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerJson {
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    pub name: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub version: Option<String>,
    pub website_url: Option<String>,
    #[serde(default)]
    pub icons: Vec<Icon>,
    pub repository: Option<Repository>,
    #[serde(default)]
    pub packages: Vec<ServerJsonPackage>,
    #[serde(default)]
    pub remotes: Vec<ServerJsonTransport>,
    #[serde(rename = "_meta")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Icon {
    pub src: Option<String>,
    pub mime_type: Option<String>,
    #[serde(default)]
    pub sizes: Vec<String>,
    pub theme: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    pub url: Option<String>,
    pub source: Option<String>,
    pub id: Option<String>,
    pub subfolder: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerJsonPackage {
    pub registry_type: Option<String>,
    pub registry_base_url: Option<String>,
    pub identifier: Option<String>,
    pub version: Option<String>,
    pub file_sha256: Option<String>,
    pub runtime_hint: Option<String>,
    pub transport: Option<ServerJsonTransport>,
    #[serde(default)]
    pub runtime_arguments: Vec<Argument>,
    #[serde(default)]
    pub package_arguments: Vec<Argument>,
    #[serde(default)]
    pub environment_variables: Vec<KeyValueInput>,
}

/// A package's `transport`, or an entry of `remotes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerJsonTransport {
    /// `stdio`, `streamable-http` or `sse`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub url: Option<String>,
    #[serde(default)]
    pub headers: Vec<KeyValueInput>,
    /// Values for `{placeholders}` in `url` (remotes only).
    #[serde(default)]
    pub variables: BTreeMap<String, Input>,
}

/// A value the user (here: the operator) provides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    pub description: Option<String>,
    pub is_required: Option<bool>,
    pub is_secret: Option<bool>,
    pub format: Option<String>,
    pub default: Option<String>,
    pub value: Option<String>,
    #[serde(default)]
    pub choices: Vec<String>,
    pub placeholder: Option<String>,
}

/// An environment variable or header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyValueInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub is_required: Option<bool>,
    pub is_secret: Option<bool>,
    pub format: Option<String>,
    pub default: Option<String>,
    pub value: Option<String>,
    #[serde(default)]
    pub choices: Vec<String>,
    pub placeholder: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, Input>,
}

/// A runtime or package argument (`positional` or `named`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Argument {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The flag of a named argument, with its dashes (`--port`).
    pub name: Option<String>,
    pub value: Option<String>,
    pub value_hint: Option<String>,
    pub description: Option<String>,
    pub is_required: Option<bool>,
    pub is_secret: Option<bool>,
    pub is_repeated: Option<bool>,
    pub format: Option<String>,
    pub default: Option<String>,
    #[serde(default)]
    pub choices: Vec<String>,
    pub placeholder: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, Input>,
}

/// A `server.json` that passed every check, and the registry record made from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportedServer {
    /// The server, `pending_review`, owned by whoever imported it.
    pub server: ToolServer,
    /// The `$schema` the file declared (or the newest accepted one).
    pub schema: String,
    pub website_url: Option<String>,
    pub icons: Vec<Icon>,
    pub repository: Option<Repository>,
    pub packages: Vec<ServerJsonPackage>,
    pub remotes: Vec<ServerJsonTransport>,
    /// Where `server.transport` came from (`$.packages[0]`, `$.remotes[1]`), if anywhere.
    pub transport_from: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Map<String, Value>>,
}

// --- Allowed members -----------------------------------------------------------------------

/// Which members an object may have, for the unknown-member check. Types and values are
/// checked by serde and `validate`; this only finds names the format does not have.
enum Shape {
    Leaf,
    Object(&'static [(&'static str, Shape)]),
    ArrayOf(&'static Shape),
    MapOf(&'static Shape),
    Open,
}

use Shape::{Leaf, Open};

const INPUT_MEMBERS: [(&str, Shape); 8] = [
    ("description", Leaf),
    ("isRequired", Leaf),
    ("isSecret", Leaf),
    ("format", Leaf),
    ("default", Leaf),
    ("value", Leaf),
    ("choices", Leaf),
    ("placeholder", Leaf),
];
const INPUT: Shape = Shape::Object(&INPUT_MEMBERS);
const KEY_VALUE: Shape = Shape::Object(&[
    ("name", Leaf),
    ("description", Leaf),
    ("isRequired", Leaf),
    ("isSecret", Leaf),
    ("format", Leaf),
    ("default", Leaf),
    ("value", Leaf),
    ("choices", Leaf),
    ("placeholder", Leaf),
    ("variables", Shape::MapOf(&INPUT)),
]);
const ARGUMENT: Shape = Shape::Object(&[
    ("type", Leaf),
    ("name", Leaf),
    ("value", Leaf),
    ("valueHint", Leaf),
    ("description", Leaf),
    ("isRequired", Leaf),
    ("isSecret", Leaf),
    ("isRepeated", Leaf),
    ("format", Leaf),
    ("default", Leaf),
    ("choices", Leaf),
    ("placeholder", Leaf),
    ("variables", Shape::MapOf(&INPUT)),
]);
/// A package's transport. URL `{placeholders}` there name the package's own arguments and
/// variables, so it has no `variables` of its own.
const PACKAGE_TRANSPORT: Shape = Shape::Object(&[
    ("type", Leaf),
    ("url", Leaf),
    ("headers", Shape::ArrayOf(&KEY_VALUE)),
]);
const REMOTE: Shape = Shape::Object(&[
    ("type", Leaf),
    ("url", Leaf),
    ("headers", Shape::ArrayOf(&KEY_VALUE)),
    ("variables", Shape::MapOf(&INPUT)),
]);
const PACKAGE: Shape = Shape::Object(&[
    ("registryType", Leaf),
    ("registryBaseUrl", Leaf),
    ("identifier", Leaf),
    ("version", Leaf),
    ("fileSha256", Leaf),
    ("runtimeHint", Leaf),
    ("transport", PACKAGE_TRANSPORT),
    ("runtimeArguments", Shape::ArrayOf(&ARGUMENT)),
    ("packageArguments", Shape::ArrayOf(&ARGUMENT)),
    ("environmentVariables", Shape::ArrayOf(&KEY_VALUE)),
]);
const DOCUMENT: Shape = Shape::Object(&[
    ("$schema", Leaf),
    ("name", Leaf),
    ("title", Leaf),
    ("description", Leaf),
    ("version", Leaf),
    ("websiteUrl", Leaf),
    (
        "icons",
        Shape::ArrayOf(&Shape::Object(&[
            ("src", Leaf),
            ("mimeType", Leaf),
            ("sizes", Leaf),
            ("theme", Leaf),
        ])),
    ),
    (
        "repository",
        Shape::Object(&[
            ("url", Leaf),
            ("source", Leaf),
            ("id", Leaf),
            ("subfolder", Leaf),
        ]),
    ),
    ("packages", Shape::ArrayOf(&PACKAGE)),
    ("remotes", Shape::ArrayOf(&REMOTE)),
    ("_meta", Open),
]);

fn check_members(v: &Value, shape: &Shape, path: &str, problems: &mut Vec<Problem>) {
    match (shape, v) {
        (Shape::Object(members), Value::Object(map)) => {
            for (key, value) in map {
                let p = member_path(path, key);
                match members.iter().find(|(name, _)| name == key) {
                    Some((_, inner)) => check_members(value, inner, &p, problems),
                    None => {
                        let known: Vec<&str> = members.iter().map(|(n, _)| *n).collect();
                        let hint = if path == "$" {
                            "; vendor data belongs under _meta"
                        } else {
                            ""
                        };
                        problems.push(problem(
                            p,
                            format!(
                                "unknown field `{key}`; expected one of {}{hint}",
                                known.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        (Shape::ArrayOf(inner), Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check_members(item, inner, &format!("{path}[{i}]"), problems);
            }
        }
        (Shape::MapOf(inner), Value::Object(map)) => {
            for (key, value) in map {
                check_members(value, inner, &member_path(path, key), problems);
            }
        }
        // Wrong types are serde's to report; leaves and `_meta` hold anything.
        _ => {}
    }
}

/// `$.a` for plain names, `$['$schema']` for others.
fn member_path(path: &str, key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        format!("{path}.{key}")
    } else {
        format!(
            "{path}[{}]",
            serde_json::to_string(key)
                .unwrap_or_default()
                .replace('"', "'")
        )
    }
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// Deserializes one member, reporting a type error at its precise path.
fn member<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let v = obj.get(key)?;
    if v.is_null() {
        return None;
    }
    typed(v, &member_path("$", key), problems)
}

fn typed<T: DeserializeOwned>(v: &Value, path: &str, problems: &mut Vec<Problem>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let mut p = path.to_owned();
            for seg in e.path() {
                p = match seg {
                    serde_path_to_error::Segment::Seq { index } => format!("{p}[{index}]"),
                    serde_path_to_error::Segment::Map { key } => member_path(&p, key),
                    serde_path_to_error::Segment::Enum { variant } => member_path(&p, variant),
                    serde_path_to_error::Segment::Unknown => p,
                };
            }
            problems.push(problem(p, e.into_inner().to_string()));
            None
        }
    }
}

/// Deserializes an array member element by element, so each bad element is reported.
/// Each element keeps its index in the document, for the paths of later problems.
fn list<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> (Vec<T>, Vec<usize>) {
    let path = member_path("$", key);
    match obj.get(key) {
        None | Some(Value::Null) => (Vec::new(), Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| typed(v, &format!("{path}[{i}]"), problems).map(|t| (t, i)))
            .unzip(),
        Some(_) => {
            problems.push(problem(path, "must be an array"));
            (Vec::new(), Vec::new())
        }
    }
}

// --- Import --------------------------------------------------------------------------------

/// Parses and checks a `server.json` document and maps it to a registry record.
/// `owner` is whoever imports it; `now` stamps the record.
pub fn import(
    text: &str,
    owner: Option<Owner>,
    now: DateTime<Utc>,
) -> Result<ImportedServer, Vec<Problem>> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        vec![problem(
            "$",
            format!(
                "not valid JSON (line {}, column {}): {e}",
                e.line(),
                e.column()
            ),
        )]
    })?;
    import_value(&value, owner, now)
}

/// As `import`, for a document already parsed (a request body).
pub fn import_value(
    value: &Value,
    owner: Option<Owner>,
    now: DateTime<Utc>,
) -> Result<ImportedServer, Vec<Problem>> {
    let Some(obj) = value.as_object() else {
        return Err(vec![problem(
            "$",
            "a server.json document must be a JSON object",
        )]);
    };
    let mut problems = Vec::new();
    check_members(value, &DOCUMENT, "$", &mut problems);

    let (icons, icon_index) = list(obj, "icons", &mut problems);
    let (packages, package_index) = list(obj, "packages", &mut problems);
    let (remotes, remote_index) = list(obj, "remotes", &mut problems);
    let index = Indices {
        icons: icon_index,
        packages: package_index,
        remotes: remote_index,
    };
    let doc = ServerJson {
        schema: member(obj, "$schema", &mut problems),
        name: member(obj, "name", &mut problems),
        title: member(obj, "title", &mut problems),
        description: member(obj, "description", &mut problems),
        version: member(obj, "version", &mut problems),
        website_url: member(obj, "websiteUrl", &mut problems),
        icons,
        repository: member(obj, "repository", &mut problems),
        packages,
        remotes,
        meta: member(obj, "_meta", &mut problems),
    };
    let name = validate(&doc, &index, obj, &mut problems);
    let (Some(name), true) = (name, problems.is_empty()) else {
        problems.sort_by_cached_key(|p| path_key(&p.path));
        return Err(problems);
    };
    Ok(map(doc, name, owner, now))
}

/// Orders problems by path, array indices numerically (`[2]` before `[10]`), so they read in
/// the order of the document.
fn path_key(path: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in path.chars() {
        if c.is_ascii_digit() && (text.ends_with('[') || !digits.is_empty()) {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            key.push((
                std::mem::take(&mut text),
                digits.parse().unwrap_or(u64::MAX),
            ));
            digits.clear();
        }
        text.push(c);
    }
    key.push((text, digits.parse().unwrap_or(0)));
    key
}

/// Where each parsed array element sat in the document (elements that did not parse are
/// left out of the lists but not of the numbering).
struct Indices {
    icons: Vec<usize>,
    packages: Vec<usize>,
    remotes: Vec<usize>,
}

/// The checks serde cannot make. Returns the parsed name when it is valid.
fn validate(
    doc: &ServerJson,
    index: &Indices,
    obj: &Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> Option<ServerName> {
    let mut push = |path: String, msg: String| problems.push(problem(path, msg));

    if let Some(s) = &doc.schema
        && !SCHEMA_URLS.contains(&s.as_str())
    {
        push(
            "$['$schema']".into(),
            format!(
                "unsupported schema {s:?}; accepted: {}",
                SCHEMA_URLS.join(", ")
            ),
        );
    }

    let mut name = None;
    match &doc.name {
        None if !obj.contains_key("name") || obj["name"].is_null() => {
            push("$.name".into(), "required".into())
        }
        None => {}
        Some(n) => match ServerName::parse(n) {
            Ok(n) => name = Some(n),
            Err(e) => push("$.name".into(), e),
        },
    }

    match &doc.description {
        None if obj.get("description").is_none_or(Value::is_null) => {
            push("$.description".into(), "required".into())
        }
        None => {}
        Some(d) if d.trim().is_empty() => push("$.description".into(), "is empty".into()),
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => push(
            "$.description".into(),
            format!(
                "is {} characters long; the registry allows at most {MAX_DESCRIPTION_CHARS}",
                d.chars().count()
            ),
        ),
        Some(_) => {}
    }

    match &doc.version {
        None if obj.get("version").is_none_or(Value::is_null) => {
            push("$.version".into(), "required".into())
        }
        None => {}
        Some(v) => {
            if let Err(e) = check_version(v) {
                push("$.version".into(), e)
            }
        }
    }

    if let Some(t) = &doc.title
        && (t.trim().is_empty() || t.chars().count() > 100)
    {
        push("$.title".into(), "must be 1 to 100 characters".into());
    }
    if let Some(u) = &doc.website_url
        && let Err(e) = check_http_url(u)
    {
        push("$.websiteUrl".into(), e);
    }
    for (icon, i) in doc.icons.iter().zip(&index.icons) {
        let path = format!("$.icons[{i}].src");
        match &icon.src {
            None => push(path, "required".into()),
            Some(src) if !src.starts_with("https://") || check_http_url(src).is_err() => {
                push(path, "must be an https:// URL".into())
            }
            Some(_) => {}
        }
    }
    if let Some(repo) = &doc.repository {
        match &repo.url {
            None => push("$.repository.url".into(), "required".into()),
            Some(u) => {
                if let Err(e) = check_http_url(u) {
                    push("$.repository.url".into(), e)
                }
            }
        }
        if repo.source.as_deref().is_none_or(|s| s.trim().is_empty()) {
            push(
                "$.repository.source".into(),
                "required (the hosting service, e.g. github)".into(),
            );
        }
    }

    for (p, i) in doc.packages.iter().zip(&index.packages) {
        validate_package(p, &format!("$.packages[{i}]"), problems);
    }
    for (r, i) in doc.remotes.iter().zip(&index.remotes) {
        let path = format!("$.remotes[{i}]");
        match r.kind.as_deref() {
            None => problems.push(problem(format!("{path}.type"), "required")),
            Some("streamable-http" | "sse") => {}
            Some("stdio") => problems.push(problem(
                format!("{path}.type"),
                "a remote is reached over HTTP: type must be streamable-http or sse",
            )),
            Some(other) => problems.push(problem(
                format!("{path}.type"),
                format!("unknown transport type {other:?}; expected streamable-http or sse"),
            )),
        }
        validate_transport_parts(r, &path, problems);
    }
    name
}

fn check_version(v: &str) -> Result<(), String> {
    let t = v.trim();
    if t.is_empty() {
        return Err("is empty".into());
    }
    if v.len() > 255 {
        return Err("is longer than 255 characters".into());
    }
    if t.eq_ignore_ascii_case("latest") {
        return Err("\"latest\" is not a version; give the exact version".into());
    }
    // `x` is a wildcard only in the release numbers: `1.0.0-x.1` is an exact pre-release.
    let release = t.split(['-', '+']).next().unwrap_or_default();
    let range = t.starts_with(['^', '~', '>', '<', '=', '*'])
        || t.contains(['*', ' '])
        || t.contains("||")
        || release
            .split('.')
            .any(|part| part.eq_ignore_ascii_case("x"));
    if range {
        return Err(format!(
            "{v:?} is a version range; give one exact version (ranges such as ^1.2.3, ~1.2.3, \
             >=1.2.3, 1.x and 1.* are refused)"
        ));
    }
    Ok(())
}

fn validate_package(p: &ServerJsonPackage, path: &str, problems: &mut Vec<Problem>) {
    let mut push = |sub: &str, msg: String| problems.push(problem(format!("{path}.{sub}"), msg));
    let registry_type = p.registry_type.as_deref().unwrap_or_default();
    if registry_type.trim().is_empty() {
        push(
            "registryType",
            "required (npm, pypi, oci, nuget, mcpb, …)".into(),
        );
    }
    if p.identifier.as_deref().is_none_or(|s| s.trim().is_empty()) {
        push("identifier", "required".into());
    }
    match &p.version {
        Some(v) => {
            if let Err(e) = check_version(v) {
                push("version", e)
            }
        }
        None if matches!(registry_type, "npm" | "pypi" | "nuget") => {
            push("version", format!("required for {registry_type} packages"))
        }
        None => {}
    }
    match &p.file_sha256 {
        Some(h)
            if !(h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))) =>
        {
            push(
                "fileSha256",
                "must be 64 lowercase hex digits (SHA-256)".into(),
            )
        }
        None if registry_type == "mcpb" => push("fileSha256", "required for mcpb packages".into()),
        _ => {}
    }
    if let Some(u) = &p.registry_base_url
        && let Err(e) = check_http_url(u)
    {
        push("registryBaseUrl", e);
    }
    match &p.transport {
        None => push("transport", "required".into()),
        Some(t) => {
            let tpath = format!("{path}.transport");
            match t.kind.as_deref() {
                None => problems.push(problem(format!("{tpath}.type"), "required")),
                Some("stdio") => {
                    if t.url.is_some() {
                        problems.push(problem(
                            format!("{tpath}.url"),
                            "a stdio transport has no url",
                        ));
                    }
                }
                Some("streamable-http" | "sse") => {}
                Some(other) => problems.push(problem(
                    format!("{tpath}.type"),
                    format!(
                        "unknown transport type {other:?}; expected stdio, streamable-http or sse"
                    ),
                )),
            }
            validate_transport_parts(t, &tpath, problems);
        }
    }
    for (field, args) in [
        ("runtimeArguments", &p.runtime_arguments),
        ("packageArguments", &p.package_arguments),
    ] {
        for (i, a) in args.iter().enumerate() {
            let apath = format!("{path}.{field}[{i}]");
            match a.kind.as_deref() {
                Some("named") => {
                    if a.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
                        problems.push(problem(
                            format!("{apath}.name"),
                            "required for a named argument (the flag, e.g. --port)",
                        ));
                    }
                }
                Some("positional") => {
                    if a.value.is_none() && a.value_hint.is_none() {
                        problems.push(problem(
                            apath.clone(),
                            "a positional argument needs a value or a valueHint",
                        ));
                    }
                }
                None => problems.push(problem(
                    format!("{apath}.type"),
                    "required (positional or named)",
                )),
                Some(other) => problems.push(problem(
                    format!("{apath}.type"),
                    format!("unknown argument type {other:?}; expected positional or named"),
                )),
            }
            check_secret_input(
                a.is_secret,
                [("value", &a.value), ("default", &a.default)],
                &a.variables,
                &apath,
                problems,
            );
            check_variables(&a.variables, a.is_secret == Some(true), &apath, problems);
        }
    }
    for (i, e) in p.environment_variables.iter().enumerate() {
        let epath = format!("{path}.environmentVariables[{i}]");
        match e.name.as_deref() {
            None => problems.push(problem(format!("{epath}.name"), "required")),
            Some(n) if !is_env_name(n) => problems.push(problem(
                format!("{epath}.name"),
                format!("{n:?} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"),
            )),
            Some(_) => {}
        }
        check_key_value(e, &epath, problems);
    }
}

fn is_env_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The parts a package transport and a remote share: URL, headers, variables.
fn validate_transport_parts(t: &ServerJsonTransport, path: &str, problems: &mut Vec<Problem>) {
    let http = matches!(t.kind.as_deref(), Some("streamable-http" | "sse"));
    match &t.url {
        None if http => problems.push(problem(
            format!("{path}.url"),
            format!(
                "required for a {} transport",
                t.kind.as_deref().unwrap_or("")
            ),
        )),
        Some(u) if http => {
            if let Err(e) = check_http_url(u) {
                problems.push(problem(format!("{path}.url"), e));
            }
        }
        _ => {}
    }
    for (i, h) in t.headers.iter().enumerate() {
        let hpath = format!("{path}.headers[{i}]");
        let header = Header {
            name: h.name.clone().unwrap_or_default(),
            is_secret: false,
            value: None,
        };
        if h.name.is_none() {
            problems.push(problem(format!("{hpath}.name"), "required"));
        } else if let Err(e) = header.validate() {
            problems.push(problem(format!("{hpath}.name"), e));
        }
        check_key_value(h, &hpath, problems);
    }
    check_variables(&t.variables, false, path, problems);
}

fn check_key_value(kv: &KeyValueInput, path: &str, problems: &mut Vec<Problem>) {
    check_secret_input(
        kv.is_secret,
        [("value", &kv.value), ("default", &kv.default)],
        &kv.variables,
        path,
        problems,
    );
    check_variables(&kv.variables, kv.is_secret == Some(true), path, problems);
}

/// The variables of an input. Those of a secret input are secret too: the template
/// `Bearer {token}` must not get its token from a plain variable's `default`.
fn check_variables(
    vars: &BTreeMap<String, Input>,
    parent_secret: bool,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    let vpath = format!("{path}.variables");
    for (name, input) in vars {
        check_secret_input(
            Some(parent_secret || input.is_secret == Some(true)),
            [("value", &input.value), ("default", &input.default)],
            &BTreeMap::new(),
            &member_path(&vpath, name),
            problems,
        );
    }
}

/// The secret rule: an input marked secret may not carry a literal value or default.
fn check_secret_input(
    is_secret: Option<bool>,
    values: [(&str, &Option<String>); 2],
    variables: &BTreeMap<String, Input>,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    if is_secret != Some(true) {
        return;
    }
    for (field, value) in values {
        if let Some(v) = value
            && !SecretRef::is_reference(v)
            && !is_variable_template(v, variables)
        {
            problems.push(problem(
                format!("{path}.{field}"),
                "isSecret is true and a literal value is given: secret values may not be \
                 stored; reference one with env:NAME or file:/path",
            ));
        }
    }
}

/// `Bearer {api_key}` where `api_key` is a declared variable: the secret parts are left for
/// the operator to supply, so the template holds no secret.
fn is_variable_template(v: &str, variables: &BTreeMap<String, Input>) -> bool {
    let names = placeholders(v);
    !names.is_empty() && names.iter().all(|n| variables.contains_key(*n))
}

fn placeholders(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = v;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    out
}

// --- Mapping -------------------------------------------------------------------------------

fn map(
    doc: ServerJson,
    name: ServerName,
    owner: Option<Owner>,
    now: DateTime<Utc>,
) -> ImportedServer {
    let mut transport = None;
    let mut transport_from = None;
    let mut chosen_package = None;
    for (i, p) in doc.packages.iter().enumerate() {
        let stdio = p.transport.as_ref().and_then(|t| t.kind.as_deref()) == Some("stdio");
        if let (true, Some(t)) = (stdio, stdio_transport(p)) {
            transport = Some(t);
            transport_from = Some(format!("$.packages[{i}]"));
            chosen_package = Some(p);
            break;
        }
    }
    if transport.is_none()
        && let Some((i, r)) = doc.remotes.iter().enumerate().next()
    {
        transport = Some(remote_transport(r));
        transport_from = Some(format!("$.remotes[{i}]"));
    }
    let package = chosen_package.or(doc.packages.first()).map(|p| Package {
        registry_type: p.registry_type.clone().unwrap_or_default(),
        identifier: p.identifier.clone().unwrap_or_default(),
        version: p.version.clone(),
        file_sha256: p.file_sha256.clone(),
    });
    let repository = doc.repository.clone();
    let server = ToolServer {
        alias: name.alias(),
        name,
        title: doc.title.clone(),
        description: doc.description.clone().unwrap_or_default(),
        version: doc.version.clone().unwrap_or_default(),
        owner,
        source: Source {
            repository_url: repository.as_ref().and_then(|r| r.url.clone()),
            repository_source: repository.as_ref().and_then(|r| r.source.clone()),
            package,
        },
        transport,
        state: State::PendingReview,
        scopes: Vec::new(),
        pin_policy: PinPolicy::Block,
        created_at: now,
        updated_at: now,
    };
    ImportedServer {
        server,
        schema: doc.schema.unwrap_or_else(|| SCHEMA_URLS[0].to_owned()),
        website_url: doc.website_url,
        icons: doc.icons,
        repository,
        packages: doc.packages,
        remotes: doc.remotes,
        transport_from,
        meta: doc.meta,
    }
}

/// The command that starts a stdio package, or `None` when Warden does not know how.
fn stdio_transport(p: &ServerJsonPackage) -> Option<Transport> {
    let id = p.identifier.as_deref()?;
    let version = p.version.as_deref();
    let runtime_args = p.runtime_arguments.iter().flat_map(render_argument);
    let (command, mut args): (&str, Vec<String>) = match p.registry_type.as_deref()? {
        "npm" => {
            let spec = version.map_or(id.to_owned(), |v| format!("{id}@{v}"));
            let mut a = vec!["-y".to_owned()];
            a.extend(runtime_args);
            a.push(spec);
            ("npx", a)
        }
        "pypi" => {
            let spec = version.map_or(id.to_owned(), |v| format!("{id}=={v}"));
            let mut a: Vec<String> = runtime_args.collect();
            a.push(spec);
            ("uvx", a)
        }
        "oci" => {
            let mut a = vec!["run".to_owned(), "-i".to_owned(), "--rm".to_owned()];
            a.extend(runtime_args);
            // Docker passes the named variables through from Warden's own environment,
            // where the connector sets them from their references.
            for e in &p.environment_variables {
                if let Some(n) = &e.name {
                    a.push("-e".to_owned());
                    a.push(n.clone());
                }
            }
            a.push(image_reference(id, version));
            ("docker", a)
        }
        _ => {
            let hint = p.runtime_hint.as_deref().filter(|h| !h.trim().is_empty())?;
            let spec = version.map_or(id.to_owned(), |v| format!("{id}@{v}"));
            let mut a: Vec<String> = runtime_args.collect();
            a.push(spec);
            (hint, a)
        }
    };
    args.extend(p.package_arguments.iter().flat_map(render_argument));
    let env = p.environment_variables.iter().map(env_var).collect();
    Some(Transport::Stdio {
        command: command.to_owned(),
        args,
        env,
    })
}

/// `identifier:version`, unless the identifier already names a tag or digest.
fn image_reference(id: &str, version: Option<&str>) -> String {
    let last = id.rsplit('/').next().unwrap_or(id);
    match version {
        Some(v) if !last.contains(':') && !id.contains('@') => format!("{id}:{v}"),
        _ => id.to_owned(),
    }
}

/// An argument as command-line words. Values that are still templates (`{target_dir}`)
/// stay as written for the operator to fill in.
fn render_argument(a: &Argument) -> Vec<String> {
    let given = a.value.clone().or_else(|| a.default.clone());
    let required = a.is_required == Some(true);
    match (a.kind.as_deref(), given) {
        (Some("named"), given) => match (a.name.clone(), given) {
            (Some(flag), Some(v)) => vec![flag, v],
            (Some(flag), None) if required => vec![flag],
            _ => Vec::new(),
        },
        (_, Some(v)) => vec![v],
        (_, None) => match &a.value_hint {
            Some(hint) if required => vec![format!("{{{hint}}}")],
            _ => Vec::new(),
        },
    }
}

/// The value a secret input maps to: a reference, or nothing for the operator to supply.
fn secret_value(kv: &KeyValueInput) -> Option<EnvValue> {
    [&kv.value, &kv.default]
        .into_iter()
        .flatten()
        .find_map(|v| SecretRef::parse(v).ok())
        .map(EnvValue::Secret)
}

fn plain_value(kv: &KeyValueInput) -> Option<EnvValue> {
    kv.value
        .clone()
        .or_else(|| kv.default.clone())
        .map(EnvValue::Literal)
}

fn env_var(kv: &KeyValueInput) -> EnvVar {
    let is_secret = kv.is_secret == Some(true);
    EnvVar {
        name: kv.name.clone().unwrap_or_default(),
        description: kv.description.clone(),
        is_required: kv.is_required == Some(true),
        is_secret,
        value: if is_secret {
            secret_value(kv)
        } else {
            plain_value(kv)
        },
    }
}

fn header(kv: &KeyValueInput) -> Header {
    let is_secret = kv.is_secret == Some(true);
    Header {
        name: kv.name.clone().unwrap_or_default(),
        is_secret,
        value: if is_secret {
            secret_value(kv)
        } else {
            plain_value(kv)
        },
    }
}

fn remote_transport(r: &ServerJsonTransport) -> Transport {
    let url = r.url.clone().unwrap_or_default();
    let headers = r.headers.iter().map(header).collect();
    match r.kind.as_deref() {
        Some("sse") => Transport::Sse { url, headers },
        _ => Transport::StreamableHttp { url, headers },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-01-15T10:00:00Z".parse().unwrap()
    }

    fn minimal() -> Value {
        json!({
            "$schema": SCHEMA_URLS[0],
            "name": "io.github.acme/deploy",
            "description": "Deploys services",
            "version": "1.0.0"
        })
    }

    #[test]
    fn a_minimal_file_imports_without_transport() {
        let s = import_value(&minimal(), None, now()).unwrap();
        assert_eq!(s.server.name.as_str(), "io.github.acme/deploy");
        assert_eq!(s.server.alias, "deploy");
        assert_eq!(s.server.state, State::PendingReview);
        assert!(s.server.transport.is_none() && s.transport_from.is_none());
        assert_eq!(s.schema, SCHEMA_URLS[0]);
        let mut no_schema = minimal();
        no_schema.as_object_mut().unwrap().remove("$schema");
        assert_eq!(
            import_value(&no_schema, None, now()).unwrap().schema,
            SCHEMA_URLS[0]
        );
        for url in SCHEMA_URLS {
            let mut v = minimal();
            v["$schema"] = json!(url);
            assert!(import_value(&v, None, now()).is_ok(), "{url}");
        }
    }

    #[test]
    fn syntax_errors_and_non_objects_are_one_problem() {
        let e = import("{\"name\": ", None, now()).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "$");
        assert!(e[0].message.contains("line 1"), "{}", e[0]);
        let e = import("[]", None, now()).unwrap_err();
        assert_eq!(e[0].message, "a server.json document must be a JSON object");
    }

    #[test]
    fn versions_must_be_exact() {
        for ok in [
            "1.0.0-x.1",
            "1.0.0",
            "2.1.0-alpha.1",
            "0.4.0-beta",
            "2025.4.8",
            "1.0.0+build.5",
        ] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in [
            "^1.2.3",
            "~1.2.3",
            ">=1.2.3",
            "<2",
            "1.x",
            "1.X.0",
            "1.*",
            "*",
            "latest",
            "1.0 - 2.0",
            "1 || 2",
            "",
        ] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn type_errors_are_reported_at_their_path() {
        let mut v = minimal();
        v["name"] = json!(42);
        v["packages"] = json!([
            {"registryType": "npm", "identifier": "x", "version": "1.0.0",
             "transport": {"type": "stdio"},
             "environmentVariables": [{"name": "A"}, {"name": "B", "isSecret": "yes"}]},
            "not a package"
        ]);
        let e = import_value(&v, None, now()).unwrap_err();
        let got: Vec<_> = e.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            got,
            [
                "$.name",
                "$.packages[0].environmentVariables[1].isSecret",
                "$.packages[1]"
            ],
            "{e:#?}"
        );
        assert!(e[0].message.contains("expected a string"), "{}", e[0]);
    }

    #[test]
    fn secret_templates_and_references_are_not_secret_values() {
        let mut v = minimal();
        v["remotes"] = json!([{
            "type": "streamable-http",
            "url": "https://{tenant}.mcp.example.com/mcp",
            "variables": {"tenant": {"description": "Your tenant", "isRequired": true}},
            "headers": [
                {"name": "Authorization", "isSecret": true, "value": "Bearer {api_key}",
                 "variables": {"api_key": {"isSecret": true, "isRequired": true}}},
                {"name": "X-Api-Key", "isSecret": true, "value": "env:EXAMPLE_KEY"},
                {"name": "X-Other", "isSecret": true, "value": "Bearer {undeclared}"},
                {"name": "X-Plain", "isSecret": true, "value": "Bearer {t}",
                 "variables": {"t": {"default": "tok_live_123"}}}
            ]
        }]);
        let e = import_value(&v, None, now()).unwrap_err();
        assert_eq!(
            e.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
            [
                "$.remotes[0].headers[2].value",
                "$.remotes[0].headers[3].variables.t.default"
            ]
        );
        v["remotes"][0]["headers"]
            .as_array_mut()
            .unwrap()
            .truncate(2);
        let s = import_value(&v, None, now()).unwrap();
        let Some(Transport::StreamableHttp { headers, .. }) = &s.server.transport else {
            panic!("{:?}", s.server.transport)
        };
        assert_eq!(headers[0].value, None);
        assert_eq!(
            headers[1].value,
            Some(EnvValue::Secret(SecretRef::Env("EXAMPLE_KEY".into())))
        );
    }

    #[test]
    fn commands_are_derived_from_the_registry_type() {
        let pkg = |v: Value| -> ServerJsonPackage { serde_json::from_value(v).unwrap() };
        let cmd = |p: ServerJsonPackage| match stdio_transport(&p) {
            Some(Transport::Stdio { command, args, .. }) => {
                Some(format!("{command} {}", args.join(" ")))
            }
            _ => None,
        };
        assert_eq!(
            cmd(pkg(
                json!({"registryType": "npm", "identifier": "@acme/mcp", "version": "1.2.3"})
            )),
            Some("npx -y @acme/mcp@1.2.3".into())
        );
        assert_eq!(
            cmd(pkg(
                json!({"registryType": "pypi", "identifier": "mcp-server-time", "version": "0.6.2"})
            )),
            Some("uvx mcp-server-time==0.6.2".into())
        );
        assert_eq!(
            cmd(pkg(
                json!({"registryType": "oci", "identifier": "docker.io/acme/mcp", "version": "3.1.0"})
            )),
            Some("docker run -i --rm docker.io/acme/mcp:3.1.0".into())
        );
        assert_eq!(
            cmd(pkg(
                json!({"registryType": "oci", "identifier": "localhost:5000/acme/mcp:v1"})
            )),
            Some("docker run -i --rm localhost:5000/acme/mcp:v1".into())
        );
        assert_eq!(
            cmd(pkg(
                json!({"registryType": "nuget", "identifier": "Acme.Mcp", "version": "0.5.0",
                "runtimeHint": "dnx", "packageArguments": [{"type": "positional", "value": "mcp"}]})
            )),
            Some("dnx Acme.Mcp@0.5.0 mcp".into())
        );
        assert_eq!(
            cmd(pkg(
                json!({"registryType": "mcpb", "identifier": "https://x.example/a.mcpb"})
            )),
            None
        );
    }

    #[test]
    fn arguments_render_as_words() {
        let arg =
            |v: Value| -> Vec<String> { render_argument(&serde_json::from_value(v).unwrap()) };
        assert_eq!(
            arg(json!({"type": "positional", "value": "stdio"})),
            ["stdio"]
        );
        assert_eq!(
            arg(json!({"type": "positional", "valueHint": "target_dir", "isRequired": true})),
            ["{target_dir}"]
        );
        assert!(arg(json!({"type": "positional", "valueHint": "extra"})).is_empty());
        assert_eq!(
            arg(json!({"type": "named", "name": "--port", "default": "8080"})),
            ["--port", "8080"]
        );
        assert_eq!(
            arg(json!({"type": "named", "name": "--verbose", "isRequired": true})),
            ["--verbose"]
        );
        assert!(arg(json!({"type": "named", "name": "--optional"})).is_empty());
    }

    #[test]
    fn member_paths_quote_odd_names() {
        assert_eq!(member_path("$", "name"), "$.name");
        assert_eq!(member_path("$", "$schema"), "$['$schema']");
        assert_eq!(member_path("$.x", "a-b"), "$.x['a-b']");
    }
}
