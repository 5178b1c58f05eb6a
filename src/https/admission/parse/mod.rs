//! Reading an `AdmissionReview` body into what a review needs.
//!
//! Two readers give the same answer for every body:
//!
//! - the fast reader deserializes the review of a pod, Secret or connection in one pass,
//!   straight into the typed object the rules read, borrowing strings from the body;
//! - the general reader parses the review as kube's `AdmissionReview<DynamicObject>` (a JSON
//!   value tree per object), types the object only when a rule needs it, and names what is
//!   malformed.
//!
//! The fast reader accepts only bodies the general one accepts with the same result (it reads
//! through [`strict`], refuses duplicate fields and anything unusual), and hands every other
//! body, malformed ones included, to the general reader. So the answers, malformed-input
//! phrases included, are the general reader's.

mod strict;

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::core::admission::{
    AdmissionRequest, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation as KubeOperation,
};
use kube::core::{DynamicObject, Resource};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::Kind;
use crate::api::{AmazonSellerConnection, GROUP};
use crate::domain::admission::Operation;
use strict::{Object, Strict};

/// The longest request uid echoed back (the API server's are 36 characters).
const MAX_UID_LEN: usize = 128;

/// What a review needs from the request besides its objects. Strings borrow from the body
/// where they can.
#[derive(Debug, PartialEq)]
pub(super) struct Request<'a> {
    /// The request uid, echoed in the answer.
    pub uid: Cow<'a, str>,
    /// The resource the review is about.
    pub kind: Kind,
    /// The admission operation.
    pub operation: Operation,
    /// `request.name`.
    pub name: Cow<'a, str>,
    /// `request.namespace`.
    pub namespace: Option<Cow<'a, str>>,
    /// Who asks.
    pub user_info: UserInfo,
}

/// The request's object and old object: still untyped from the general reader, typed by the
/// request's kind from the fast one.
#[derive(Debug)]
pub(super) enum Objects {
    /// From the general reader; typed when a rule asks.
    Dynamic {
        object: Option<Box<DynamicObject>>,
        old: Option<Box<DynamicObject>>,
    },
    /// A pod (or its `ephemeralcontainers`): the old pod only tells whether the spec changed.
    Pod {
        object: Option<Box<Pod>>,
        old: Option<Box<Pod>>,
    },
    Secret {
        object: Option<Box<Secret>>,
        old: Option<Box<Secret>>,
    },
    Connection {
        object: Option<Box<AmazonSellerConnection>>,
        old: Option<Box<AmazonSellerConnection>>,
    },
}

/// Parses `object` as `K`; `Err` with a fixed phrase when it is not one.
fn typed<K: Resource + serde::de::DeserializeOwned>(
    object: Option<Box<DynamicObject>>,
    what: &'static str,
) -> Result<Option<K>, &'static str> {
    object
        .map(|o| o.try_parse::<K>())
        .transpose()
        .map_err(|_| what)
}

impl Objects {
    /// The connection and the old connection. The fixed phrases name the one that is not an
    /// `AmazonSellerConnection`. The fast reader types objects by the same kind the rules
    /// branch on, so another variant does not occur; it is refused rather than guessed at.
    pub fn connections(
        self,
    ) -> Result<
        (
            Option<AmazonSellerConnection>,
            Option<AmazonSellerConnection>,
        ),
        &'static str,
    > {
        const OBJECT: &str = "the object is not a valid AmazonSellerConnection";
        match self {
            Objects::Dynamic { object, old } => Ok((
                typed(object, OBJECT)?,
                typed(old, "the old object is not a valid AmazonSellerConnection")?,
            )),
            Objects::Connection { object, old } => Ok((object.map(|o| *o), old.map(|o| *o))),
            _ => Err(OBJECT),
        }
    }

