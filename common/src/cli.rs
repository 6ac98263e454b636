//! Arguments shared by every service binary.

use crate::config::{Config, ConfigError, redacted_toml};
use std::path::PathBuf;

/// `--config FILE` and `--print-config`, flattened into each binary's clap parser.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file layered over the embedded defaults; `LASTSEEN_*` environment
    /// variables override both.
    #[arg(long, short = 'c', env = "LASTSEEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl ConfigArgs {
    /// Loads the configuration, or prints it and exits when `--print-config` was given.
    pub fn load(&self) -> Result<Config, ConfigError> {
        // LASTSEEN_CONFIG names the file, it is not a config key.
        let env = std::env::vars().filter(|(k, _)| k != "LASTSEEN_CONFIG");
        let cfg = Config::load_from(self.config.as_deref(), env)?;
        if self.print_config {
            print!("{}", redacted_toml(&cfg));
            std::process::exit(0);
        }
        Ok(cfg)
    }
}
