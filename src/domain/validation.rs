//! Validation of an `AmazonSellerConnection` spec: the domain rules shared by the offline
//! `validate` command and the admission webhook.
//!
//! The CRD schema enforces the same static rules on the API server; these functions exist so the
//! same answer is available offline and with messages that name the field and list the fix.

use std::fmt;
use std::time::Duration;

use super::marketplace;

/// The shortest allowed `spec.renewBefore`: below this a slow LWA answer could let a token lapse.
pub const MIN_RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// The longest allowed `spec.renewBefore`: access tokens live one hour, so more would refresh
/// almost continuously.
pub const MAX_RENEW_BEFORE: Duration = Duration::from_secs(50 * 60);
/// The suffix of the runtime Secret's name, appended to the connection's name.
pub const RUNTIME_SECRET_SUFFIX: &str = "-sp-api";
/// The suffix of the sealed token store's name (`spec.delivery` `Endpoint` or `Both`), appended
/// to the connection's name.
pub const TOKEN_STORE_SUFFIX: &str = "-sp-api-sealed";
/// The longest connection name whose runtime Secret and token store names still fit in 253
/// characters.
pub const MAX_CONNECTION_NAME_LEN: usize = 253 - TOKEN_STORE_SUFFIX.len();

/// A plain view of a connection's spec, so these rules never depend on Kubernetes types.
#[derive(Clone, Copy, Debug)]
pub struct SpecView<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `spec.teamId`.
    pub team_id: &'a str,
    /// `spec.sellerId`.
    pub seller_id: &'a str,
    /// `spec.marketplace`.
    pub marketplace: &'a str,
    /// `spec.credentialsSecretName`.
    pub credentials_secret_name: &'a str,
    /// `spec.gateways`.
    pub gateways: &'a [String],
    /// `spec.renewBefore`.
    pub renew_before: &'a str,
}

/// One rule violation, addressed by the path of the field that breaks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.gateways[1]`.
    pub field: String,
    /// What is wrong and, where there is one, how to fix it.
    pub message: String,
}

impl FieldError {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks every static rule of a spec and returns every violation, in field order.
pub fn validate_spec(spec: &SpecView<'_>) -> Vec<FieldError> {
    let mut errors = Vec::new();

    if spec.name.len() > MAX_CONNECTION_NAME_LEN {
        errors.push(FieldError::new(
            "metadata.name",
            format!(
                "must be at most {MAX_CONNECTION_NAME_LEN} characters so that the token store \
                 name \"<name>{TOKEN_STORE_SUFFIX}\" fits in 253"
            ),
        ));
    }
    if let Err(why) = check_dns_label("team id", spec.team_id) {
        errors.push(FieldError::new("spec.teamId", why));
    }
    if let Err(why) = check_seller_id(spec.seller_id) {
        errors.push(FieldError::new("spec.sellerId", why));
    }
    if let Err(err) = marketplace::lookup(spec.marketplace) {
        errors.push(FieldError::new("spec.marketplace", err.to_string()));
    }
    if let Err(why) = check_dns_subdomain(spec.credentials_secret_name) {
        errors.push(FieldError::new("spec.credentialsSecretName", why));
    }
    if spec.gateways.is_empty() {
        errors.push(FieldError::new(
            "spec.gateways",
            "must list at least one gateway id: only pods labelled with a listed gateway may use \
             the runtime Secret",
        ));
    }
    for (i, gateway) in spec.gateways.iter().enumerate() {
        if let Err(why) = check_dns_label("gateway id", gateway) {
            errors.push(FieldError::new(format!("spec.gateways[{i}]"), why));
        } else if spec.gateways[..i].contains(gateway) {
            errors.push(FieldError::new(
                format!("spec.gateways[{i}]"),
                format!("duplicate gateway id {gateway:?}"),
            ));
        }
    }
    if let Err(why) = parse_renew_before(spec.renew_before) {
        errors.push(FieldError::new("spec.renewBefore", why));
    }
    errors
}

/// Checks the rules that compare an update with the stored object: `teamId` and `sellerId`
/// never change, because the sealed credentials and the runtime Secret are bound to them.
pub fn validate_update(old: &SpecView<'_>, new: &SpecView<'_>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if old.team_id != new.team_id {
        errors.push(FieldError::new(
            "spec.teamId",
            "is immutable: create a new connection for another team",
        ));
    }
    if old.seller_id != new.seller_id {
        errors.push(FieldError::new(
            "spec.sellerId",
            "is immutable: create a new connection for another seller",
        ));
    }
    errors
}

/// Parses `spec.renewBefore`: one or more `<integer><unit>` parts with units `h`, `m` and `s` in
/// that order (a subset of Go's duration syntax, e.g. `20m`, `1h`, `10m30s`), between 5m and 50m.
pub fn parse_renew_before(value: &str) -> Result<Duration, String> {
    let duration = parse_duration(value).ok_or_else(|| {
        format!("invalid duration {value:?}: use whole hours, minutes and seconds such as \"20m\" or \"10m30s\"")
    })?;
    if !(MIN_RENEW_BEFORE..=MAX_RENEW_BEFORE).contains(&duration) {
        return Err(format!(
            "{value:?} is out of range: must be between 5m and 50m"
        ));
    }
    Ok(duration)
}

fn parse_duration(value: &str) -> Option<Duration> {
    const UNITS: [(char, u64); 3] = [('h', 3600), ('m', 60), ('s', 1)];
    let mut rest = value;
    let mut seconds: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 || digits > 6 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        let position = UNITS[next_unit..].iter().position(|(u, _)| *u == unit)?;
        let (_, scale) = UNITS[next_unit + position];
        seconds = seconds.checked_add(number.checked_mul(scale)?)?;
        next_unit += position + 1;
        rest = &rest[digits + 1..];
    }
    (next_unit > 0).then(|| Duration::from_secs(seconds))
}

