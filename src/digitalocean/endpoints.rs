//! The typed endpoints of [`DoClient`]: droplet actions (POST and GET), account actions, droplets, snapshots.
//! The request machinery they share (budget, retries, POST safety) is in [`super::client`].

use std::fmt;

use http::Method;

use super::client::{DoClient, List, PostSlot, decode_error, decode_key, route};
use super::error::{DoError, ErrorKind, PostError};
use super::request::ActionRequest;
use super::token::Token;
use super::types::{Action, Droplet, Page, Snapshot};

impl DoClient {
    fn invalid_request(token: &Token, e: impl fmt::Display) -> PostError {
        PostError::not_applied(DoError::new(
            ErrorKind::Invalid,
            format!("request not sent: {e}"),
            token.expose(),
        ))
    }

    /// Takes a slot of the token's rate budget for one POST now (waiting for it like any request), so that the
    /// POST sent later with it does not wait: the controller reserves before recording an intent, and no budget
    /// wait sits between the intent and the request.
    pub async fn reserve_post(&self, token: &Token) -> Result<PostSlot, DoError> {
        let auth = self.reserve(token, route::POST_DROPLET_ACTION).await?;
        Ok(PostSlot {
            auth,
            fingerprint: token.fingerprint(),
        })
    }

    /// `POST /v2/droplets/{id}/actions`. See the module docs for the POST-safety rule.
    pub async fn post_droplet_action(
        &self,
        token: &Token,
        droplet_id: i64,
        req: &ActionRequest,
    ) -> Result<Action, PostError> {
        self.post_droplet_action_in(None, token, droplet_id, req)
            .await
    }

    /// [`DoClient::post_droplet_action`], paid with a slot from [`DoClient::reserve_post`].
    pub async fn post_droplet_action_in(
        &self,
        slot: Option<PostSlot>,
        token: &Token,
        droplet_id: i64,
        req: &ActionRequest,
    ) -> Result<Action, PostError> {
        req.validate()
            .map_err(|e| Self::invalid_request(token, e))?;
        if droplet_id < 1 {
            return Err(Self::invalid_request(token, "droplet id must be >= 1"));
        }
        let id = droplet_id.to_string();
        let url = self.url(&["v2", "droplets", &id, "actions"], &[]);
        let (body, headers) = self
            .post(
                token,
                route::POST_DROPLET_ACTION,
                url,
                &req.body(),
                req.scope_hint(),
                slot,
            )
            .await?;
        let action = decode_key::<Action>(&body, "action")
            .map_err(|m| PostError::ambiguous(decode_error(token, m, &headers)))?;
        self.observe_actions(token, [action.id], true);
        Ok(action)
    }

    /// `POST /v2/droplets/actions?tag_name=` (the tag is percent-encoded). Returns one
    /// action per tagged droplet.
    pub async fn post_tag_action(
        &self,
        token: &Token,
        tag: &str,
        req: &ActionRequest,
    ) -> Result<Vec<Action>, PostError> {
        self.post_tag_action_in(None, token, tag, req).await
    }

    /// [`DoClient::post_tag_action`], paid with a slot from [`DoClient::reserve_post`].
    pub async fn post_tag_action_in(
        &self,
        slot: Option<PostSlot>,
        token: &Token,
        tag: &str,
        req: &ActionRequest,
    ) -> Result<Vec<Action>, PostError> {
        let body = req
            .tag_body()
            .map_err(|e| Self::invalid_request(token, e))?;
        req.validate()
            .map_err(|e| Self::invalid_request(token, e))?;
        if tag.is_empty() {
            // Without tag_name the endpoint's behaviour is undocumented: never send it.
            return Err(Self::invalid_request(token, "tag must not be empty"));
        }
        let url = self.url(&["v2", "droplets", "actions"], &[("tag_name", tag)]);
        let (bytes, headers) = self
            .post(
                token,
                route::POST_TAG_ACTION,
                url,
                &body,
                req.tag_scope_hint(),
                slot,
            )
            .await?;
        let actions = decode_key::<Vec<Action>>(&bytes, "actions")
            .map_err(|m| PostError::ambiguous(decode_error(token, m, &headers)))?;
        self.observe_actions(token, actions.iter().map(|a| a.id), true);
        Ok(actions)
    }

    /// `GET /v2/droplets/{id}/actions/{action_id}`.
    pub async fn get_droplet_action(
        &self,
        token: &Token,
        droplet_id: i64,
        action_id: i64,
    ) -> Result<Action, DoError> {
        let (d, a) = (droplet_id.to_string(), action_id.to_string());
        let url = self.url(&["v2", "droplets", &d, "actions", &a], &[]);
        let action: Action = self
            .get_json(
                token,
                route::GET_DROPLET_ACTION,
                url,
                "action",
                "droplet:read",
            )
            .await?;
        self.observe_actions(token, [action.id], false);
        Ok(action)
    }