    /// The Secret and the old Secret (see [`Objects::connections`]).
    pub fn secrets(self) -> Result<(Option<Secret>, Option<Secret>), &'static str> {
        const OBJECT: &str = "the object is not a valid Secret";
        match self {
            Objects::Dynamic { object, old } => Ok((
                typed(object, OBJECT)?,
                typed(old, "the old object is not a valid Secret")?,
            )),
            Objects::Secret { object, old } => Ok((object.map(|o| *o), old.map(|o| *o))),
            _ => Err(OBJECT),
        }
    }

    /// The pod and the old pod (see [`Objects::connections`]).
    pub fn pods(self) -> Result<(Option<Pod>, Option<Pod>), &'static str> {
        const OBJECT: &str = "the object is not a valid Pod";
        match self {
            Objects::Dynamic { object, old } => Ok((
                typed(object, OBJECT)?,
                typed(old, "the old object is not a valid Pod")?,
            )),
            Objects::Pod { object, old } => Ok((object.map(|o| *o), old.map(|o| *o))),
            _ => Err(OBJECT),
        }
    }

    /// The untyped objects, for rules that read only a label or a field; `None` from the
    /// fast reader, which does not read these kinds.
    pub fn dynamic(&self) -> (Option<&DynamicObject>, Option<&DynamicObject>) {
        match self {
            Objects::Dynamic { object, old } => (object.as_deref(), old.as_deref()),
            _ => (None, None),
        }
    }
}

/// Why a review could not be read; the message is a fixed phrase.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed {
    pub why: &'static str,
    pub uid: Option<String>,
}

/// Reads a review body.
pub(super) fn parse(body: &[u8]) -> Result<(Request<'_>, Objects), Malformed> {
    match fast(body) {
        Some(read) => Ok(read),
        None => general(body),
    }
}

pub(super) fn operation(op: &KubeOperation) -> Operation {
    match op {
        KubeOperation::Create => Operation::Create,
        KubeOperation::Update => Operation::Update,
        KubeOperation::Delete => Operation::Delete,
        KubeOperation::Connect => Operation::Connect,
    }
}

/// The general reader: any review kube's types accept; the fixed phrase of what is wrong
/// otherwise.
fn general(body: &[u8]) -> Result<(Request<'static>, Objects), Malformed> {
    let request = match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) {
        Ok(review) => {
            let uid = review.request.as_ref().map(|r| r.uid.clone());
            let bad = |why| Malformed {
                why,
                uid: uid.clone().filter(|u| u.len() <= MAX_UID_LEN),
            };
            if review.types.api_version != META_API_VERSION_V1 || review.types.kind != META_KIND {
                return Err(bad("only admission.k8s.io/v1 AdmissionReview is supported"));
            }
            let request: AdmissionRequest<DynamicObject> = review
                .try_into()
                .map_err(|_| bad("the review has no request"))?;
            if request.uid.is_empty() || request.uid.len() > MAX_UID_LEN {
                return Err(bad("the request has no usable uid"));
            }
            request
        }
        Err(_) => {
            // Recover the uid if the body is JSON at all, so the API server can match the answer.
            let uid = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("request")?.get("uid")?.as_str().map(str::to_owned))
                .filter(|u| u.len() <= MAX_UID_LEN);
            let why = if uid.is_some() {
                "not an AdmissionReview"
            } else {
                "not a JSON AdmissionReview"
            };
            return Err(Malformed { why, uid });
        }
    };
    let resource = &request.resource;
    let kind = Kind::of(
        &resource.group,
        &resource.resource,
        request.sub_resource.as_deref(),
    );
    Ok((
        Request {
            uid: Cow::Owned(request.uid),
            kind,
            operation: operation(&request.operation),
            name: Cow::Owned(request.name),
            namespace: request.namespace.map(Cow::Owned),
            user_info: request.user_info,
        },
        Objects::Dynamic {
            object: request.object.map(Box::new),
            old: request.old_object.map(Box::new),
        },
    ))
}

/// The fast reader: `None` for anything it does not read exactly as [`general`] would.
fn fast(body: &[u8]) -> Option<(Request<'_>, Objects)> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let review = Review::deserialize(Strict(&mut deserializer)).ok()?;
    deserializer.end().ok()?;
    review.0
}

/// A string from the body: borrowed unless it holds escapes.
struct Str<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// kube's `GroupVersionKind`, borrowed: the same fields, read the same way.
#[derive(Deserialize)]
#[allow(dead_code)] // read to be checked as kube checks them, not used
struct GroupVersionKind<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

/// kube's `GroupVersionResource`, borrowed.
#[derive(Deserialize)]
struct GroupVersionResource<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    #[allow(dead_code)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    resource: Cow<'a, str>,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    api_version: Cow<'a, str>,
}

