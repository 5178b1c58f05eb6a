//! The fast reader reads what the API server sends, and nothing the general reader would
//! read differently or refuse.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// Reads `body` both ways. Returns whether the fast reader read it; panics when it read a body
/// the general reader refuses or reads differently.
fn same(body: &[u8]) -> bool {
    let Some((request, objects)) = fast(body) else {
        return false;
    };
    let text = String::from_utf8_lossy(body);
    let (general_request, general_objects) = match general(body) {
        Ok(read) => read,
        Err(refused) => {
            panic!("the general reader refuses ({refused:?}) what the fast one read: {text}")
        }
    };
    assert_eq!(request, general_request, "{text}");
    let typing = Typing::of(request.kind).expect("the fast reader reads only typed kinds");
    // Typed objects compare through their serialized form: the connection type has no
    // `PartialEq`, and serializing is faithful for all three.
    let json = |o: &dyn erased_json::ToValue| o.to_value();
    let typed = |objects: Objects| -> Result<(Value, Value), &'static str> {
        Ok(match typing {
            Typing::Pod => {
                let (object, old) = objects.pods()?;
                (json(&object), json(&old))
            }
            Typing::Secret => {
                let (object, old) = objects.secrets()?;
                (json(&object), json(&old))
            }
            Typing::Connection => {
                let (object, old) = objects.connections()?;
                (json(&object), json(&old))
            }
        })
    };
    let fast_objects = typed(objects).unwrap_or_else(|e| panic!("fast reader gave {e}: {text}"));
    assert_eq!(Ok(fast_objects), typed(general_objects), "{text}");
    // And the one entry point answers as the general reader does.
    assert!(parse(body).is_ok());
    true
}

mod erased_json {
    pub trait ToValue {
        fn to_value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> ToValue for T {
        fn to_value(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("typed objects serialize")
        }
    }
}

const NS: &str = "team-acme";

fn review(
    operation: &str,
    (group, version, resource, kind): (&str, &str, &str, &str),
    object: Value,
    old: Value,
) -> Value {
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": object["metadata"]["name"].as_str().or(old["metadata"]["name"].as_str()).unwrap_or(""),
            "namespace": NS,
            "operation": operation,
            "userInfo": {"username": "alice@example.com", "uid": "1",
                         "groups": ["openteam:team:acme", "system:authenticated"],
                         "extra": {"scopes": ["a", "b"]}},
            "object": object,
            "oldObject": old,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

const PODS: (&str, &str, &str, &str) = ("", "v1", "pods", "Pod");
const SECRETS: (&str, &str, &str, &str) = ("", "v1", "secrets", "Secret");
const CONNECTIONS: (&str, &str, &str, &str) = (
    "connectors.openteam.io",
    "v1alpha1",
    "amazonsellerconnections",
    "AmazonSellerConnection",
);

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": "u-1",
                     "creationTimestamp": "2026-05-16T10:00:00Z",
                     "labels": {"app": "gateway", "connectors.openteam.io/gateway": "gw-main"},
                     "annotations": {"note": "a \"quoted\" value\n"},
                     "managedFields": [{"manager": "kubectl", "operation": "Update",
                                        "apiVersion": "v1", "time": "2026-05-16T10:00:00Z",
                                        "fieldsType": "FieldsV1",
                                        "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}}]},
        "spec": {
            "volumes": [
                {"name": "token", "secret": {"secretName": "acme-us-sp-api"}},
                {"name": "proj", "projected": {"sources": [{"secret": {"name": "other"}}]}},
                {"name": "csi", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "x"}}}
            ],
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [{
                "name": "main", "image": "registry.example/gateway:1",
                "env": [{"name": "A", "value": "b"},
                        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "s2"}}],
                "volumeMounts": [{"name": "token", "mountPath": "/var/run/sp-api"},
                                 {"name": "proj", "mountPath": "/p", "subPath": "x"}],
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                "ports": [{"containerPort": 8080, "protocol": "TCP"}]
            }],
            "initContainers": [{"name": "init", "image": "busybox"}],
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 30,
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": 300}],
            "someFieldFromANewerKubernetes": {"nested": [1, 2.5, "x", null, true]}
        },
        "status": {"phase": "Pending"}
    })
}

