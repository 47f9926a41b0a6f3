//! Node ids and unit addresses.
//!
//! A node id is a dotted path such as `gz` or `gz.yuexiu`; a unit's address is `<node-id>/<unit-id>`,
//! for example `gz.yuexiu/liurong-street`. The node part names the unit's home node, but routing never
//! parses it: the directory is the authority on where a unit lives and on the node tree.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a node id or unit address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("node id {0:?} is invalid: use dot-separated segments of a-z, 0-9 and '-', such as gz.yuexiu")]
    NodeId(String),
    #[error("unit address {0:?} is invalid: use <node-id>/<unit-id>, such as gz.yuexiu/liurong-street, with a-z, 0-9, '-' and '_'")]
    Unit(String),
}

fn is_segment(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || extra.contains(&c))
}

/// The id of an exchange node (`gz`, `gz.yuexiu`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeId {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() <= 200 && s.split('.').all(|seg| is_segment(seg, &[])) {
            Ok(NodeId(s.to_owned()))
        } else {
            Err(AddressError::NodeId(s.to_owned()))
        }
    }
}

/// The address of a unit (an agency system): `<node-id>/<unit-id>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitAddress(String);

impl UnitAddress {
    /// The unit id reserved for a node itself, which signs delivery reports with its node key.
    pub const NODE_UNIT: &'static str = "_node";

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The node part of the address. The directory decides the home node; this is its spelling.
    pub fn node_part(&self) -> &str {
        self.0.split_once('/').map(|(n, _)| n).unwrap_or("")
    }

    /// The address under which node `node` itself signs (delivery reports).
    pub fn of_node(node: &NodeId) -> UnitAddress {
        UnitAddress(format!("{}/{}", node.as_str(), Self::NODE_UNIT))
    }

    /// Whether this address names a node rather than an agency unit.
    pub fn is_node(&self) -> bool {
        self.0.ends_with("/_node")
    }
}

impl FromStr for UnitAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || AddressError::Unit(s.to_owned());
        let (node, unit) = s.split_once('/').ok_or_else(err)?;
        NodeId::from_str(node).map_err(|_| err())?;
        if !is_segment(unit, &['_']) {
            return Err(err());
        }
        Ok(UnitAddress(s.to_owned()))
    }
}

macro_rules! string_newtype_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_newtype_impls!(NodeId);
string_newtype_impls!(UnitAddress);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_addresses() {
        let a: UnitAddress = "gz.yuexiu/liurong-street".parse().unwrap();
        assert_eq!(a.node_part(), "gz.yuexiu");
        assert!("gz".parse::<NodeId>().is_ok());
        assert!("gz.yuexiu".parse::<NodeId>().is_ok());
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in ["", "gz", "gz/", "/x", "GZ/x", "gz..a/x", "gz/a b", "gz/a/b"] {
            assert!(bad.parse::<UnitAddress>().is_err(), "{bad} accepted");
        }
        assert!("gz.".parse::<NodeId>().is_err());
    }
}
