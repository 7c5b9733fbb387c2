//! Warden's Cedar schema, completed by the tenant's optional extension, and the lookup
//! tables a decision needs from it (actions, what each applies to, entity type names).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{Entities, EntityTypeName, EntityUid, Schema};
use miette::Diagnostic;

use crate::source::{LineIndex, PolicyError};

/// The schema every policy is validated against.
pub(crate) const BASE_SCHEMA: &str = include_str!("../schema/warden.cedarschema");

/// Origin reported for errors in the tenant's schema extension.
pub const SCHEMA_EXTENSION_ORIGIN: &str = "schema.cedarschema";

/// Used when the tenant declares no `Args`: policies may still read undeclared arguments
/// behind a `has` test (the validator only warns that it cannot see them).
const DEFAULT_ARGS: &str = "type Args = {};\n";

pub(crate) struct Action {
    pub name: String,
    pub uid: EntityUid,
    pub principals: Vec<String>,
    pub resources: Vec<String>,
}

pub(crate) struct CompiledSchema {
    pub schema: Schema,
    pub actions: Vec<Action>,
    pub action_index: HashMap<String, u32>,
    /// Every entity type of the schema, so request types map to prebuilt names.
    pub types: HashMap<String, (u32, EntityTypeName)>,
    /// Action hierarchy, to expand `action in Action::"group"` in policy scopes.
    action_entities: Entities,
}

impl CompiledSchema {
    pub(crate) fn compile(extension: Option<&str>) -> Result<CompiledSchema, PolicyError> {
        let schema = match extension {
            None => parse(DEFAULT_ARGS, None)?,
            Some(ext) => match parse(ext, Some(ext)) {
                Ok(s) => s,
                // An extension that declares other things but not `Args` gets the default.
                Err(first) => {
                    parse(&format!("{ext}\n{DEFAULT_ARGS}"), Some(ext)).map_err(|_| first)?
                }
            },
        };
        let action_entities = schema.action_entities().map_err(|e| PolicyError {
            origin: SCHEMA_EXTENSION_ORIGIN.into(),
            line: 1,
            column: 1,
            message: e.to_string(),
        })?;
        let mut actions: Vec<Action> = schema
            .actions()
            .map(|uid| Action {
                name: uid.id().unescaped().to_owned(),
                uid: uid.clone(),
                principals: sorted_names(schema.principals_for_action(uid)),
                resources: sorted_names(schema.resources_for_action(uid)),
            })
            .collect();
        actions.sort_by(|a, b| a.name.cmp(&b.name));
        let action_index = actions
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.clone(), i as u32))
            .collect();
        let mut names: Vec<String> = schema.entity_types().map(|t| t.to_string()).collect();
        names.sort();
        let types = names
            .into_iter()
            .enumerate()
            .filter_map(|(i, n)| {
                EntityTypeName::from_str(&n)
                    .ok()
                    .map(|t| (n, (i as u32, t)))
            })
            .collect();
        Ok(CompiledSchema {
            schema,
            actions,
            action_index,
            types,
            action_entities,
        })
    }

    /// The actions a scope's `action in [..]` entry covers: the action and its members.
    pub(crate) fn actions_within(&self, group: &EntityUid) -> Vec<u32> {
        self.actions
            .iter()
            .enumerate()
            .filter(|(_, a)| &a.uid == group || self.action_entities.is_ancestor_of(group, &a.uid))
            .map(|(i, _)| i as u32)
            .collect()
    }
}

fn sorted_names<'a>(it: Option<impl Iterator<Item = &'a EntityTypeName>>) -> Vec<String> {
    let mut v: Vec<String> = it
        .into_iter()
        .flatten()
        .map(|t| t.to_string())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    v.sort();
    v
}

/// Parses Warden's schema followed by `tail`; errors located in the tail are reported
/// against the extension (when there is one).
fn parse(tail: &str, extension: Option<&str>) -> Result<Schema, PolicyError> {
    let text = format!("{BASE_SCHEMA}\n{tail}");
    let tail_start = BASE_SCHEMA.len() + 1;
    Schema::from_cedarschema_str(&text)
        .map(|(schema, _warnings)| schema)
        .map_err(|e| {
            let offset = e.labels().and_then(|mut l| l.next()).map(|l| l.offset());
            let mut message = e.to_string();
            if let Some(help) = e.help() {
                message = format!("{message} ({help})");
            }
            match (offset, extension) {
                (Some(o), Some(ext)) if o >= tail_start => PolicyError::at(
                    SCHEMA_EXTENSION_ORIGIN,
                    &LineIndex::new(ext),
                    o - tail_start,
                    message,
                ),
                (_, Some(_)) => PolicyError {
                    origin: SCHEMA_EXTENSION_ORIGIN.into(),
                    line: 1,
                    column: 1,
                    message,
                },
                (o, None) => PolicyError::at(
                    "warden.cedarschema",
                    &LineIndex::new(&text),
                    o.unwrap_or(0),
                    message,
                ),
            }
        })
}
