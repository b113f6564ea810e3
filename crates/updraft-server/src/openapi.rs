//! The OpenAPI 3.1 document, built from the route table so that it cannot
//! drift from the router.

use serde_json::{json, Map, Value};

use crate::api::{Access, ROUTES};

pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        let security = match r.access {
            Access::Public => json!([]),
            _ => json!([{ "bearer": [] }]),
        };
        let access = match r.access {
            Access::Public => "public".to_owned(),
            Access::Device => "device token".to_owned(),
            Access::Any => "device token or any API token".to_owned(),
            Access::Role(role) => format!("API token with role {}", role.as_str()),
        };
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        entry[r.method.to_lowercase()] = json!({
            "summary": r.summary,
            "description": format!("Access: {access}."),
            "security": security,
            "parameters": params,
            "responses": {
                "200": { "description": "success" },
                "4XX": { "description": "a client error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        });
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Updraft", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Firmware delivery: releases, channels, rollouts, devices." },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": { "Error": { "type": "object", "required": ["error", "message"],
                "properties": { "error": { "type": "string" }, "message": { "type": "string" } } } }
        }
    })
}