fn secret(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"connectors.openteam.io/secret-role": "lwa-credentials"}},
        "data": {"clientId": "YW16bjEuYXBwbGljYXRpb24tb2EyLWNsaWVudC5hYmM="},
        "stringData": {"clientSecret": "amzn1.oa2-cs.v1.abc", "refreshToken": "Atzr|abc"},
        "type": "Opaque"
    })
}

fn connection(marketplace: &str) -> Value {
    json!({
        "apiVersion": "connectors.openteam.io/v1alpha1", "kind": "AmazonSellerConnection",
        "metadata": {"name": "acme-us", "namespace": NS, "generation": 3},
        "spec": {"teamId": "acme", "sellerId": "A3FHEXAMPLEYWS", "marketplace": marketplace,
                 "credentialsSecretName": "acme-us-lwa", "gateways": ["gw-main"]},
        "status": {"conditions": []}
    })
}

fn fixtures() -> Vec<Value> {
    let mut ephemeral = review("UPDATE", PODS, pod("gw"), pod("gw"));
    ephemeral["request"]["subResource"] = "ephemeralcontainers".into();
    ephemeral["request"]["requestSubResource"] = "ephemeralcontainers".into();
    vec![
        review("CREATE", PODS, pod("gw"), Value::Null),
        review("UPDATE", PODS, pod("gw"), pod("gw")),
        ephemeral,
        review("CREATE", SECRETS, secret("acme-us-lwa"), Value::Null),
        review(
            "UPDATE",
            SECRETS,
            secret("acme-us-lwa"),
            secret("acme-us-lwa"),
        ),
        review("DELETE", SECRETS, Value::Null, secret("acme-us-lwa")),
        review("CREATE", CONNECTIONS, connection("US"), Value::Null),
        review("UPDATE", CONNECTIONS, connection("DE"), connection("US")),
    ]
}

/// The order in which the API server (Go's encoding/json) writes a request's fields.
const GO_ORDER: [&str; 15] = [
    "uid",
    "kind",
    "resource",
    "subResource",
    "requestKind",
    "requestResource",
    "requestSubResource",
    "name",
    "namespace",
    "operation",
    "userInfo",
    "object",
    "oldObject",
    "dryRun",
    "options",
];