/// An Amazon merchant token: upper-case letters and digits, 8 to 20 characters.
fn check_seller_id(value: &str) -> Result<(), String> {
    let ok = (8..=20).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid seller id {value:?}: must be 8 to 20 upper-case letters and digits (the \
             merchant token shown in Seller Central, e.g. \"A3FHEXAMPLEYWS\")"
        ))
    }
}

/// RFC 1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, 1-63 long.
/// `what` names the value in the message, e.g. "team id".
pub fn check_dns_label(what: &str, value: &str) -> Result<(), String> {
    if is_dns_label(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {value:?}: must be a DNS label (1-63 lower-case letters, digits or '-', \
             starting and ending with a letter or digit)"
        ))
    }
}

/// RFC 1123 subdomain: dot-separated DNS labels, at most 253 characters.
pub fn check_dns_subdomain(value: &str) -> Result<(), String> {
    if !value.is_empty() && value.len() <= 253 && value.split('.').all(is_dns_label) {
        Ok(())
    } else {
        Err(format!(
            "invalid Secret name {value:?}: must be a DNS subdomain (at most 253 lower-case \
             letters, digits, '-' or '.', each dot-separated part starting and ending with a \
             letter or digit)"
        ))
    }
}

fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateways(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn valid(gateways: &[String]) -> SpecView<'_> {
        SpecView {
            name: "acme-us",
            team_id: "acme",
            seller_id: "A3FHEXAMPLEYWS",
            marketplace: "US",
            credentials_secret_name: "acme-us-lwa",
            gateways,
            renew_before: "20m",
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn valid_spec_has_no_errors() {
        let g = gateways(&["gw-main"]);
        assert_eq!(validate_spec(&valid(&g)), vec![]);
    }

    #[test]
    fn unknown_marketplace_names_the_field_and_lists_valid_codes() {
        let g = gateways(&["gw-main"]);
        let errors = validate_spec(&SpecView {
            marketplace: "XX",
            ..valid(&g)
        });
        assert_eq!(fields(&errors), ["spec.marketplace"]);
        assert!(
            errors[0]
                .to_string()
                .starts_with("spec.marketplace: unknown marketplace \"XX\" (valid: AE, AU,")
        );
    }

    #[test]
    fn gb_is_accepted_as_a_marketplace() {
        let g = gateways(&["gw-main"]);
        assert_eq!(
            validate_spec(&SpecView {
                marketplace: "GB",
                ..valid(&g)
            }),
            vec![]
        );
    }

    #[test]
    fn seller_id_must_be_upper_case_alphanumeric_8_to_20() {
        let g = gateways(&["gw-main"]);
        for bad in [
            "a3fhexampleyws",
            "A3FH",
            "A3FHEXAMPLEYWS-1",
            "A3FHEXAMPLEYWSA3FHEXA",
            "",
        ] {
            let errors = validate_spec(&SpecView {
                seller_id: bad,
                ..valid(&g)
            });
            assert_eq!(fields(&errors), ["spec.sellerId"], "{bad}");
        }
        for good in ["A3FHEXAM", "A3FHEXAMPLEYWSA3FHEX"] {
            assert_eq!(
                validate_spec(&SpecView {
                    seller_id: good,
                    ..valid(&g)
                }),
                vec![]
            );
        }
    }

    #[test]
    fn team_id_must_be_a_dns_label() {
        let g = gateways(&["gw-main"]);
        for bad in ["Acme", "acme_team", "-acme", "acme-", "", &"a".repeat(64)] {
            let errors = validate_spec(&SpecView {
                team_id: bad,
                ..valid(&g)
            });
            assert_eq!(fields(&errors), ["spec.teamId"], "{bad}");
        }
    }

    #[test]
    fn empty_gateways_are_refused() {
        let errors = validate_spec(&valid(&[]));
        assert_eq!(fields(&errors), ["spec.gateways"]);
    }

    #[test]
    fn gateway_ids_must_be_unique_dns_labels() {
        let g = gateways(&["gw-main", "GW", "gw-main"]);
        let errors = validate_spec(&valid(&g));
        assert_eq!(fields(&errors), ["spec.gateways[1]", "spec.gateways[2]"]);
        assert!(errors[1].message.contains("duplicate"));
    }

    #[test]
    fn credentials_secret_name_must_be_a_dns_subdomain() {
        let g = gateways(&["gw-main"]);
        assert_eq!(
            validate_spec(&SpecView {
                credentials_secret_name: "acme.us-lwa",
                ..valid(&g)
            }),
            vec![]
        );
        for bad in ["Acme", "acme..lwa", "acme_lwa", ""] {
            let errors = validate_spec(&SpecView {
                credentials_secret_name: bad,
                ..valid(&g)
            });
            assert_eq!(fields(&errors), ["spec.credentialsSecretName"], "{bad}");
        }
    }

    #[test]
    fn renew_before_is_bounded_between_5_and_50_minutes() {
        assert_eq!(parse_renew_before("20m"), Ok(Duration::from_secs(1200)));
        assert_eq!(parse_renew_before("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_renew_before("50m"), Ok(Duration::from_secs(3000)));
        assert_eq!(parse_renew_before("10m30s"), Ok(Duration::from_secs(630)));
        assert_eq!(parse_renew_before("600s"), Ok(Duration::from_secs(600)));
        assert!(
            parse_renew_before("4m59s")
                .unwrap_err()
                .contains("between 5m and 50m")
        );
        assert!(
            parse_renew_before("1h")
                .unwrap_err()
                .contains("between 5m and 50m")
        );
        for bad in [
            "", "20", "m", "20 m", "1.5m", "30s10m", "20min", "-20m", "20m20m",
        ] {
            assert!(
                parse_renew_before(bad)
                    .unwrap_err()
                    .contains("invalid duration"),
                "{bad}"
            );
        }
    }

    #[test]
    fn connection_name_leaves_room_for_the_runtime_secret_suffix() {
        let g = gateways(&["gw-main"]);
        let long = "a".repeat(MAX_CONNECTION_NAME_LEN + 1);
        let errors = validate_spec(&SpecView {
            name: &long,
            ..valid(&g)
        });
        assert_eq!(fields(&errors), ["metadata.name"]);
    }

    #[test]
    fn team_and_seller_are_immutable() {
        let g = gateways(&["gw-main"]);
        let old = valid(&g);
        let new = SpecView {
            team_id: "other",
            seller_id: "B3FHEXAMPLEYWS",
            marketplace: "DE",
            ..old
        };
        assert_eq!(
            fields(&validate_update(&old, &new)),
            ["spec.teamId", "spec.sellerId"]
        );
        assert_eq!(validate_update(&old, &old), vec![]);
    }
}
