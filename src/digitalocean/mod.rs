//! Typed async client for the DigitalOcean droplet-action API.
//!
//! - [`token`]: the redacting [`Token`] type (only its fingerprint is ever logged).
//! - [`request`]: [`ActionRequest`], one variant per action type, and the exact JSON
//!   bodies DigitalOcean documents (single droplet and by tag).
//! - [`types`]: lenient response types ([`Action`], [`Droplet`], [`Snapshot`], [`Page`]).
//! - [`error`]: [`DoError`] with stable [`ErrorKind`]s, and [`PostError`] which says
//!   whether a failed POST may have been applied ([`Applied`]).
//! - [`ratelimit`]: the per-token [`RateBudget`] shared by all reconciles.
//! - [`client`]: [`DoClient`]. POSTs are never re-sent unless certainly not applied;
//!   GETs retry transient failures with jittered backoff (see the module docs).

pub mod client;
pub mod error;
pub mod ratelimit;
pub mod request;
pub mod token;
pub mod types;

pub use client::{ClientConfig, ConfigError, DoClient, MAX_PER_PAGE, RequestObserver, RetryPolicy};
pub use error::{Applied, DoError, ErrorKind, PostError};
pub use ratelimit::{BudgetSnapshot, RateBudget, RateLimits};
pub use request::{ActionRequest, BackupPlan, BackupPolicy, ImageRef, RequestError, Weekday};
pub use token::Token;
pub use types::{Action, ActionStatus, Droplet, Page, RegionRef, Snapshot};
