//! `warden policy validate DIR`: the same parsing and strict validation the server applies,
//! for a CI pipeline. Exit 0 when the directory would load, 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Parse and strictly validate a policy directory; print file:line:col errors.
    Validate {
        dir: PathBuf,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Validate { dir, format } => {
            if !dir.is_dir() {
                anyhow::bail!("{} is not a directory", dir.display());
            }
            let result = warden_api::policies::read_dir(&dir).and_then(|snap| {
                let files = snap.sources.len();
                warden_policy::Engine::build(snap.sources, snap.schema_extension.as_deref())
                    .map(|e| (files, e.policy_count()))
                    .map_err(|errs| errs.iter().map(ToString::to_string).collect())
            });
            match (result, format.as_str()) {
                (Ok((files, policies)), "json") => {
                    println!(
                        "{}",
                        serde_json::json!({"valid": true, "files": files, "policies": policies, "errors": []})
                    );
                    Ok(ExitCode::SUCCESS)
                }
                (Ok((files, policies)), _) => {
                    println!("ok: {policies} policies in {files} files");
                    Ok(ExitCode::SUCCESS)
                }
                (Err(errors), "json") => {
                    println!("{}", serde_json::json!({"valid": false, "errors": errors}));
                    Ok(ExitCode::FAILURE)
                }
                (Err(errors), _) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    eprintln!("{} error(s); nothing would be applied", errors.len());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
