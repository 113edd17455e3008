//! `GET /openapi.json`: the OpenAPI 3 description of the whole HTTP API,
//! hand-written in `docs/openapi.json` and compiled in.

use actix_web::HttpResponse;

/// The spec, as committed.
pub const SPEC: &str = include_str!("../../docs/openapi.json");

pub async fn spec() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(SPEC)
}

#[cfg(test)]
mod tests {
    use super::SPEC;
    use serde_json::Value;

    fn spec() -> Value {
        serde_json::from_str(SPEC).expect("docs/openapi.json is valid JSON")
    }

    /// `(path, method)` of every `.route(…)` in `http::configure`, read from
    /// its source so that a new route without a description fails here.
    fn routes() -> Vec<(String, String)> {
        let source = include_str!("mod.rs");
        let mut routes = Vec::new();
        let mut rest = source;
        while let Some(at) = rest.find(".route(\"") {
            rest = &rest[at + 8..];
            let path = &rest[..rest.find('"').unwrap()];
            let method_at = rest.find("web::").unwrap() + 5;
            let method = &rest[method_at..method_at + rest[method_at..].find('(').unwrap()];
            routes.push((path.to_owned(), method.to_owned()));
        }
        routes
    }

    /// Every route of the API is described, with the right method.
    #[test]
    fn every_route_is_in_the_spec() {
        let spec = spec();
        let routes = routes();
        assert!(routes.len() >= 11, "found only {routes:?}");
        for (path, method) in routes {
            assert!(
                spec["paths"][&path][&method].is_object(),
                "{method} {path} is missing from docs/openapi.json"
            );
        }
    }

    /// The Mercure hub's routes (mounted by `mercure::configure`) are described.
    #[test]
    fn mercure_routes_are_in_the_spec() {
        let spec = spec();
        let hub = &spec["paths"]["/.well-known/mercure"];
        assert!(hub["get"].is_object() && hub["head"].is_object() && hub["post"].is_object());
        let metadata = "/.well-known/oauth-protected-resource/.well-known/mercure";
        assert!(spec["paths"][metadata]["get"].is_object());
        // The Mercure adapter mounts these (`mercure::subscriptions`).
        let path = "/.well-known/mercure/subscriptions";
        for rest in [
            "",
            "/{topic}",
            "/{match_type}/{match}",
            "/{match_type}/{match}/{subscriber}",
        ] {
            assert!(
                spec["paths"][format!("{path}{rest}")]["get"].is_object(),
                "{rest}"
            );
        }
        // Every matcher parameter is documented (1.0, and 0.x `topic`).
        let names: Vec<&str> = hub["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for name in [
            "topic",
            "match",
            "match_exact",
            "match_urlpattern",
            "last_event_id",
        ] {
            assert!(names.contains(&name), "{name}");
        }
    }

    /// Every file of the debug console is described.
    #[test]
    fn every_static_file_is_in_the_spec() {
        let spec = spec();
        let public = concat!(env!("CARGO_MANIFEST_DIR"), "/public");
        assert!(spec["paths"]["/"]["get"].is_object());
        for entry in std::fs::read_dir(public).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                spec["paths"][format!("/{name}")]["get"].is_object(),
                "public/{name} is missing from docs/openapi.json"
            );
        }
    }

    /// The spec is OpenAPI 3, every operation answers something, and every
    /// `$ref` resolves.
    #[test]
    fn spec_is_well_formed() {
        let spec = spec();
        assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert!(
                    !op["responses"].as_object().unwrap().is_empty(),
                    "{method} {path} has no responses"
                );
                assert!(op["operationId"].is_string(), "{method} {path}");
            }
        }
        fn walk(node: &Value, spec: &Value) {
            match node {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        let pointer = target.strip_prefix('#').expect("local $ref");
                        assert!(spec.pointer(pointer).is_some(), "{target} does not resolve");
                    }
                    map.values().for_each(|v| walk(v, spec));
                }
                Value::Array(list) => list.iter().for_each(|v| walk(v, spec)),
                _ => {}
            }
        }
        walk(&spec, &spec);
    }
}
