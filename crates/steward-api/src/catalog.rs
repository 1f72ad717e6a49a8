//! The built-in configuration catalog: the platforms' ready profiles (security baseline areas,
//! update rings) and profile kinds, read-only. Assigning one comes with the profile model.

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use steward_core::{CatalogCategory, CatalogProfile};
use utoipa::ToSchema;

use crate::ApiState;
use crate::error::ApiError;

/// What a catalog entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CatalogCategoryName {
    /// One area of the platform's security baseline, ready to assign.
    Baseline,
    /// An update ring, ready to assign.
    UpdateRing,
    /// A profile kind that needs parameters first.
    Kind,
}

impl From<CatalogCategory> for CatalogCategoryName {
    fn from(c: CatalogCategory) -> Self {
        match c {
            CatalogCategory::Baseline => Self::Baseline,
            CatalogCategory::UpdateRing => Self::UpdateRing,
            CatalogCategory::Kind => Self::Kind,
        }
    }
}

/// A catalog entry in lists.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CatalogSummary {
    /// Unique, e.g. `baseline-bitlocker`.
    pub name: String,
    /// e.g. `windows`.
    pub platform: String,
    pub category: CatalogCategoryName,
    /// The area it covers, e.g. `bitlocker`, `wifi`.
    pub area: String,
    pub title: String,
    pub description: String,
    pub settings: usize,
    /// Names of the parameters the admin must supply (kinds only).
    pub parameters: Vec<String>,
}

/// One setting of a catalog entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CatalogSettingView {
    /// The node (for Windows the OMA-DM LocURI); may hold `{{parameter}}` placeholders.
    pub path: String,
    /// int, chr, bool, b64, xml or null.
    pub format: String,
    /// replace, add or exec.
    pub verb: String,
    /// The recommended value as sent (empty for Format null).
    pub value: String,
    /// Whether the device answers a read of the node with the value.
    pub readable: bool,
    /// The platform's documentation of the node.
    pub doc: String,
    /// What removing the profile does: `delete`, `keep` or `replace:<value>`.
    pub on_remove: String,
    pub description: String,
}

/// A value the admin supplies before a kind can be assigned.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CatalogParameterView {
    pub name: String,
    pub description: String,
    /// A secret (Wi-Fi key, PFX password): never shown back.
    pub secret: bool,
    /// An example value (never a real secret).
    pub example: String,
}

/// A catalog entry with its settings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CatalogDetail {
    pub name: String,
    pub platform: String,
    pub category: CatalogCategoryName,
    pub area: String,
    pub title: String,
    pub description: String,
    /// The documentation the settings were taken from.
    pub source: String,
    pub settings: Vec<CatalogSettingView>,
    pub parameters: Vec<CatalogParameterView>,
}

/// The whole catalog (it is small and static, so it is not paged).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CatalogList {
    pub items: Vec<CatalogSummary>,
}

fn summary(p: &CatalogProfile) -> CatalogSummary {
    CatalogSummary {
        name: p.name.clone(),
        platform: p.platform.as_str().to_owned(),
        category: p.category.into(),
        area: p.area.clone(),
        title: p.title.clone(),
        description: p.description.clone(),
        settings: p.settings.len(),
        parameters: p.parameters.iter().map(|x| x.name.clone()).collect(),
    }
}

fn detail(p: &CatalogProfile) -> CatalogDetail {
    CatalogDetail {
        name: p.name.clone(),
        platform: p.platform.as_str().to_owned(),
        category: p.category.into(),
        area: p.area.clone(),
        title: p.title.clone(),
        description: p.description.clone(),
        source: p.source.clone(),
        settings: p
            .settings
            .iter()
            .map(|s| CatalogSettingView {
                path: s.path.clone(),
                format: s.format.clone(),
                verb: s.verb.clone(),
                value: s.value.clone(),
                readable: s.readable,
                doc: s.doc.clone(),
                on_remove: s.on_remove.to_string(),
                description: s.description.clone(),
            })
            .collect(),
        parameters: p
            .parameters
            .iter()
            .map(|x| CatalogParameterView {
                name: x.name.clone(),
                description: x.description.clone(),
                secret: x.secret,
                example: x.example.clone(),
            })
            .collect(),
    }
}

/// The built-in catalog of every platform this server manages.
#[utoipa::path(
    get,
    path = "/api/v1/catalog",
    tag = "catalog",
    responses((status = 200, description = "Every catalog entry", body = CatalogList))
)]
pub async fn list_catalog(State(state): State<ApiState>) -> Result<axum::Json<CatalogList>, ApiError> {
    Ok(axum::Json(CatalogList {
        items: state.core.platforms.catalog().map(summary).collect(),
    }))
}

/// One catalog entry with its settings and parameters.
#[utoipa::path(
    get,
    path = "/api/v1/catalog/{name}",
    tag = "catalog",
    params(("name" = String, Path, description = "The entry's name, e.g. baseline-bitlocker")),
    responses(
        (status = 200, description = "The entry", body = CatalogDetail),
        (status = 404, description = "No such entry", body = crate::Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_catalog_entry(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<axum::Json<CatalogDetail>, ApiError> {
    state
        .core
        .platforms
        .catalog()
        .find(|p| p.name == name)
        .map(|p| axum::Json(detail(p)))
        .ok_or(ApiError::NotFound("catalog entry"))
}
