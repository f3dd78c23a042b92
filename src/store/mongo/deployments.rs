//! The deployments registry in MongoDB.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{self, doc, Document};

use super::rows::{bdate, corrupt_doc, DeploymentDoc};
use super::{page_query, MongoStore, DEPLOYMENTS};
use crate::model::alert::DeploymentId;
use crate::model::deployment::Deployment;
use crate::store::{DeploymentStore, Page, StoreError, Upsert};

#[async_trait]
impl DeploymentStore for MongoStore {
    async fn put_deployment(&self, deployment: &Deployment) -> Result<Upsert, StoreError> {
        let id = deployment.deployment_id.as_str();
        let mut fields = bson::to_document(&DeploymentDoc::from_deployment(deployment))
            .map_err(|e| corrupt_doc(id, e))?;
        // The first registration's creation time stays.
        let mut on_insert = Document::new();
        if let Some(created) = fields.remove("createdTime") {
            on_insert.insert("createdTime", created);
        }
        let result = self
            .db
            .collection::<Document>(DEPLOYMENTS)
            .update_one(
                doc! { "deploymentId": id },
                doc! { "$set": fields, "$setOnInsert": on_insert },
            )
            .upsert(true)
            .await?;
        Ok(if result.upserted_id.is_some() {
            Upsert::Created
        } else {
            Upsert::Updated
        })
    }

    async fn get_deployment(
        &self,
        deployment_id: &DeploymentId,
    ) -> Result<Option<Deployment>, StoreError> {
        self.deployments
            .find_one(doc! { "deploymentId": deployment_id.as_str() })
            .await?
            .map(DeploymentDoc::into_deployment)
            .transpose()
    }

    async fn list_deployments(&self, page: &Page) -> Result<Vec<Deployment>, StoreError> {
        let docs: Vec<DeploymentDoc> = self
            .deployments
            .find(page_query(page, "deploymentId"))
            .sort(doc! { "createdTime": -1, "deploymentId": -1 })
            .limit(i64::from(page.limit))
            .await?
            .try_collect()
            .await?;
        docs.into_iter()
            .map(DeploymentDoc::into_deployment)
            .collect()
    }

    async fn delete_deployment(&self, deployment_id: &DeploymentId) -> Result<bool, StoreError> {
        let result = self
            .deployments
            .delete_one(doc! { "deploymentId": deployment_id.as_str() })
            .await?;
        Ok(result.deleted_count == 1)
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
        self.deployments
            .find_one(doc! {
                "hostKeys": { "$in": host_keys },
                "deployedAt": { "$gte": bdate(from), "$lte": bdate(to) },
            })
            .sort(doc! { "deployedAt": -1, "deploymentId": -1 })
            .await?
            .map(DeploymentDoc::into_deployment)
            .transpose()
    }
}
