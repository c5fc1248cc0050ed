//! openapi.yaml, the handlers and template.yaml agree: the same routes everywhere, and
//! the documented schemas have the fields the handlers really send.

use std::collections::BTreeSet;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use sluice_core::{Backfill, BackfillRequest, Connection, ConnectionView, Engine, Run, RunStatus, SourceView, Trigger};
use sluice_tests::*;

fn yaml(file: &str) -> Yaml {
    let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

type Routes = BTreeSet<(String, String)>;

fn handler_routes(routes: &[(&str, &str)]) -> Routes {
    routes.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect()
}

#[test]
fn every_route_is_documented_served_and_deployed() {
    let api = handler_routes(sluice_api::ROUTES);
    let backfill = handler_routes(sluice_backfill::ROUTES);

    let doc = yaml("openapi.yaml");
    let mut documented = Routes::new();
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        for (method, _) in item.as_mapping().unwrap() {
            let method = method.as_str().unwrap();
            if method != "parameters" {
                documented.insert((method.to_uppercase(), path.as_str().unwrap().to_string()));
            }
        }
    }
    let served: Routes = api.union(&backfill).cloned().collect();
    assert_eq!(documented, served, "openapi.yaml and the handlers' ROUTES differ");

    // template.yaml sends each route to the function that serves it.
    let template = yaml("template.yaml");
    for (function, expected) in [("ApiFunction", &api), ("BackfillFunction", &backfill)] {
        let events = template["Resources"][function]["Properties"]["Events"]
            .as_mapping()
            .unwrap();
        let deployed: Routes = events
            .values()
            .filter(|e| e["Type"] == "Api")
            .map(|e| {
                let p = &e["Properties"];
                (
                    p["Method"].as_str().unwrap().to_string(),
                    p["Path"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(&deployed, expected, "template.yaml's routes of {function}");
    }
}

/// A schema's properties and required fields, through `allOf` and `$ref`.
fn fields(doc: &Yaml, schema: &Yaml) -> (BTreeSet<String>, BTreeSet<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return fields(doc, &doc["components"]["schemas"][name]);
    }
    let (mut properties, mut required) = (BTreeSet::new(), BTreeSet::new());
    for part in schema["allOf"].as_sequence().into_iter().flatten() {
        let (p, r) = fields(doc, part);
        properties.extend(p);
        required.extend(r);
    }
    if let Some(map) = schema["properties"].as_mapping() {
        properties.extend(map.keys().map(|k| k.as_str().unwrap().to_string()));
    }
    if let Some(list) = schema["required"].as_sequence() {
        required.extend(list.iter().map(|k| k.as_str().unwrap().to_string()));
    }
    (properties, required)
}

fn assert_matches(doc: &Yaml, name: &str, sample: &Json) {
    let schema = &doc["components"]["schemas"][name];
    assert!(!schema.is_null(), "openapi.yaml has no schema {name}");
    let (properties, required) = fields(doc, schema);
    let keys: BTreeSet<String> = sample.as_object().unwrap().keys().cloned().collect();
    let undocumented: Vec<_> = keys.difference(&properties).collect();
    assert!(
        undocumented.is_empty(),
        "{name}: sent but not documented: {undocumented:?}"
    );
    let missing: Vec<_> = required.difference(&keys).collect();
    assert!(
        missing.is_empty(),
        "{name}: documented as required but not sent: {missing:?}"
    );
}

#[tokio::test]
async fn the_documented_schemas_have_the_fields_the_handlers_send() {
    let doc = yaml("openapi.yaml");
    let db = Database::new(Engine::Sqlite).await;
    db.create_sales(3).await;
    let src = source("docs", &db, SALES_QUERY);

    let view = SourceView {
        config: src.clone(),
        watermark: None,
        running: false,
        active_backfill: None,
        effective_frequency_minutes: 5,
        ssh_host_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB".into()),
        connection_id: Some("shop-db".into()),
    };
    assert_matches(&doc, "Source", &serde_json::to_value(&view).unwrap());
    assert_matches(&doc, "SourceConfig", &serde_json::to_value(&src).unwrap());
    let connection = ConnectionView {
        connection: Connection {
            id: "shop-db".into(),
            name: "Shop".into(),
            description: Some("The shop's replica".into()),
            engine: Engine::Postgres,
        },
        secret_id: "sluice/connections/shop-db".into(),
        sources: vec!["docs".into()],
    };
    assert_matches(&doc, "DatabaseConnection", &serde_json::to_value(&connection).unwrap());

    let now = chrono::Utc::now();
    let mut run = Run::start("r".into(), "docs", Trigger::Backfill, now).finish(RunStatus::Succeeded, None, now);
    run.backfill_id = Some("job".into());
    assert_matches(&doc, "Run", &serde_json::to_value(&run).unwrap());

    let request = BackfillRequest {
        start: Some("2025-01-01".into()),
        end: Some("2025-01-03".into()),
        chunk: None,
    };
    let mut job = Backfill::plan("j".into(), "docs", &request, now, true).unwrap();
    job.chunk_failed(0, "run", "boom", chrono::Utc::now(), chrono::Duration::seconds(5));
    let sent = serde_json::to_value(sluice_backfill::JobView::new(&job)).unwrap();
    assert_matches(&doc, "Backfill", &sent);
    assert_matches(&doc, "Chunk", &sent["chunks"][0]);
    assert_matches(&doc, "Progress", &sent["progress"]);

    let svc = service(store(StoreKind::Embedded).await, secrets_for(&src, &db));
    let preview = serde_json::to_value(svc.preview(&src, None).await.unwrap()).unwrap();
    assert_eq!(preview["row_count"], 3, "{preview}");
    assert_matches(&doc, "Preview", &preview);
}

#[test]
fn the_delivery_schemas_have_the_fields_the_api_sends() {
    let doc = yaml("openapi.yaml");
    let state = sluice_core::DeliveryState {
        record_key: "u1".into(),
        hash: "ab".into(),
        message_id: Some("m".into()),
        status: sluice_core::DeliveryStatus::Failed,
        attempts: 5,
        updated_at: chrono::Utc::now(),
        delivered_at: None,
        last_error: Some("HTTP 503".into()),
        next_attempt_at: Some(chrono::Utc::now()),
        parked: 1,
    };
    assert_matches(&doc, "Delivery", &serde_json::to_value(&state).unwrap());
    let report = sluice_core::DeliveryReport {
        delivered: 1,
        rejected: vec![("u2".into(), "too big".into())],
        undelivered: vec!["u3".into()],
        error: Some("HTTP 503".into()),
    };
    assert_matches(&doc, "DeliveryReport", &serde_json::to_value(&report).unwrap());
    let destination: sluice_core::Destination =
        serde_json::from_value(serde_json::json!({"kind": "customerio", "region": "eu", "secret_id": "s"})).unwrap();
    assert_matches(&doc, "Destination", &serde_json::to_value(&destination).unwrap());
    assert_eq!(destination.batch_url(), "https://cdp-eu.customer.io/v1/batch");
}

#[test]
fn the_functions_that_reach_the_database_can_run_in_a_vpc_behind_one_egress_address() {
    let template = yaml("template.yaml");
    let resources = &template["Resources"];
    for function in ["SyncFunction", "BackfillFunction", "ApiFunction"] {
        let vpc = serde_yaml::to_string(&resources[function]["Properties"]["VpcConfig"]).unwrap();
        assert!(
            vpc.contains("InVpc") && vpc.contains("VpcSubnetIds") && vpc.contains("VpcSecurityGroupIds"),
            "{function}: {vpc}"
        );
    }
    assert!(
        resources["DeliverFunction"]["Properties"].get("VpcConfig").is_none(),
        "the deliver function reaches the destination only, so it stays outside"
    );
    for (resource, condition) in [
        ("NatGatewayAddress", "CreateNatGateway"),
        ("NatGateway", "CreateNatGateway"),
        ("NatGatewayRoute", "CreateNatGateway"),
        ("DynamoDbEndpoint", "CreateEndpoints"),
        ("SecretsManagerEndpoint", "CreateEndpoints"),
        ("EventBridgeEndpoint", "CreateEndpoints"),
        ("SchedulerEndpoint", "CreateEndpoints"),
    ] {
        assert_eq!(resources[resource]["Condition"].as_str(), Some(condition), "{resource}");
    }
    let egress = &template["Outputs"]["EgressIp"];
    assert_eq!(egress["Condition"].as_str(), Some("CreateNatGateway"));
    assert!(
        serde_yaml::to_string(&egress["Value"])
            .unwrap()
            .contains("NatGatewayAddress.PublicIp")
    );
}

/// Every IAM statement of template.yaml: the resource it names it in, and the statement.
fn iam_statements(template: &Yaml) -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        let name = name.as_str().unwrap().to_string();
        let props = &resource["Properties"];
        let documents = props["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
            .chain(std::iter::once(&props["PolicyDocument"]));
        for document in documents {
            for statement in document["Statement"].as_sequence().into_iter().flatten() {
                out.push((name.clone(), statement.clone()));
            }
        }
    }
    out
}

/// A YAML scalar or a list of them, or an intrinsic function's text.
fn texts(v: &Yaml) -> Vec<String> {
    match v {
        Yaml::Sequence(items) => items.iter().flat_map(texts).collect(),
        Yaml::String(s) => vec![s.clone()],
        other => vec![serde_yaml::to_string(other).unwrap()],
    }
}

#[test]
fn iam_grants_no_wildcard_and_secrets_only_under_the_prefix() {
    let template = yaml("template.yaml");
    let statements = iam_statements(&template);
    assert!(statements.len() > 20, "the policies were found: {}", statements.len());
    for (resource, statement) in &statements {
        for action in texts(&statement["Action"]) {
            assert!(!action.contains('*'), "{resource}: the action {action} is a wildcard");
        }
        for arn in texts(&statement["Resource"]) {
            let arn = arn.trim();
            assert!(
                arn != "*" && !arn.ends_with(":*"),
                "{resource}: the resource {arn} is everything"
            );
            if arn.ends_with('*') {
                // Only a prefix of our own: the secrets under SecretsPrefix, the schedules of our group.
                assert!(
                    arn.ends_with(":secret:${SecretsPrefix}*") || arn.ends_with(":schedule/${SyncScheduleGroup}/*"),
                    "{resource}: {arn}"
                );
            }
            if arn.contains(":secretsmanager:") {
                // The deliver function reads write keys only, never a connection secret.
                let allowed = if resource == "DeliverFunction" {
                    ":secret:${SecretsPrefix}*/write-key-??????"
                } else {
                    ":secret:${SecretsPrefix}*"
                };
                assert!(arn.ends_with(allowed), "{resource}: {arn}");
            }
        }
    }
    // The sync function only reads secrets, and only those under the prefix.
    let sync: Vec<&Yaml> = statements
        .iter()
        .filter(|(r, _)| r == "SyncFunction")
        .map(|(_, s)| s)
        .collect();
    let secret_actions: Vec<String> = sync
        .iter()
        .flat_map(|s| texts(&s["Action"]))
        .filter(|a| a.starts_with("secretsmanager:"))
        .collect();
    assert_eq!(secret_actions, ["secretsmanager:GetSecretValue"]);
    // A prefix without its trailing slash would widen every one of those ARNs.
    let pattern = template["Parameters"]["SecretsPrefix"]["AllowedPattern"]
        .as_str()
        .unwrap();
    assert!(pattern.ends_with("/$"), "{pattern}");
}