/// A review as the fast reader reads it: `None` inside when it declines.
struct Review<'a>(Option<(Request<'a>, Objects)>);

/// The fast reader declines: the general reader will answer.
fn decline<E: de::Error>() -> E {
    E::custom("left to the general reader")
}

/// Sets `slot` once; a second occurrence of a field declines.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(decline());
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> Deserialize<'de> for Review<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ReviewVisitor)
    }
}

struct ReviewVisitor;

impl<'de> Visitor<'de> for ReviewVisitor {
    type Value = Review<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AdmissionReview")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Review<'de>, A::Error> {
        let mut api_version = None;
        let mut kind = None;
        let mut request = None;
        let mut response = None;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match &*key.0 {
                "apiVersion" => once(&mut api_version, map.next_value::<Str<'de>>()?)?,
                "kind" => once(&mut kind, map.next_value::<Str<'de>>()?)?,
                "request" => once(&mut request, map.next_value::<Option<RequestRead<'de>>>()?)?,
                "response" => once(&mut response, map.next_value::<Option<IgnoredAny>>()?)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (Some(api_version), Some(kind), Some(Some(request))) = (api_version, kind, request)
        else {
            return Err(decline());
        };
        // A review that also carries a response, or another version: the general reader
        // checks or refuses it.
        if api_version.0 != META_API_VERSION_V1
            || kind.0 != META_KIND
            || response.flatten().is_some()
        {
            return Err(decline());
        }
        Ok(Review(Some((request.request, request.objects))))
    }
}

/// A request read by the fast reader, objects typed.
struct RequestRead<'a> {
    request: Request<'a>,
    objects: Objects,
}

impl<'de> Deserialize<'de> for RequestRead<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

/// The type the rules read a request's objects as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Typing {
    Pod,
    Secret,
    Connection,
}

impl Typing {
    /// The typing of `kind`'s objects; `None` for kinds the fast reader leaves alone.
    fn of(kind: Kind) -> Option<Self> {
        match kind {
            Kind::Pod | Kind::PodEphemeralContainers => Some(Typing::Pod),
            Kind::Secret => Some(Typing::Secret),
            Kind::Connection => Some(Typing::Connection),
            _ => None,
        }
    }

