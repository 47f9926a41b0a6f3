//! Tree routing: plain functions over the directory, testable without a network.
//!
//! A message climbs from the sender's node toward the lowest common ancestor of sender and recipient,
//! then descends to the recipient's home node. Recipients that share the next hop travel together, so
//! a message to many recipients crosses each link once and fans out at the last node they share.

use std::collections::BTreeMap;

use exchange_wire::{NodeId, UnitAddress};

use crate::directory::Directory;

/// Where a message goes next from this node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum NextHop {
    /// The recipient's inbox is here.
    Local,
    /// Hand it to this neighbour.
    Node(NodeId),
}

/// Why a recipient cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("unit {0} is not in the directory: check the address, or ask its node's operator to register it")]
    UnknownUnit(UnitAddress),
    #[error("node {0} is not reachable from {1} in the node tree")]
    NoRoute(NodeId, NodeId),
}

/// The next hop from `here` toward node `dest`.
pub fn next_hop(dir: &Directory, here: &NodeId, dest: &NodeId) -> Result<NextHop, RouteError> {
    if here == dest {
        return Ok(NextHop::Local);
    }
    // Walk up from dest; if we pass `here`, the node just below it is our child on the path down.
    let mut below: Option<&NodeId> = None;
    for ancestor in dir.ancestors(dest) {
        if ancestor == here {
            return below.map(|c| NextHop::Node(c.clone())).ok_or_else(|| RouteError::NoRoute(dest.clone(), here.clone()));
        }
        below = Some(ancestor);
    }
    if below.is_none() {
        return Err(RouteError::NoRoute(dest.clone(), here.clone()));
    }
    // `here` is not an ancestor of dest: go up.
    match dir.node(here).and_then(|n| n.parent.clone()) {
        Some(parent) => Ok(NextHop::Node(parent)),
        None => Err(RouteError::NoRoute(dest.clone(), here.clone())),
    }
}

/// Recipients grouped by next hop.
pub type Plan = BTreeMap<NextHop, Vec<UnitAddress>>;

/// Groups `recipients` by their next hop from `here`.
pub fn plan<'a>(
    dir: &Directory,
    here: &NodeId,
    recipients: impl IntoIterator<Item = &'a UnitAddress>,
) -> Result<Plan, RouteError> {
    let mut plan = Plan::new();
    for r in recipients {
        let home = dir.home_of(r).ok_or_else(|| RouteError::UnknownUnit(r.clone()))?;
        plan.entry(next_hop(dir, here, &home)?).or_default().push(r.clone());
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::directory::test_tree as tree;

    fn n(s: &str) -> NodeId {
        s.parse().unwrap()
    }
    fn u(s: &str) -> UnitAddress {
        s.parse().unwrap()
    }

    #[test]
    fn climbs_to_the_common_ancestor_then_descends() {
        let d = tree();
        assert_eq!(next_hop(&d, &n("gz.yuexiu"), &n("gz.haizhu")), Ok(NextHop::Node(n("gz"))));
        assert_eq!(next_hop(&d, &n("gz"), &n("gz.haizhu")), Ok(NextHop::Node(n("gz.haizhu"))));
        assert_eq!(next_hop(&d, &n("gz.haizhu"), &n("gz.haizhu")), Ok(NextHop::Local));
        // Any depth: the province is two levels above a district.
        assert_eq!(next_hop(&d, &n("gd"), &n("gz.yuexiu")), Ok(NextHop::Node(n("gz"))));
        assert_eq!(next_hop(&d, &n("gz.yuexiu"), &n("gd")), Ok(NextHop::Node(n("gz"))));
        assert_eq!(next_hop(&d, &n("gz"), &n("gd")), Ok(NextHop::Node(n("gd"))));
    }

    #[test]
    fn recipients_sharing_a_link_travel_together() {
        let d = tree();
        let rs = [u("gz.haizhu/civil-affairs"), u("gz.haizhu/chigang-street"), u("gz/civil-affairs")];
        let p = plan(&d, &n("gz.yuexiu"), &rs).unwrap();
        assert_eq!(p.len(), 1, "one copy goes up to the city: {p:?}");
        assert_eq!(p[&NextHop::Node(n("gz"))].len(), 3);
        let p = plan(&d, &n("gz"), &rs).unwrap();
        assert_eq!(p[&NextHop::Local], vec![u("gz/civil-affairs")]);
        assert_eq!(p[&NextHop::Node(n("gz.haizhu"))].len(), 2, "one copy goes down to haizhu");
    }

    #[test]
    fn unknown_units_are_refused() {
        let d = tree();
        assert_eq!(
            plan(&d, &n("gz"), &[u("gz.haizhu/nobody")]),
            Err(RouteError::UnknownUnit(u("gz.haizhu/nobody")))
        );
    }
}
