//! The deployments registry in SQLite: one row a deployment (its JSON body) and one row a
//! host key, for attribution by host.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::rows::{corrupt, into_deployment, ms, raw_deployment, time};
use super::EmbeddedStore;
use crate::model::alert::DeploymentId;
use crate::model::deployment::Deployment;
use crate::store::{DeploymentStore, Page, StoreError, Upsert};

#[async_trait]
impl DeploymentStore for EmbeddedStore {
    async fn put_deployment(&self, deployment: &Deployment) -> Result<Upsert, StoreError> {
        let mut d = deployment.clone();
        self.with(move |conn| {
            let created: Option<i64> = conn
                .query_row(
                    "SELECT created_time FROM deployments WHERE deployment_id = ?1",
                    [d.deployment_id.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(created) = created {
                d.created_time = time(created);
            }
            let id = d.deployment_id.as_str().to_owned();
            let body = serde_json::to_string(&d).map_err(|e| corrupt(&id, e.to_string()))?;
            conn.execute(
                "INSERT INTO deployments (deployment_id, body, deployed_at, created_time, updated_time, rollback_secret) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (deployment_id) DO UPDATE SET \
                 body = excluded.body, deployed_at = excluded.deployed_at, updated_time = excluded.updated_time, \
                 rollback_secret = excluded.rollback_secret",
                params![
                    id,
                    body,
                    ms(d.started_at),
                    ms(d.created_time),
                    ms(d.updated_time),
                    d.rollback_policy.as_ref().map(|p| p.secret.as_str()).unwrap_or("")
                ],
            )?;
            conn.execute("DELETE FROM deployment_hosts WHERE deployment_id = ?1", [&id])?;
            for host in d.host_keys() {
                conn.execute(
                    "INSERT INTO deployment_hosts (host, deployment_id, deployed_at) VALUES (?1, ?2, ?3)",
                    params![host, id, ms(d.started_at)],
                )?;
            }
            Ok(if created.is_some() {
                Upsert::Updated
            } else {
                Upsert::Created
            })
        })
        .await
    }

    async fn get_deployment(
        &self,
        deployment_id: &DeploymentId,
    ) -> Result<Option<Deployment>, StoreError> {
        let id = deployment_id.clone();
        self.read(move |conn| {
            conn.query_row(
                "SELECT deployment_id, body, rollback_secret FROM deployments WHERE deployment_id = ?1",
                [id.as_str()],
                raw_deployment,
            )
            .optional()?
            .map(into_deployment)
            .transpose()
        })
        .await
    }

    async fn list_deployments(&self, page: &Page) -> Result<Vec<Deployment>, StoreError> {
        let page = page.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT deployment_id, body, rollback_secret FROM deployments WHERE (?1 IS NULL OR created_time < ?1) \
                 AND (?2 IS NULL OR created_time < ?2 OR (created_time = ?2 AND deployment_id < ?3)) \
                 ORDER BY created_time DESC, deployment_id DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![
                    page.before.map(ms),
                    page.after.as_ref().map(|c| ms(c.created_time)),
                    page.after.as_ref().map(|c| c.key.clone()),
                    page.limit
                ],
                raw_deployment,
            )?;
            rows.map(|row| row.map_err(StoreError::from).and_then(into_deployment))
                .collect()
        })
        .await
    }

    async fn delete_deployment(&self, deployment_id: &DeploymentId) -> Result<bool, StoreError> {
        let id = deployment_id.clone();
        self.with(move |conn| {
            conn.execute(
                "DELETE FROM deployment_hosts WHERE deployment_id = ?1",
                [id.as_str()],
            )?;
            let deleted = conn.execute(
                "DELETE FROM deployments WHERE deployment_id = ?1",
                [id.as_str()],
            )?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn latest_on_hosts(
        &self,
        host_keys: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Option<Deployment>, StoreError> {
        if host_keys.is_empty() {
            return Ok(None);
        }
        let hosts =
            serde_json::to_string(host_keys).map_err(|e| corrupt("hosts", e.to_string()))?;
        self.read(move |conn| {
            conn.query_row(
                "SELECT d.deployment_id, d.body, d.rollback_secret FROM deployment_hosts h \
                 JOIN deployments d ON d.deployment_id = h.deployment_id \
                 WHERE h.host IN (SELECT value FROM json_each(?1)) AND h.deployed_at BETWEEN ?2 AND ?3 \
                 ORDER BY h.deployed_at DESC, d.deployment_id DESC LIMIT 1",
                params![hosts, ms(from), ms(to)],
                raw_deployment,
            )
            .optional()?
            .map(into_deployment)
            .transpose()
        })
        .await
    }
}