    /// The typing `request.kind` suggests, for objects that come before `resource` (bodies
    /// with sorted keys). The kind that counts is the resource's: checked at the end.
    fn suggested(kind: &GroupVersionKind<'_>) -> Option<Self> {
        match (&*kind.group, &*kind.kind) {
            ("", "Pod") => Some(Typing::Pod),
            ("", "Secret") => Some(Typing::Secret),
            (GROUP, "AmazonSellerConnection") => Some(Typing::Connection),
            _ => None,
        }
    }
}

/// What `object` or `oldObject` was read as.
enum Read {
    Pod(Option<Box<Pod>>),
    Secret(Option<Box<Secret>>),
    Connection(Option<Box<AmazonSellerConnection>>),
}

/// Reads `object` or `oldObject` as the type `typing` says.
struct ObjectFor {
    typing: Typing,
}

impl<'de> DeserializeSeed<'de> for ObjectFor {
    type Value = Read;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Read, D::Error> {
        Ok(match self.typing {
            Typing::Pod => Read::Pod(Object::seed().deserialize(deserializer)?),
            Typing::Secret => Read::Secret(Object::seed().deserialize(deserializer)?),
            Typing::Connection => Read::Connection(Object::seed().deserialize(deserializer)?),
        })
    }
}

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = RequestRead<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AdmissionRequest")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestRead<'de>, A::Error> {
        let mut uid = None;
        let mut kind = None;
        let mut resource: Option<GroupVersionResource<'de>> = None;
        let mut sub_resource: Option<Option<Str<'de>>> = None;
        let mut request_kind = None;
        let mut request_resource = None;
        let mut request_sub_resource = None;
        let mut name = None;
        let mut namespace: Option<Option<Str<'de>>> = None;
        let mut operation = None;
        let mut user_info = None;
        let mut dry_run = None;
        let mut options = None;
        // The typing each object was read with: the resource's when it came first (the API
        // server sends `resource` and `subResource` before the objects), else the one
        // `kind` suggests. The resource's kind is checked against it at the end.
        let mut object: Option<(Typing, Read)> = None;
        let mut old_object: Option<(Typing, Read)> = None;
        let kind_of = |resource: &Option<GroupVersionResource<'de>>,
                       sub_resource: &Option<Option<Str<'de>>>| {
            resource.as_ref().map(|r| {
                let sub = sub_resource.as_ref().and_then(|s| s.as_ref());
                Kind::of(&r.group, &r.resource, sub.map(|s| &*s.0))
            })
        };
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match &*key.0 {
                "uid" => once(&mut uid, map.next_value::<Str<'de>>()?)?,
                "kind" => once(&mut kind, map.next_value::<GroupVersionKind<'de>>()?)?,
                "resource" => once(&mut resource, map.next_value()?)?,
                "subResource" => once(&mut sub_resource, map.next_value()?)?,
                "requestKind" => once(
                    &mut request_kind,
                    map.next_value::<Option<GroupVersionKind<'de>>>()?,
                )?,
                "requestResource" => once(
                    &mut request_resource,
                    map.next_value::<Option<GroupVersionResource<'de>>>()?,
                )?,
                "requestSubResource" => once(
                    &mut request_sub_resource,
                    map.next_value::<Option<Str<'de>>>()?,
                )?,
                "name" => once(&mut name, map.next_value::<Str<'de>>()?)?,
                "namespace" => once(&mut namespace, map.next_value()?)?,
                "operation" => once(&mut operation, map.next_value::<KubeOperation>()?)?,
                "userInfo" => once(&mut user_info, map.next_value::<UserInfo>()?)?,
                "object" | "oldObject" => {
                    let old = &*key.0 == "oldObject";
                    let typing = match kind_of(&resource, &sub_resource) {
                        Some(kind) => Typing::of(kind),
                        None => kind.as_ref().and_then(Typing::suggested),
                    };
                    let Some(typing) = typing else {
                        return Err(decline());
                    };
                    let read = map.next_value_seed(ObjectFor { typing })?;
                    once(
                        if old { &mut old_object } else { &mut object },
                        (typing, read),
                    )?;
                }
                "dryRun" => once(&mut dry_run, map.next_value::<bool>()?)?,
                "options" => once(&mut options, map.next_value::<Option<IgnoredAny>>()?)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (Some(uid), Some(_), Some(operation), Some(user_info), Some(kind)) = (
            uid,
            kind,
            operation,
            user_info,
            kind_of(&resource, &sub_resource),
        ) else {
            return Err(decline());
        };
        // The general reader answers a uid it will not echo.
        if uid.0.is_empty() || uid.0.len() > MAX_UID_LEN {
            return Err(decline());
        }
        let Some(typing) = Typing::of(kind) else {
            return Err(decline());
        };
        let read_as =
            |read: &Option<(Typing, Read)>| read.as_ref().is_none_or(|(t, _)| *t == typing);
        if !read_as(&object) || !read_as(&old_object) {
            return Err(decline());
        }
        let object = object.map(|(_, read)| read);
        let old_object = old_object.map(|(_, read)| read);
        let objects = match typing {
            Typing::Pod => {
                let pod = |read| match read {
                    Some(Read::Pod(pod)) => Ok(pod),
                    None => Ok(None),
                    _ => Err(decline()),
                };
                Objects::Pod {
                    object: pod(object)?,
                    old: pod(old_object)?,
                }
            }
            Typing::Secret => {
                let secret = |read| match read {
                    Some(Read::Secret(secret)) => Ok(secret),
                    None => Ok(None),
                    _ => Err(decline()),
                };
                Objects::Secret {
                    object: secret(object)?,
                    old: secret(old_object)?,
                }
            }
            Typing::Connection => {
                let connection = |read| match read {
                    Some(Read::Connection(connection)) => Ok(connection),
                    None => Ok(None),
                    _ => Err(decline()),
                };
                Objects::Connection {
                    object: connection(object)?,
                    old: connection(old_object)?,
                }
            }
        };
        Ok(RequestRead {
            request: Request {
                uid: uid.0,
                kind,
                operation: self::operation(&operation),
                name: name.map_or(Cow::Borrowed(""), |n| n.0),
                namespace: namespace.flatten().map(|n| n.0),
                user_info,
            },
            objects,
        })
    }
}

#[cfg(test)]
mod tests;
