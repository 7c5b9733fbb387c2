//! Canonical formatting of policy files, by Cedar's own formatter, so that every policy
//! repository reads the same and a review shows only real changes.

use std::str::FromStr;

use cedar_policy::PolicySet;
use cedar_policy_formatter::{Config, policies_str_to_pretty};

use crate::engine::{label_offset, message};
use crate::source::{LineIndex, PolicyError};

/// Formats a policy text canonically (Cedar's formatter: 80 columns, two-space indents).
/// Comments and annotations are kept; the policies are unchanged, which Cedar's formatter
/// checks itself by parsing its output again. A text that does not parse is reported like
/// [`crate::Engine::build`] reports it, each error as `origin:line:column`.
pub fn format_policies(origin: &str, text: &str) -> Result<String, Vec<PolicyError>> {
    // Cedar's parser is the one to report syntax errors: the formatter's own errors do
    // not say where the problem is.
    let set = PolicySet::from_str(text).map_err(|errs| {
        let lines = LineIndex::new(text);
        errs.iter()
            .map(|e| PolicyError::at(origin, &lines, label_offset(e), message(e)))
            .collect::<Vec<_>>()
    })?;
    let formatted = policies_str_to_pretty(text, &Config::default()).map_err(|e| {
        vec![PolicyError {
            origin: origin.to_owned(),
            line: 1,
            column: 1,
            message: format!("cannot format: {e:?}"),
        }]
    })?;
    // Without policies the formatter still starts the text with the newline it puts after
    // the last policy; a file of comments only is kept as it is written.
    Ok(if set.is_empty() {
        formatted.trim_start_matches('\n').to_owned()
    } else {
        formatted
    })
}