    /// `GET /v2/droplets/{id}/actions?page=&per_page=` (per_page clamped to 1..=200).
    pub async fn list_droplet_actions(
        &self,
        token: &Token,
        droplet_id: i64,
        page: u32,
        per_page: u32,
    ) -> Result<Page<Action>, DoError> {
        let d = droplet_id.to_string();
        self.get_page(
            token,
            &List {
                route: route::LIST_DROPLET_ACTIONS,
                segments: &["v2", "droplets", &d, "actions"],
                query: &[],
                key: "actions",
                scope_hint: "droplet:read",
            },
            page,
            per_page,
        )
        .await
        .inspect(|p: &Page<Action>| {
            self.observe_actions(token, p.items.iter().map(|a| a.id), false)
        })
    }

    /// Every page of a droplet's actions (200 per page), at most `max_pages` pages.
    pub async fn list_all_droplet_actions(
        &self,
        token: &Token,
        droplet_id: i64,
        max_pages: u32,
    ) -> Result<Vec<Action>, DoError> {
        let d = droplet_id.to_string();
        self.get_all(
            token,
            &List {
                route: route::LIST_DROPLET_ACTIONS,
                segments: &["v2", "droplets", &d, "actions"],
                query: &[],
                key: "actions",
                scope_hint: "droplet:read",
            },
            max_pages,
        )
        .await
        .inspect(|all: &Vec<Action>| self.observe_actions(token, all.iter().map(|a| a.id), false))
    }

    /// `GET /v2/actions/{id}` (needs `actions:read`).
    pub async fn get_action(&self, token: &Token, action_id: i64) -> Result<Action, DoError> {
        let a = action_id.to_string();
        let url = self.url(&["v2", "actions", &a], &[]);
        let action: Action = self
            .get_json(token, route::GET_ACTION, url, "action", "actions:read")
            .await?;
        self.observe_actions(token, [action.id], false);
        Ok(action)
    }

    /// `GET /v2/actions?page=&per_page=` (needs `actions:read`).
    pub async fn list_actions(
        &self,
        token: &Token,
        page: u32,
        per_page: u32,
    ) -> Result<Page<Action>, DoError> {
        self.get_page(
            token,
            &List {
                route: route::LIST_ACTIONS,
                segments: &["v2", "actions"],
                query: &[],
                key: "actions",
                scope_hint: "actions:read",
            },
            page,
            per_page,
        )
        .await
        // Newest first: the first page holds the account's newest action.
        .inspect(|p: &Page<Action>| {
            self.observe_actions(token, p.items.iter().map(|a| a.id), page == 1)
        })
    }

    /// Every droplet with `tag` (all pages, 200 per page, at most `max_list_pages`).
    pub async fn list_droplets_by_tag(
        &self,
        token: &Token,
        tag: &str,
    ) -> Result<Vec<Droplet>, DoError> {
        if tag.is_empty() {
            return Err(DoError::new(
                ErrorKind::Invalid,
                "request not sent: tag must not be empty",
                token.expose(),
            ));
        }
        self.get_all(
            token,
            &List {
                route: route::LIST_DROPLETS_BY_TAG,
                segments: &["v2", "droplets"],
                query: &[("tag_name", tag)],
                key: "droplets",
                scope_hint: "tag:read",
            },
            self.max_list_pages(),
        )
        .await
    }

    /// `GET /v2/droplets/{id}`.
    pub async fn get_droplet(&self, token: &Token, droplet_id: i64) -> Result<Droplet, DoError> {
        let d = droplet_id.to_string();
        let url = self.url(&["v2", "droplets", &d], &[]);
        self.get_json(token, route::GET_DROPLET, url, "droplet", "droplet:read")
            .await
    }

    /// `GET /v2/droplets/{id}/snapshots?page=&per_page=`: find a snapshot's image ID
    /// (match `created_at` with the snapshot action's `started_at`).
    pub async fn list_droplet_snapshots(
        &self,
        token: &Token,
        droplet_id: i64,
        page: u32,
        per_page: u32,
    ) -> Result<Page<Snapshot>, DoError> {
        let d = droplet_id.to_string();
        self.get_page(
            token,
            &List {
                route: route::LIST_DROPLET_SNAPSHOTS,
                segments: &["v2", "droplets", &d, "snapshots"],
                query: &[],
                key: "snapshots",
                scope_hint: "droplet:read",
            },
            page,
            per_page,
        )
        .await
    }

    /// Every page of a droplet's snapshots, at most `max_pages` pages.
    pub async fn list_all_droplet_snapshots(
        &self,
        token: &Token,
        droplet_id: i64,
        max_pages: u32,
    ) -> Result<Vec<Snapshot>, DoError> {
        let d = droplet_id.to_string();
        self.get_all(
            token,
            &List {
                route: route::LIST_DROPLET_SNAPSHOTS,
                segments: &["v2", "droplets", &d, "snapshots"],
                query: &[],
                key: "snapshots",
                scope_hint: "droplet:read",
            },
            max_pages,
        )
        .await
    }

    /// `DELETE /v2/snapshots/{id}` (204; scope `image:delete`). A snapshot that is already gone (404) is
    /// `Ok(false)`: deleting is idempotent, so it is retried like a GET on 429, 5xx and network errors.
    pub async fn delete_snapshot(&self, token: &Token, snapshot_id: i64) -> Result<bool, DoError> {
        let id = snapshot_id.to_string();
        let url = self.url(&["v2", "snapshots", &id], &[]);
        match self
            .idempotent_bytes(
                token,
                route::DELETE_SNAPSHOT,
                Method::DELETE,
                url,
                "image:delete",
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
