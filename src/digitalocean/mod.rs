//! Typed async client for the DigitalOcean droplet-action API.
//!
//! - [`token`]: the redacting [`Token`] type (only its fingerprint is ever logged).
//! - [`request`]: [`ActionRequest`], one variant per action type, and the exact JSON
//!   bodies DigitalOcean documents (single droplet and by tag).
//! - [`types`]: lenient response types ([`Action`], [`Droplet`], [`Snapshot`], [`Page`]).
//! - [`error`]: [`DoError`] with stable [`ErrorKind`]s, and [`PostError`] which says
//!   whether a failed POST may have been applied ([`Applied`]).
//! - [`ratelimit`]: the per-token [`RateBudget`] shared by all reconciles.
//! - [`watermark`]: the highest action ID seen per token, a free watermark for initiations.
//! - [`client`]: [`DoClient`]. POSTs are never re-sent unless certainly not applied;
//!   GETs retry transient failures with jittered backoff (see the module docs).
//!
//! ```no_run
//! use droplet_operator::digitalocean::{ActionRequest, Applied, ClientConfig, DoClient, Token};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = DoClient::new(ClientConfig::default())?;
//! let token = Token::new(std::env::var("DIGITALOCEAN_TOKEN")?);
//! match client.post_droplet_action(&token, 3164444, &ActionRequest::PowerOff).await {
//!     Ok(action) => println!("started action {}", action.id),
//!     // Certainly not started: safe to try again later.
//!     Err(e) if e.applied == Applied::NotApplied => println!("not started: {}", e.error.reason()),
//!     // May have started: list the droplet's actions before sending it again.
//!     Err(e) => println!("unknown outcome: {e}"),
//! }
//! println!("budget left this hour: {}", client.budget(&token).remaining_hour);
//! # Ok(())
//! # }
//! ```

pub mod client;
mod config;
mod endpoints;
pub mod error;
pub mod ratelimit;
pub mod request;
pub mod token;
pub mod types;
pub mod watermark;

pub use client::{
    ClientConfig, ConfigError, DoClient, MAX_PER_PAGE, PostSlot, RequestObserver, RetryPolicy,
};
pub use error::{Applied, DoError, ErrorKind, PostError};
pub use ratelimit::{BudgetSnapshot, RateBudget, RateLimits};
pub use request::{ActionRequest, BackupPlan, BackupPolicy, ImageRef, RequestError, Weekday};
pub use token::Token;
pub use types::{Action, ActionStatus, Droplet, Page, RegionRef, Snapshot};
