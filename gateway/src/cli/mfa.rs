//! `authgw mfa`: remove a user's lost second factor.

use clap::Subcommand;

use super::{Failure, actor, connect};
use crate::admin;
use crate::config::Config;

#[derive(Subcommand)]
pub enum MfaCommand {
    /// Remove the user's TOTP factor and recovery codes (audited): for a
    /// user who lost both, after checking who is asking. The next login
    /// needs the password alone.
    Reset {
        #[arg(long)]
        login: String,
    },
}

pub fn run(config: &Config, cmd: MfaCommand) -> Result<(), Failure> {
    let MfaCommand::Reset { login } = cmd;
    // The user's address is told through the outbox; a running server's
    // sender delivers it at its next poll.
    let mail = crate::mail::Composer::new(&config.email, &config.base_dir()).map_err(|e| {
        Failure::Runtime(crate::error::Error::Internal(format!(
            "email.templates_dir: {e}"
        )))
    })?;
    let mut client = connect(config)?;
    let user = admin::require_login(&mut client, &login)?;
    admin::reset_mfa(&mut client, &actor(), user.id, Some(&mail))?;
    println!("removed the second factor of '{}'", user.login);
    Ok(())
}
