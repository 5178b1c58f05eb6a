//! The vetted marketplace table: the single source of truth for marketplace ids, regions and
//! SP-API endpoints.
//!
//! Users choose a marketplace by its country code; the marketplace id, region and endpoint are
//! always derived from this table and never accepted from users, so an id cannot be invented.
//! Source: the SP-API "Marketplace IDs" and "SP-API endpoints" reference pages.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An SP-API selling region. Each region has one production and one sandbox endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Region {
    /// North America.
    #[serde(rename = "NA")]
    NorthAmerica,
    /// Europe, the Middle East, Africa and India.
    #[serde(rename = "EU")]
    Europe,
    /// Far East and Oceania.
    #[serde(rename = "FE")]
    FarEast,
}

impl Region {
    /// The short name Amazon uses for the region: `NA`, `EU` or `FE`.
    pub const fn code(self) -> &'static str {
        match self {
            Region::NorthAmerica => "NA",
            Region::Europe => "EU",
            Region::FarEast => "FE",
        }
    }

    /// The SP-API endpoint serving this region for the given environment.
    pub const fn endpoint(self, environment: Environment) -> &'static str {
        match (self, environment) {
            (Region::NorthAmerica, Environment::Production) => {
                "https://sellingpartnerapi-na.amazon.com"
            }
            (Region::Europe, Environment::Production) => "https://sellingpartnerapi-eu.amazon.com",
            (Region::FarEast, Environment::Production) => "https://sellingpartnerapi-fe.amazon.com",
            (Region::NorthAmerica, Environment::Sandbox) => {
                "https://sandbox.sellingpartnerapi-na.amazon.com"
            }
            (Region::Europe, Environment::Sandbox) => {
                "https://sandbox.sellingpartnerapi-eu.amazon.com"
            }
            (Region::FarEast, Environment::Sandbox) => {
                "https://sandbox.sellingpartnerapi-fe.amazon.com"
            }
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Which SP-API deployment a connection talks to (`spec.environment`; the CRD field's own
/// type, which is why it derives the schema).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum Environment {
    /// Live seller data.
    #[default]
    Production,
    /// Amazon's static sandbox, for integration testing.
    Sandbox,
}

/// One row of the marketplace table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Marketplace {
    /// The country code users write in `spec.marketplace` (canonical form, e.g. `UK`).
    pub code: &'static str,
    /// The marketplace's country or name.
    pub name: &'static str,
    /// Amazon's obfuscated marketplace id, e.g. `ATVPDKIKX0DER`.
    pub marketplace_id: &'static str,
    /// The SP-API region serving this marketplace.
    pub region: Region,
}

impl Marketplace {
    /// The SP-API endpoint for this marketplace in the given environment.
    pub const fn endpoint(&self, environment: Environment) -> &'static str {
        self.region.endpoint(environment)
    }
}

const fn row(
    code: &'static str,
    name: &'static str,
    marketplace_id: &'static str,
    region: Region,
) -> Marketplace {
    Marketplace {
        code,
        name,
        marketplace_id,
        region,
    }
}

use Region::{Europe as EU, FarEast as FE, NorthAmerica as NA};

/// Every marketplace the operator accepts, in the order of Amazon's reference table.
pub const MARKETPLACES: &[Marketplace] = &[
    row("CA", "Canada", "A2EUQ1WTGCTBG2", NA),
    row("US", "United States of America", "ATVPDKIKX0DER", NA),
    row("MX", "Mexico", "A1AM78C64UM0Y8", NA),
    row("BR", "Brazil", "A2Q3Y263D00KWC", NA),
    row("IE", "Ireland", "A28R8C7NBKEWEA", EU),
    row("ES", "Spain", "A1RKKUPIHCS9HS", EU),
    row("UK", "United Kingdom", "A1F83G8C2ARO7P", EU),
    row("FR", "France", "A13V1IB3VIYZZH", EU),
    row("BE", "Belgium", "AMEN7PMS3EDWL", EU),
    row("NL", "Netherlands", "A1805IZSGTT6HS", EU),
    row("DE", "Germany", "A1PA6795UKMFR9", EU),
    row("IT", "Italy", "APJ6JRA9NG5V4", EU),
    row("SE", "Sweden", "A2NODRKZP88ZB9", EU),
    row("ZA", "South Africa", "AE08WJ6YKNBMC", EU),
    row("PL", "Poland", "A1C3SOZRARQ6R3", EU),
    row("EG", "Egypt", "ARBP9OOSHTCHU", EU),
    row("TR", "Turkey", "A33AVAJ2PDY3EV", EU),
    row("SA", "Saudi Arabia", "A17E79C6D8DWNP", EU),
    row("AE", "United Arab Emirates", "A2VIGQ35RCS4UG", EU),
    row("IN", "India", "A21TJRUUN4KGV", EU),
    row("SG", "Singapore", "A19VAU5U5O7RUS", FE),
    row("AU", "Australia", "A39IBJ37TRP1C6", FE),
    row("JP", "Japan", "A1VC38T7YXB528", FE),
];

