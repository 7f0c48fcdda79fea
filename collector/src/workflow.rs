//! The decommission workflow's shared state (issue 16), one field of the API's state:
//! the owners file, the admin tokens that guard watches, the watch settings, and the
//! latest watch evaluation (answers and `/metrics`).

use std::time::Duration;

use crate::auth::Tokens;
use crate::config::Config;
use crate::owners::Owners;
use crate::watch::{Live, Settings};

#[derive(Default)]
pub struct Workflow {
    pub owners: Owners,
    pub admin_tokens: Tokens,
    pub watch: Settings,
    pub live: Live,
}

impl Workflow {
    pub fn from_config(config: &Config) -> anyhow::Result<Workflow> {
        let owners = match &config.owners {
            Some(p) => Owners::load(p)?,
            None => Owners::default(),
        };
        Ok(Workflow {
            owners,
            admin_tokens: config.admin().map_err(anyhow::Error::msg)?,
            watch: Settings {
                interval: config.watch_interval.0,
                renotify_after: config.renotify_after.0,
                max_watches: config.max_watches as usize,
                max_pending: config.max_pending_notifications as usize,
                notify_timeout: config.notify_timeout.0,
                give_up_after: config.notify_give_up_after.0,
                public_url: config.public_url.clone(),
            },
            live: Live::default(),
        })
    }

    /// How often the notifier runs.
    pub fn interval(&self) -> Duration {
        self.watch.interval
    }
}
