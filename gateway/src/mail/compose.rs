//! Writing a message into the outbox: the template rendered in the
//! recipient's locale, inserted in the caller's transaction, and the
//! sender woken once that transaction has committed.

use std::sync::Arc;

use postgres::GenericClient;
use tokio::sync::Notify;

use super::{Kind, Locale, Templates};
use crate::config::EmailConfig;
use crate::error::Result;
use crate::store::outbox::{self, NewMessage};

/// The templates and settings messages are composed with, and the bell
/// that wakes this process's sender.
pub struct Composer {
    pub config: EmailConfig,
    templates: Templates,
    wake: Arc<Notify>,
}

/// Which frontend page a link opens.
#[derive(Debug, Clone, Copy)]
pub enum Link {
    Verify,
    Reset,
}

impl Composer {
    /// Loads the templates (`email.templates_dir` over the built-in ones).
    pub fn new(config: &EmailConfig, base_dir: &std::path::Path) -> Result<Self, String> {
        Ok(Self {
            config: config.clone(),
            templates: Templates::load(config, base_dir)?,
            wake: Arc::new(Notify::new()),
        })
    }

    /// The bell [`super::sender`] waits on.
    pub fn bell(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Tells the sender that messages were committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The frontend URL carrying `token`.
    pub fn link(&self, link: Link, token: &str) -> String {
        let template = match link {
            Link::Verify => &self.config.verify_url,
            Link::Reset => &self.config.reset_url,
        };
        template.replace("{token}", token)
    }

    /// Renders `kind` in `locale` (with `{product}` added to `vars`) and
    /// queues it for `to` in `c`'s transaction. An address no message can
    /// go to is skipped with a warning (false): the action still happens.
    pub fn queue(
        &self,
        c: &mut impl GenericClient,
        kind: Kind,
        locale: Locale,
        to: &str,
        vars: &[(&str, &str)],
    ) -> Result<bool> {
        if !super::is_deliverable(to) {
            tracing::warn!(
                kind = kind.as_str(),
                "no message queued: the address is not deliverable"
            );
            return Ok(false);
        }
        let mut all = Vec::with_capacity(vars.len() + 1);
        all.push(("product", self.config.product.as_str()));
        all.extend_from_slice(vars);
        let r = self.templates.render(kind, locale, &all);
        outbox::enqueue(
            c,
            &NewMessage {
                kind: kind.as_str(),
                recipient: to,
                subject: &r.subject,
                text: &r.text,
                html: &r.html,
            },
        )?;
        Ok(true)
    }

    /// A rendered message for `authgw email test` (not queued).
    pub fn render(&self, kind: Kind, locale: Locale) -> super::Rendered {
        self.templates
            .render(kind, locale, &[("product", self.config.product.as_str())])
    }
}