/// Codes accepted as another spelling of a canonical code. ISO 3166 says `GB`; Amazon says `UK`.
const ALIASES: &[(&str, &str)] = &[("GB", "UK")];

/// A marketplace code that is not in the table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown marketplace {code:?} (valid: {valid}){hint}", valid = accepted_codes().join(", "), hint = self.hint())]
pub struct UnknownMarketplace {
    /// The code as given.
    pub code: String,
}

impl UnknownMarketplace {
    fn hint(&self) -> String {
        let upper = self.code.trim().to_ascii_uppercase();
        if upper != self.code && lookup(&upper).is_ok() {
            format!("; codes are upper case: did you mean {upper:?}?")
        } else {
            String::new()
        }
    }
}

/// Finds a marketplace by its code, accepting aliases (`GB` for `UK`). Codes are upper case.
pub fn lookup(code: &str) -> Result<&'static Marketplace, UnknownMarketplace> {
    let canonical = ALIASES
        .iter()
        .find(|(alias, _)| *alias == code)
        .map_or(code, |(_, canonical)| *canonical);
    MARKETPLACES
        .iter()
        .find(|m| m.code == canonical)
        .ok_or_else(|| UnknownMarketplace {
            code: code.to_owned(),
        })
}

/// The other spellings accepted for a canonical code (`GB` for `UK`).
pub fn aliases_of(code: &str) -> Vec<&'static str> {
    ALIASES
        .iter()
        .filter(|(_, canonical)| *canonical == code)
        .map(|(alias, _)| *alias)
        .collect()
}

/// Every code `spec.marketplace` accepts, canonical codes and aliases, sorted.
pub fn accepted_codes() -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = MARKETPLACES
        .iter()
        .map(|m| m.code)
        .chain(ALIASES.iter().map(|(alias, _)| *alias))
        .collect();
    codes.sort_unstable();
    codes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn table_has_23_marketplaces_with_unique_codes_and_ids() {
        assert_eq!(MARKETPLACES.len(), 23);
        let codes: HashSet<_> = MARKETPLACES.iter().map(|m| m.code).collect();
        let ids: HashSet<_> = MARKETPLACES.iter().map(|m| m.marketplace_id).collect();
        assert_eq!(codes.len(), 23);
        assert_eq!(ids.len(), 23);
    }

    #[test]
    fn us_derives_the_north_america_marketplace_id_and_endpoint() {
        let us = lookup("US").unwrap();
        assert_eq!(us.marketplace_id, "ATVPDKIKX0DER");
        assert_eq!(us.region, Region::NorthAmerica);
        assert_eq!(
            us.endpoint(Environment::Production),
            "https://sellingpartnerapi-na.amazon.com"
        );
        assert_eq!(
            us.endpoint(Environment::Sandbox),
            "https://sandbox.sellingpartnerapi-na.amazon.com"
        );
    }

    #[test]
    fn gb_and_uk_are_the_same_marketplace_normalised_to_uk() {
        let gb = lookup("GB").unwrap();
        let uk = lookup("UK").unwrap();
        assert_eq!(gb, uk);
        assert_eq!(gb.code, "UK");
        assert_eq!(gb.marketplace_id, "A1F83G8C2ARO7P");
        assert_eq!(gb.region, Region::Europe);
    }

    #[test]
    fn far_east_marketplaces_use_the_fe_endpoint() {
        for code in ["SG", "AU", "JP"] {
            let m = lookup(code).unwrap();
            assert_eq!(m.region, Region::FarEast, "{code}");
            assert_eq!(
                m.endpoint(Environment::Production),
                "https://sellingpartnerapi-fe.amazon.com"
            );
        }
    }

    #[test]
    fn india_and_middle_east_are_served_by_the_eu_endpoint() {
        for code in ["IN", "AE", "SA", "EG", "TR", "ZA"] {
            assert_eq!(lookup(code).unwrap().region, Region::Europe, "{code}");
        }
    }

    #[test]
    fn unknown_code_error_lists_every_valid_code() {
        let err = lookup("XX").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("unknown marketplace \"XX\" (valid: AE, AU, BE, BR, CA, DE"),
            "{msg}"
        );
        for code in accepted_codes() {
            assert!(msg.contains(code), "{code} missing from {msg}");
        }
    }

    #[test]
    fn lower_case_code_is_rejected_with_a_hint() {
        let msg = lookup("de").unwrap_err().to_string();
        assert!(msg.ends_with("did you mean \"DE\"?"), "{msg}");
    }

    #[test]
    fn marketplace_ids_are_upper_case_alphanumeric() {
        for m in MARKETPLACES {
            assert!(
                m.marketplace_id
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()),
                "{}",
                m.marketplace_id
            );
        }
    }
}