/// Writes `value` as JSON text. `go_order` writes the request's fields in the API server's
/// order instead of sorted; `extra` adds one more entry (possibly a duplicate key) to the
/// object at a path.
fn emit(
    value: &Value,
    path: &mut Vec<String>,
    extra: Option<(&[String], &str, &Value)>,
    go_order: bool,
    out: &mut String,
) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if go_order && path.as_slice() == ["request"] {
                entries.sort_by_key(|(k, _)| GO_ORDER.iter().position(|g| g == k));
            }
            out.push('{');
            let mut first = true;
            let mut entry = |out: &mut String, key: &str, value: &Value, path: &mut Vec<String>| {
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).unwrap());
                out.push(':');
                path.push(key.to_owned());
                emit(value, path, extra, go_order, out);
                path.pop();
            };
            for (key, value) in entries {
                entry(out, key, value, path);
            }
            if let Some((at, key, value)) = extra
                && at == path.as_slice()
            {
                entry(out, key, value, path);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                path.push(i.to_string());
                emit(item, path, extra, go_order, out);
                path.pop();
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn text(value: &Value, go_order: bool) -> Vec<u8> {
    let mut out = String::new();
    emit(value, &mut Vec::new(), None, go_order, &mut out);
    out.into_bytes()
}

#[test]
fn reviews_as_the_api_server_and_the_tests_send_them_are_read_fast() {
    for fixture in fixtures() {
        for go_order in [false, true] {
            let body = text(&fixture, go_order);
            assert!(same(&body), "{}", String::from_utf8_lossy(&body));
        }
    }
}

#[test]
fn sorted_and_go_ordered_bodies_are_the_same_request() {
    // serde_json writes keys sorted, so `object` comes before `resource`; the API server
    // writes `resource` first. Both must read the same.
    for fixture in fixtures() {
        let (sorted, go_ordered) = (text(&fixture, false), text(&fixture, true));
        assert_eq!(fast(&sorted).unwrap().0, fast(&go_ordered).unwrap().0);
    }
}

/// Bodies the general reader refuses or reads differently from a plain typed parse: the fast
/// reader must leave every one of them to it.
fn tricky() -> Vec<(&'static str, Vec<u8>)> {
    let base = &fixtures()[0];
    let body = |v: &Value| text(v, true);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        body(&v)
    };
    let raw = String::from_utf8(body(base)).unwrap();
    let mut deep = Value::Null;
    for _ in 0..200 {
        deep = Value::Array(vec![deep]);
    }
    vec![
        (
            "metadata null",
            with(&|v| v["request"]["object"]["metadata"] = Value::Null),
        ),
        (
            "metadata twice",
            raw.replacen(r#""metadata":{"#, r#""metadata":{},"metadata":{"#, 1)
                .into_bytes(),
        ),
        (
            "deep unknown field",
            with(&|v| v["request"]["object"]["spec"]["unknown"] = deep.clone()),
        ),
        (
            "deep unknown field in the request",
            with(&|v| v["request"]["unknown"] = deep.clone()),
        ),
        (
            "number out of range in an unknown field",
            raw.replacen(r#""spec":{"#, r#""spec":{"x":1e400,"#, 1)
                .into_bytes(),
        ),
        ("invalid UTF-8 in an unknown field", {
            let mut b = raw
                .replacen(r#""spec":{"#, r#""spec":{"x":"ab","#, 1)
                .into_bytes();
            let at = b.windows(4).position(|w| w == b"\"ab\"").unwrap();
            b[at + 1] = 0xff;
            b
        }),
        ("a JSON array", b"[1,2,3]".to_vec()),
        (
            "request as an array",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":[]}"#
                .to_vec(),
        ),
        (
            "with a response",
            with(&|v| v["response"] = json!({"uid": "x", "allowed": true})),
        ),
        (
            "v1beta1",
            with(&|v| v["apiVersion"] = "admission.k8s.io/v1beta1".into()),
        ),
        ("no uid", with(&|v| v["request"]["uid"] = "".into())),
        (
            "long uid",
            with(&|v| v["request"]["uid"] = "u".repeat(129).into()),
        ),
        ("trailing bytes", [body(base), b"x".to_vec()].concat()),
        (
            "request twice",
            raw.replacen(r#""request":{"#, r#""request":null,"request":{"#, 1)
                .into_bytes(),
        ),
        (
            "kind says pod, resource says secret",
            with(&|v| v["request"]["resource"]["resource"] = "secrets".into()),
        ),
        (
            "namespace review",
            with(&|v| {
                v["request"]["resource"] =
                    json!({"group": "", "version": "v1", "resource": "namespaces"});
                v["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Namespace"});
            }),
        ),
        (
            "invalid pod",
            with(&|v| v["request"]["object"]["spec"]["containers"] = "not a list".into()),
        ),
        (
            "pod claiming another kind",
            with(&|v| v["request"]["object"]["kind"] = "Secret".into()),
        ),
    ]
}

#[test]
fn bodies_the_general_reader_refuses_or_reads_otherwise_are_left_to_it() {
    for (what, body) in tricky() {
        assert!(!same(&body), "the fast reader read: {what}");
        match (parse(&body), general(&body)) {
            (Ok(_), Ok(_)) => {}
            (Err(a), Err(b)) => assert_eq!(a, b, "{what}"),
            _ => panic!("{what}: parse and the general reader disagree"),
        }
    }
}

#[test]
fn a_body_with_sorted_keys_typed_by_a_misleading_kind_is_left_to_the_general_reader() {
    // `kind` (sorted before `object`) says Secret, the resource says pods: the object was read
    // as a Secret, so the fast reader declines.
    let mut v = fixtures()[3].clone();
    v["request"]["resource"] = json!({"group": "", "version": "v1", "resource": "pods"});
    assert!(!same(&text(&v, false)));
}

// --- property: random changes never make the two readers disagree --------------------------

#[derive(Clone, Debug)]
enum Change {
    Replace(Value),
    Insert(String, Value),
    Remove,
    /// One more entry in the object at the path, written as text so keys can repeat.
    Extra(String, Value),
}

fn paths(value: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(path.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                path.push(k.clone());
                paths(v, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(i.to_string());
                paths(v, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'v>(value: &'v mut Value, path: &[String]) -> &'v mut Value {
    path.iter().fold(value, |v, seg| match v {
        Value::Array(items) => &mut items[seg.parse::<usize>().unwrap()],
        other => &mut other[seg.as_str()],
    })
}

fn changed(fixture: &Value, path: &[String], change: &Change, go_order: bool) -> Vec<u8> {
    let mut v = fixture.clone();
    match change {
        Change::Replace(new) => *at(&mut v, path) = new.clone(),
        Change::Insert(key, new) => {
            if let Value::Object(map) = at(&mut v, path) {
                map.insert(key.clone(), new.clone());
            }
        }
        Change::Remove => {
            if let Some((last, parent)) = path.split_last() {
                match at(&mut v, parent) {
                    Value::Object(map) => {
                        map.remove(last);
                    }
                    Value::Array(items) => {
                        items.remove(last.parse::<usize>().unwrap());
                    }
                    _ => {}
                }
            }
        }
        Change::Extra(key, new) => {
            let mut out = String::new();
            emit(
                &v,
                &mut Vec::new(),
                Some((path, key, new)),
                go_order,
                &mut out,
            );
            return out.into_bytes();
        }
    }
    text(&v, go_order)
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "metadata",
            "spec",
            "status",
            "data",
            "stringData",
            "type",
            "labels",
            "name",
            "namespace",
            "apiVersion",
            "kind",
            "volumes",
            "containers",
            "secret",
            "secretName",
            "uid",
            "resource",
            "subResource",
            "object",
            "oldObject",
            "request",
            "response",
            "userInfo",
            "groups",
            "username",
            "operation",
            "teamId",
            "gateways",
            "env",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z]{1,8}",
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9|./:-]{0,12}".prop_map(Value::String),
        Just(json!("v1")),
        Just(json!("Pod")),
        Just(json!("CREATE")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        arb_json().prop_map(Change::Replace),
        (key(), arb_json()).prop_map(|(k, v)| Change::Insert(k, v)),
        Just(Change::Remove),
        (key(), arb_json()).prop_map(|(k, v)| Change::Extra(k, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_changed_review_reads_the_same_or_is_left_to_the_general_reader(
        which in 0usize..8,
        place in any::<prop::sample::Index>(),
        change in change(),
        go_order in any::<bool>(),
    ) {
        let fixture = &fixtures()[which];
        let mut all = Vec::new();
        paths(fixture, &mut Vec::new(), &mut all);
        let path = place.get(&all);
        let body = changed(fixture, path, &change, go_order);
        same(&body);
        // Whoever reads it, the one entry point answers as the general reader would.
        if let Err(malformed) = parse(&body) {
            prop_assert_eq!(Err(malformed), general(&body).map(|_| ()));
        }
    }
}
