//! The OpenAPI 3.1 document, built from the route table so that it cannot
//! drift from the router: paths, parameters, access per route, and the
//! request and response schemas generated (schemars, JSON Schema 2020-12 as
//! OpenAPI 3.1 uses) from the wire types each route names.

use serde_json::{json, Map, Value};
use updraft_proto::ErrorBody;

use crate::api::{schema, Access, Payload, ROUTES};

fn content(payload: Payload, generator: &mut schemars::SchemaGenerator) -> Option<Value> {
    Some(match payload {
        Payload::None => return None,
        Payload::Json(f) => json!({ "application/json": { "schema": f(generator) } }),
        Payload::AnyJson => json!({ "application/json": { "schema": {} } }),
        Payload::Object => json!({ "application/json": { "schema": { "type": "object" } } }),
        Payload::Binary => {
            json!({ "application/octet-stream": { "schema": { "type": "string", "contentMediaType": "application/octet-stream" } } })
        }
        Payload::Text => json!({ "text/plain": { "schema": { "type": "string" } } }),
        Payload::Html | Payload::Form => return None,
    })
}

pub fn document() -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "#/components/schemas".into())
        .into_generator();
    let error = schema::<ErrorBody>(&mut generator);
    let error_response =
        |what: &str| json!({ "description": what, "content": { "application/json": { "schema": error.clone() } } });
    let mut paths = Map::new();
    for r in ROUTES.iter().filter(|r| !r.is_page()) {
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        let (security, access) = match r.access {
            Access::Public => (json!([]), "public".to_owned()),
            Access::Device => (json!([{ "deviceToken": [] }]), "device token".to_owned()),
            Access::Any => {
                (json!([{ "deviceToken": [] }, { "apiToken": [] }]), "device token or any API token".to_owned())
            }
            // OpenAPI 3.1: an http scheme's requirement may list the roles it needs.
            Access::Role(role) => (
                json!([{ "apiToken": [role.as_str()] }]),
                format!("API token with role {} (or a higher one)", role.as_str()),
            ),
            Access::Page(_) => unreachable!("pages are left out of the document"),
        };
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": param_schema(r.path, name) }))
            .collect();
        let mut success = json!({ "description": "success" });
        if let Some(c) = content(r.response, &mut generator) {
            success["content"] = c;
        }
        let mut op = json!({
            "operationId": operation_id(r.method, r.path),
            "summary": r.summary,
            "description": format!("Access: {access}."),
            "security": security,
            "parameters": params,
            "responses": {
                "2XX": success,
                "4XX": error_response("the request was refused: what was wrong, and what to do"),
                "5XX": error_response("the server failed (details are in its log)"),
            }
        });
        if let Some(c) = content(r.request, &mut generator) {
            op["requestBody"] = json!({ "required": true, "content": c });
        }
        entry[r.method.to_lowercase()] = op;
    }
    let schemas: Map<String, Value> = generator.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Updraft",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Firmware delivery: releases, channels, rollouts, devices. Conventions: docs/api.md.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiToken": { "type": "http", "scheme": "bearer",
                              "description": "An API token (upa_...) with a role: viewer, releaser, operator or admin." },
                "deviceToken": { "type": "http", "scheme": "bearer",
                                 "description": "A device's own token (upd_...), from enrollment." },
            },
            "schemas": schemas,
        }
    })
}

/// What a path parameter may be: the same rules as the handlers apply.
fn param_schema(path: &str, name: &str) -> Value {
    match name {
        "sha256" => json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" }),
        "file" => json!({ "type": "string", "enum": ["manifest", "signatures", "provenance", "sbom"] }),
        "command" => {
            let names: Vec<&str> = crate::journal::COMMANDS.iter().map(|(name, _)| *name).collect();
            json!({ "type": "string", "enum": names })
        }
        "id" if path.starts_with("/api/v1/tokens/") => json!({ "type": "string", "pattern": "^[0-9]{1,18}$" }),
        "id" if path.starts_with("/api/v1/releases/") => {
            json!({ "type": "string", "pattern": updraft_types::RELEASE_ID_PATTERN })
        }
        _ => json!({ "type": "string", "pattern": updraft_types::ID_PATTERN }),
    }
}

/// `GET /api/v1/devices/{id}` → `getApiV1DevicesId`: stable, unique names for client generators.
fn operation_id(method: &str, path: &str) -> String {
    let mut out = method.to_lowercase();
    for part in path.split(['/', '-', '.', '{', '}']).filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}
