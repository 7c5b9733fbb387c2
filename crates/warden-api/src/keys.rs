//! Key material kept in the data directory: the checkpoint signing key and the master key
//! from which each tenant's redaction key is derived. Created on first start, mode 0600.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use warden_audit::checkpoint::CheckpointSigner;

pub const CHECKPOINT_KEY: &str = "keys/checkpoint.key";
pub const CHECKPOINT_PUBLIC_KEY: &str = "keys/checkpoint.pub";
pub const REDACTION_KEY: &str = "keys/redaction.key";

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Loads the checkpoint signer from `explicit` or the data dir, creating one if absent.
pub fn checkpoint_signer(
    data_dir: &Path,
    explicit: Option<&Path>,
) -> anyhow::Result<CheckpointSigner> {
    let path: PathBuf = explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data_dir.join(CHECKPOINT_KEY));
    if path.exists() {
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        return CheckpointSigner::from_key_file(text.trim())
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()));
    }
    if explicit.is_some() {
        bail!("checkpoint key {} does not exist", path.display());
    }
    let signer = CheckpointSigner::generate();
    write_private(&path, &signer.to_key_file())?;
    fs::write(
        data_dir.join(CHECKPOINT_PUBLIC_KEY),
        signer.verifier().to_key_file() + "\n",
    )?;
    Ok(signer)
}

/// Loads (or creates) the 32-byte redaction master key.
pub fn redaction_master(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = data_dir.join(REDACTION_KEY);
    if path.exists() {
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let bytes =
            hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
        return bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} must hold 32 bytes", path.display()));
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    write_private(&path, &hex::encode(key))?;
    Ok(key)
}
