use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

type Table = RoutingTable<&'static str>;

/// A link published by both ends.
fn link(table: &mut Table, a: &'static str, b: &'static str, cost: u32) {
    table.insert_edge(a, b, cost).unwrap();
    table.insert_edge(b, a, cost).unwrap();
}

#[test]
fn line_graph() {
    let mut t = Table::new();
    link(&mut t, "a", "b", 1);
    link(&mut t, "b", "c", 2);
    link(&mut t, "c", "d", 3);
    assert_eq!(t.next_hop(&"a", &"d"), Some(&"b"));
    assert_eq!(t.next_hop(&"b", &"d"), Some(&"c"));
    assert_eq!(t.next_hop(&"c", &"d"), Some(&"d"));
    assert_eq!(t.next_hop(&"d", &"a"), Some(&"c"));
    assert_eq!(t.path(&"a", &"d"), Some(vec!["a", "b", "c", "d"]));
    assert_eq!(t.path(&"d", &"a"), Some(vec!["d", "c", "b", "a"]));
    assert_eq!(t.distance(&"a", &"d"), Some(6));
    assert_eq!(t.hops(&"a", &"d"), Some(3));
    assert_eq!(t.node_count(), 4);
    assert_eq!(t.edge_count(), 6);
    assert_eq!(t.nodes().copied().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
}

#[test]
fn diamond_ties_break_towards_the_smallest_node_whatever_the_insertion_order() {
    // s - {x, m, z} - t: three paths of cost 2; m is the smallest middle node.
    let links = [
        ("s", "x", 1),
        ("x", "t", 1),
        ("s", "m", 1),
        ("m", "t", 1),
        ("s", "z", 1),
        ("z", "t", 1),
    ];
    let mut answers = BTreeSet::new();
    for rotation in 0..links.len() {
        for reversed in [false, true] {
            let mut order = links.to_vec();
            order.rotate_left(rotation);
            if reversed {
                order.reverse();
            }
            let mut t = Table::new();
            for (a, b, c) in order {
                link(&mut t, a, b, c);
            }
            answers.insert((
                t.next_hop(&"s", &"t").copied(),
                t.next_hop(&"t", &"s").copied(),
                t.path(&"s", &"t"),
            ));
        }
    }
    assert_eq!(
        answers.into_iter().collect::<Vec<_>>(),
        [(Some("m"), Some("m"), Some(vec!["s", "m", "t"]))]
    );
}

#[test]
fn tie_break_survives_slot_reuse() {
    // Same usable graph, reached through different histories (slots reused in another
    // order): same answer.
    let mut fresh = Table::new();
    link(&mut fresh, "s", "b", 1);
    link(&mut fresh, "b", "t", 1);
    link(&mut fresh, "s", "a", 1);
    link(&mut fresh, "a", "t", 1);
    let mut churned = Table::new();
    link(&mut churned, "s", "q", 1);
    link(&mut churned, "s", "r", 1);
    churned.remove_edges_from(&"q");
    churned.remove_edges_from(&"r");
    churned.remove_edges_from(&"s");
    assert_eq!(churned.node_count(), 0);
    link(&mut churned, "a", "t", 1);
    link(&mut churned, "s", "a", 1);
    link(&mut churned, "b", "t", 1);
    link(&mut churned, "s", "b", 1);
    assert_eq!(fresh.next_hop(&"s", &"t"), Some(&"a"));
    assert_eq!(churned.next_hop(&"s", &"t"), Some(&"a"));
}

#[test]
fn removal_reroutes_and_insertion_restores() {
    let mut t = Table::new();
    link(&mut t, "a", "b", 1);
    link(&mut t, "b", "d", 1);
    link(&mut t, "a", "c", 5);
    link(&mut t, "c", "d", 5);
    assert_eq!(t.next_hop(&"a", &"d"), Some(&"b"));
    // One end withdrawing the link is enough to stop using it.
    assert_eq!(t.remove_edge(&"b", &"d"), Some(1));
    assert_eq!(t.next_hop(&"a", &"d"), Some(&"c"));
    assert_eq!(t.distance(&"a", &"d"), Some(10));
    t.insert_edge("b", "d", 1).unwrap();
    assert_eq!(t.next_hop(&"a", &"d"), Some(&"b"));
    // A cost change reroutes too.
    assert_eq!(t.insert_edge("a", "b", 20), Ok(Some(1)));
    assert_eq!(t.next_hop(&"a", &"d"), Some(&"c"));
    // An instance's whole link set changes at once.
    t.replace_edges_from("a", [("b", 1)]).unwrap();
    assert_eq!(t.next_hop(&"a", &"d"), Some(&"b"));
    assert_eq!(t.published_cost(&"a", &"c"), None);
    assert_eq!(t.remove_edges_from(&"c"), 2);
    assert!(t.contains_node(&"c"), "d still points to c");
    assert_eq!(t.remove_edge(&"c", &"d"), None);
    assert_eq!(t.remove_edge(&"d", &"c"), Some(5));
    assert!(!t.contains_node(&"c"), "c has no edge left");
    assert_eq!(t.node_count(), 3);
}

#[test]
fn unreachable_and_unknown() {
    let mut t = Table::new();
    link(&mut t, "a", "b", 1);
    link(&mut t, "c", "d", 1);
    assert_eq!(t.next_hop(&"a", &"d"), None);
    assert_eq!(t.path(&"a", &"d"), None);
    assert_eq!(t.distance(&"a", &"d"), None);
    assert_eq!(t.hops(&"a", &"d"), None);
    assert_eq!(t.next_hop(&"a", &"nowhere"), None);
    assert_eq!(t.next_hop(&"nowhere", &"a"), None);
    assert_eq!(t.path(&"nowhere", &"a"), None);
    assert_eq!(Table::new().next_hop(&"a", &"b"), None);
}

#[test]
fn self_route() {
    let mut t = Table::new();
    link(&mut t, "a", "b", 1);
    for node in ["a", "unknown"] {
        assert_eq!(t.next_hop(&node, &node), None);
        assert_eq!(t.path(&node, &node), Some(vec![node]));
        assert_eq!(t.distance(&node, &node), Some(0));
        assert_eq!(t.hops(&node, &node), Some(0));
    }
}

#[test]
fn caps_and_bad_edges_are_typed_and_change_nothing() {
    let config = RouteConfig::builder().max_edges(3).build();
    let mut t = Table::with_config(config);
    link(&mut t, "a", "b", 1);
    t.insert_edge("b", "c", 1).unwrap();
    assert_eq!(
        t.insert_edge("c", "b", 1),
        Err(RouteError::TooManyEdges { max: 3 })
    );
    // Changing a cost is always possible.
    assert_eq!(t.insert_edge("b", "c", 4), Ok(Some(1)));
    let before: Vec<_> = t.edges().map(|(a, b, c)| (*a, *b, c)).collect();
    assert_eq!(
        t.replace_edges_from("a", [("b", 1), ("c", 1), ("d", 1)]),
        Err(RouteError::TooManyEdges { max: 3 })
    );
    assert_eq!(t.insert_edge("a", "a", 1), Err(RouteError::SelfLoop));
    assert_eq!(t.insert_edge("a", "c", 0), Err(RouteError::ZeroCost));
    assert_eq!(
        t.replace_edges_from("a", [("b", 1), ("a", 1)]),
        Err(RouteError::SelfLoop)
    );
    assert_eq!(
        t.replace_edges_from("a", [("b", 1), ("c", 0)]),
        Err(RouteError::ZeroCost)
    );
    let after: Vec<_> = t.edges().map(|(a, b, c)| (*a, *b, c)).collect();
    assert_eq!(before, after);
    assert_eq!(t.edge_count(), 3);
    // Replacing within the cap works: a's edge to b becomes an edge to c.
    t.replace_edges_from("a", [("c", 2)]).unwrap();
    assert_eq!(t.published_cost(&"a", &"c"), Some(2));
    assert_eq!(t.edge_count(), 3);
}

#[test]
fn node_cap() {
    let config = RouteConfig::builder().max_nodes(3).build();
    let mut t = Table::with_config(config);
    link(&mut t, "a", "b", 1);
    link(&mut t, "b", "c", 1);
    assert_eq!(
        t.insert_edge("c", "d", 1),
        Err(RouteError::TooManyNodes { max: 3 })
    );
    assert_eq!(
        t.replace_edges_from("d", [("a", 1)]),
        Err(RouteError::TooManyNodes { max: 3 })
    );
    // Replacing c's links frees nothing (b still points to c) and adds d: refused.
    assert_eq!(
        t.replace_edges_from("c", [("d", 1)]),
        Err(RouteError::TooManyNodes { max: 3 })
    );
    assert_eq!(t.node_count(), 3);
    // Once a publishes nothing and nothing points to it, it is gone and d fits.
    t.remove_edge(&"b", &"a");
    assert_eq!(t.replace_edges_from("a", []), Ok(()));
    assert!(!t.contains_node(&"a"));
    link(&mut t, "c", "d", 1);
    assert_eq!(t.next_hop(&"b", &"d"), Some(&"c"));
    assert_eq!(t.node_count(), 3);
    // d trading its edge to c for one to a new node frees nothing (c has other
    // edges): refused.
    assert_eq!(
        t.replace_edges_from("d", [("e", 1)]),
        Err(RouteError::TooManyNodes { max: 3 })
    );
}

#[test]
fn node_cap_counts_the_nodes_a_replacement_frees() {
    let config = RouteConfig::builder().max_nodes(3).build();
    let mut t = Table::with_config(config);
    link(&mut t, "a", "b", 1);
    t.insert_edge("a", "c", 1).unwrap(); // c exists only through this edge
    assert_eq!(t.node_count(), 3);
    t.replace_edges_from("a", [("b", 1), ("d", 1)]).unwrap();
    assert!(!t.contains_node(&"c"));
    assert_eq!(t.nodes().copied().collect::<Vec<_>>(), ["a", "b", "d"]);
    assert_eq!(t.edge_count(), 3);
}

#[test]
fn one_sided_edges_are_ignored_by_default() {
    let mut t = Table::new();
    t.insert_edge("a", "b", 1).unwrap();
    assert_eq!(t.usable_cost(&"a", &"b"), None);
    assert_eq!(t.next_hop(&"a", &"b"), None);
    assert_eq!(t.next_hop(&"b", &"a"), None);
    // Once b confirms, the link is usable both ways at the larger cost.
    t.insert_edge("b", "a", 7).unwrap();
    assert_eq!(t.usable_cost(&"a", &"b"), Some(7));
    assert_eq!(t.usable_cost(&"b", &"a"), Some(7));
    assert_eq!(t.next_hop(&"a", &"b"), Some(&"b"));
    assert_eq!(t.distance(&"a", &"b"), Some(7));

    let directed = RouteConfig::builder().edge_rule(EdgeRule::Directed).build();
    let mut t = Table::with_config(directed);
    t.insert_edge("a", "b", 1).unwrap();
    assert_eq!(t.next_hop(&"a", &"b"), Some(&"b"));
    assert_eq!(t.next_hop(&"b", &"a"), None);
}

#[test]
fn cache_is_bounded() {
    let config = RouteConfig::builder().max_cached_sources(2).build();
    let mut t = Table::with_config(config);
    link(&mut t, "a", "b", 1);
    link(&mut t, "b", "c", 1);
    for from in ["a", "b", "c", "a", "c"] {
        assert!(t.distance(&from, &"b").is_some());
        let (cached, spare) = t.trees_held();
        assert!(cached + spare <= 2);
    }
    link(&mut t, "c", "d", 1);
    assert_eq!(t.next_hop(&"a", &"d"), Some(&"b"));
    let (cached, spare) = t.trees_held();
    assert!(cached + spare <= 2);
}

#[test]
fn hop_limit() {
    let mut t = Table::new();
    link(&mut t, "a", "b", 1);
    link(&mut t, "b", "c", 1);
    // a -> b -> c crosses 2 links: a sends with hop limit 2, b forwards with 1.
    assert_eq!(t.hops(&"a", &"c"), Some(2));
    assert_eq!(forward_hop_limit(2), Some(1));
    // Sent with hop limit 1, it would reach b, which must drop it.
    assert_eq!(forward_hop_limit(1), None);
}

/// Floyd–Warshall over the usable links, and the path the tie-break rule defines.
struct Reference {
    dist: Vec<Vec<Option<u64>>>,
    cost: BTreeMap<(u8, u8), u64>,
    stops: BTreeSet<u8>,
}

impl Reference {
    /// `stops`: the nodes that do not forward.
    fn new(
        n: u8,
        published: &BTreeMap<(u8, u8), u32>,
        rule: EdgeRule,
        stops: &BTreeSet<u8>,
    ) -> Self {
        let mut cost = BTreeMap::new();
        for (&(a, b), &c) in published {
            let usable = match rule {
                EdgeRule::Directed => Some(c),
                EdgeRule::Bidirectional => published.get(&(b, a)).map(|&back| c.max(back)),
            };
            if let Some(c) = usable {
                cost.insert((a, b), u64::from(c));
            }
        }
        let n = usize::from(n);
        let mut dist = vec![vec![None; n]; n];
        for (i, row) in dist.iter_mut().enumerate() {
            row[i] = Some(0);
        }
        for (&(a, b), &c) in &cost {
            dist[usize::from(a)][usize::from(b)] = Some(c);
        }
        for k in 0..n {
            // Only a transit node can be an inner node of a path.
            if stops.contains(&(k as u8)) {
                continue;
            }
            for i in 0..n {
                for j in 0..n {
                    if let (Some(ik), Some(kj)) = (dist[i][k], dist[k][j]) {
                        if dist[i][j].is_none_or(|ij| ik + kj < ij) {
                            dist[i][j] = Some(ik + kj);
                        }
                    }
                }
            }
        }
        Self {
            dist,
            cost,
            stops: stops.clone(),
        }
    }

    /// The smallest predecessor (the source or a transit node) on a shortest path,
    /// recursively.
    fn path(&self, s: u8, t: u8) -> Option<Vec<u8>> {
        let d = |a: u8, b: u8| self.dist[usize::from(a)][usize::from(b)];
        d(s, t)?;
        let mut path = vec![t];
        let mut at = t;
        while at != s {
            at = self
                .cost
                .iter()
                .filter(|&(&(u, v), &c)| {
                    v == at
                        && (u == s || !self.stops.contains(&u))
                        && d(s, u).is_some_and(|du| Some(du + c) == d(s, at))
                })
                .map(|(&(u, _), _)| u)
                .min()?;
            path.push(at);
        }
        path.reverse();
        Some(path)
    }
}

fn check(
    table: &mut RoutingTable<u8>,
    published: &BTreeMap<(u8, u8), u32>,
    n: u8,
    rule: EdgeRule,
    stops: &BTreeSet<u8>,
) -> Result<(), TestCaseError> {
    let reference = Reference::new(n, published, rule, stops);
    for s in 0..n {
        for t in 0..n {
            let expected = reference.path(s, t);
            let dist = reference.dist[usize::from(s)][usize::from(t)];
            prop_assert_eq!(table.distance(&s, &t), dist, "{} -> {}", s, t);
            prop_assert_eq!(table.path(&s, &t), expected.clone(), "{} -> {}", s, t);
            let hops = expected.as_ref().map(|p| p.len() as u32 - 1);
            prop_assert_eq!(table.hops(&s, &t), hops);
            let next = expected.as_ref().and_then(|p| p.get(1).copied());
            prop_assert_eq!(table.next_hop(&s, &t).copied(), next);
        }
    }
    Ok(())
}

fn rule() -> impl Strategy<Value = EdgeRule> {
    prop_oneof![Just(EdgeRule::Bidirectional), Just(EdgeRule::Directed)]
}

proptest! {
    #[test]
    fn dijkstra_matches_floyd_warshall(
        n in 2u8..9,
        raw in prop::collection::vec((0u8..9, 0u8..9, 1u32..6), 0..40),
        removals in prop::collection::vec((0u8..9, 0u8..9), 0..10),
        rule in rule(),
        seed in any::<u64>(),
    ) {
        let config = RouteConfig::builder().edge_rule(rule).build();
        let mut table = RoutingTable::<u8>::with_config(config);
        let mut published = BTreeMap::new();
        for &(a, b, c) in &raw {
            let (a, b) = (a % n, b % n);
            if a == b {
                prop_assert_eq!(table.insert_edge(a, b, c), Err(RouteError::SelfLoop));
                continue;
            }
            prop_assert_eq!(table.insert_edge(a, b, c).unwrap(), published.insert((a, b), c));
        }
        check(&mut table, &published, n, rule, &BTreeSet::new())?;

        // Incremental removals invalidate the cached trees.
        for &(a, b) in &removals {
            let (a, b) = (a % n, b % n);
            prop_assert_eq!(table.remove_edge(&a, &b), published.remove(&(a, b)));
        }
        check(&mut table, &published, n, rule, &BTreeSet::new())?;
        prop_assert_eq!(table.edge_count(), published.len());

        // The same edges inserted in another order give the same answers.
        let mut shuffled: Vec<_> = published.iter().map(|(&(a, b), &c)| (a, b, c)).collect();
        let mut state = seed;
        for i in (1..shuffled.len()).rev() {
            state = crate::dispatch::mix(state, i as u64);
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut other = RoutingTable::<u8>::with_config(config);
        for (a, b, c) in shuffled {
            other.insert_edge(a, b, c).unwrap();
        }
        check(&mut other, &published, n, rule, &BTreeSet::new())?;
    }
}

#[test]
fn paths_pass_only_through_transit_nodes() {
    let mut t = Table::new();
    link(&mut t, "a", "b", 1);
    link(&mut t, "b", "c", 1);
    link(&mut t, "a", "x", 5);
    link(&mut t, "x", "c", 5);
    assert!(t.is_transit(&"b"));
    assert_eq!(t.next_hop(&"a", &"c"), Some(&"b"));
    t.set_transit("b", false).unwrap();
    assert!(!t.is_transit(&"b"));
    assert_eq!(t.next_hop(&"a", &"c"), Some(&"x"));
    assert_eq!(t.path(&"a", &"c"), Some(vec!["a", "x", "c"]));
    assert_eq!(t.distance(&"a", &"c"), Some(10));
    // b is still a destination and a source.
    assert_eq!(t.next_hop(&"a", &"b"), Some(&"b"));
    assert_eq!(t.next_hop(&"c", &"b"), Some(&"b"));
    assert_eq!(t.next_hop(&"b", &"c"), Some(&"c"));
    assert_eq!(t.path(&"b", &"x"), Some(vec!["b", "a", "x"]));
    // With x not forwarding either, a and c cannot reach each other.
    t.set_transit("x", false).unwrap();
    assert_eq!(t.next_hop(&"a", &"c"), None);
    assert_eq!(t.distance(&"a", &"c"), None);
    assert_eq!(t.path(&"a", &"c"), None);
    assert_eq!(t.distance(&"b", &"x"), Some(6));
    // Setting the flag back restores the shortest path.
    t.set_transit("b", true).unwrap();
    assert_eq!(t.next_hop(&"a", &"c"), Some(&"b"));
}

#[test]
fn non_transit_node_loses_its_ties() {
    // s - {m, x, z} - t, all of cost 2: m wins, unless it does not forward; then x.
    let mut t = Table::new();
    for middle in ["x", "m", "z"] {
        link(&mut t, "s", middle, 1);
        link(&mut t, middle, "t", 1);
    }
    assert_eq!(t.next_hop(&"s", &"t"), Some(&"m"));
    t.set_transit("m", false).unwrap();
    assert_eq!(t.next_hop(&"s", &"t"), Some(&"x"));
    assert_eq!(t.next_hop(&"t", &"s"), Some(&"x"));
    assert_eq!(t.next_hop(&"s", &"m"), Some(&"m"));
}

#[test]
fn transit_flag_lives_and_dies_with_its_node() {
    let mut t = Table::with_config(RouteConfig::builder().max_nodes(3).build());
    // Unknown nodes forward; setting that is a no-op.
    assert!(t.is_transit(&"a"));
    t.set_transit("a", true).unwrap();
    assert!(!t.contains_node(&"a"));
    // A flag before any edge holds the node.
    t.set_transit("a", false).unwrap();
    assert!(t.contains_node(&"a"));
    assert_eq!(t.node_count(), 1);
    assert!(!t.is_transit(&"a"));
    link(&mut t, "a", "b", 1);
    link(&mut t, "b", "c", 1);
    // The table is full: a flag for a fourth node is refused, and nothing changes.
    assert_eq!(
        t.set_transit("d", false),
        Err(RouteError::TooManyNodes { max: 3 })
    );
    assert!(!t.contains_node(&"d"));
    // Changing a's edges keeps its flag.
    t.replace_edges_from("a", [("b", 4)]).unwrap();
    assert!(!t.is_transit(&"a"));
    t.set_transit("c", false).unwrap();
    t.replace_edges_from("c", [("b", 2)]).unwrap();
    assert!(!t.is_transit(&"c"));
    // b still points to a: a's flag stays while a is held.
    assert_eq!(t.remove_edges_from(&"a"), 1);
    assert!(t.contains_node(&"a"));
    assert!(!t.is_transit(&"a"));
    // The last edge touching a goes: a goes, its flag with it.
    assert_eq!(t.remove_edge(&"b", &"a"), Some(1));
    assert!(!t.contains_node(&"a"));
    assert!(t.is_transit(&"a"));
    link(&mut t, "a", "b", 1);
    assert!(t.is_transit(&"a"));
    // A node held only by its flag is forgotten by remove_edges_from.
    t.remove_edges_from(&"a");
    t.remove_edge(&"b", &"a");
    t.set_transit("d", false).unwrap();
    assert!(t.contains_node(&"d"));
    assert_eq!(t.remove_edges_from(&"d"), 0);
    assert!(!t.contains_node(&"d"));
    assert!(t.is_transit(&"d"));
    assert_eq!(t.node_count(), 2);
}

#[test]
fn changes_that_cannot_alter_a_tree_keep_it() {
    // a - b - c - d costs 1, plus a - d costing 10 (never shortest).
    let mut t = Table::new();
    link(&mut t, "a", "b", 1);
    link(&mut t, "b", "c", 1);
    link(&mut t, "c", "d", 1);
    link(&mut t, "a", "d", 10);
    link(&mut t, "e", "f", 1); // not reached from a
    assert_eq!(t.next_hop(&"a", &"d"), Some(&"b"));
    assert_eq!(t.trees_held(), (1, 0));
    let kept = |t: &Table| t.trees_held().0 == 1;

    // Off-tree link dearer, gone, back at a cost that does not beat the tree.
    t.insert_edge("a", "d", 20).unwrap();
    assert!(kept(&t));
    t.remove_edge(&"d", &"a");
    assert!(kept(&t));
    t.insert_edge("d", "a", 3).unwrap();
    assert!(kept(&t), "a - d at 20 > 3");
    // A one-sided edge is not a link.
    t.insert_edge("b", "d", 1).unwrap();
    assert!(kept(&t));
    // Flags of nodes that forward nothing in the tree or are not reached.
    t.set_transit("d", false).unwrap();
    assert!(kept(&t), "d is a leaf of a's tree");
    t.set_transit("e", false).unwrap();
    assert!(kept(&t), "e is not reached");
    t.set_transit("a", false).unwrap();
    assert!(kept(&t), "the source always sends");
    assert_eq!(t.next_hop(&"a", &"d"), Some(&"b"));
    assert_eq!(t.distance(&"a", &"d"), Some(3));

    // Changes that do alter it drop it, and the next query is right.
    t.set_transit("c", false).unwrap();
    assert_eq!(t.trees_held(), (0, 1));
    assert_eq!(t.next_hop(&"a", &"d"), Some(&"d"));
    assert_eq!(t.distance(&"a", &"d"), Some(20));
    t.set_transit("c", true).unwrap();
    assert_eq!(t.distance(&"a", &"d"), Some(3));
    // A tree link dearer.
    t.insert_edge("c", "d", 30).unwrap();
    assert!(!kept(&t));
    assert_eq!(t.path(&"a", &"d"), Some(vec!["a", "d"]));
    // An off-tree link now cheap enough.
    t.insert_edge("d", "c", 1).unwrap();
    t.insert_edge("c", "d", 1).unwrap();
    assert_eq!(t.distance(&"a", &"d"), Some(3));
    t.insert_edge("a", "d", 1).unwrap();
    t.insert_edge("d", "a", 1).unwrap();
    assert!(!kept(&t));
    assert_eq!(t.distance(&"a", &"d"), Some(1));
    // A new tie from a smaller predecessor: c reached at 2 through b or, now, through d?
    // a - d costs 1, d - c costs 1: tie at 2 between b and d; b is smaller, tree kept.
    assert_eq!(t.path(&"a", &"c"), Some(vec!["a", "b", "c"]));
}

/// One change to a table, and its model.
#[derive(Debug, Clone)]
enum Change {
    Insert(u8, u8, u32),
    Link(u8, u8, u32),
    Remove(u8, u8),
    Transit(u8, bool),
    Replace(u8, Vec<(u8, u32)>),
    RemoveFrom(u8),
}

fn change() -> impl Strategy<Value = Change> {
    let node = 0u8..7;
    prop_oneof![
        (node.clone(), node.clone(), 1u32..6).prop_map(|(a, b, c)| Change::Insert(a, b, c)),
        (node.clone(), node.clone(), 1u32..6).prop_map(|(a, b, c)| Change::Link(a, b, c)),
        (node.clone(), node.clone()).prop_map(|(a, b)| Change::Remove(a, b)),
        (node.clone(), any::<bool>()).prop_map(|(a, t)| Change::Transit(a, t)),
        (
            node.clone(),
            prop::collection::vec((node.clone(), 1u32..6), 0..4)
        )
            .prop_map(|(a, links)| Change::Replace(a, links)),
        node.prop_map(Change::RemoveFrom),
    ]
}

/// What the table should hold: published edges, and the nodes with their flags.
#[derive(Debug, Default)]
struct Model {
    published: BTreeMap<(u8, u8), u32>,
    nodes: BTreeMap<u8, bool>,
}

impl Model {
    fn touched(&self, x: u8) -> bool {
        self.published.keys().any(|&(a, b)| a == x || b == x)
    }

    fn collect(&mut self, x: u8) {
        if !self.touched(x) {
            self.nodes.remove(&x);
        }
    }

    fn insert(&mut self, a: u8, b: u8, c: u32) {
        self.published.insert((a, b), c);
        self.nodes.entry(a).or_insert(true);
        self.nodes.entry(b).or_insert(true);
    }

    fn apply(&mut self, table: &mut RoutingTable<u8>, change: &Change) {
        match *change {
            Change::Insert(a, b, c) if a != b => {
                assert_eq!(
                    table.insert_edge(a, b, c),
                    Ok(self.published.get(&(a, b)).copied())
                );
                self.insert(a, b, c);
            }
            Change::Link(a, b, c) if a != b => {
                table.insert_edge(a, b, c).unwrap();
                table.insert_edge(b, a, c).unwrap();
                self.insert(a, b, c);
                self.insert(b, a, c);
            }
            Change::Insert(..) | Change::Link(..) => {}
            Change::Remove(a, b) => {
                let cost = self.published.remove(&(a, b));
                assert_eq!(table.remove_edge(&a, &b), cost);
                if cost.is_some() {
                    self.collect(a);
                    self.collect(b);
                }
            }
            Change::Transit(a, transit) => {
                table.set_transit(a, transit).unwrap();
                match self.nodes.get_mut(&a) {
                    Some(flag) => *flag = transit,
                    None if !transit => {
                        self.nodes.insert(a, false);
                    }
                    None => {}
                }
            }
            Change::Replace(a, ref links) => {
                let links: Vec<_> = links.iter().copied().filter(|&(b, _)| b != a).collect();
                table.replace_edges_from(a, links.iter().copied()).unwrap();
                let wanted: BTreeMap<u8, u32> = links.iter().copied().collect();
                let old: Vec<u8> = self
                    .published
                    .keys()
                    .filter(|&&(x, _)| x == a)
                    .map(|&(_, b)| b)
                    .collect();
                for b in old {
                    if !wanted.contains_key(&b) {
                        self.published.remove(&(a, b));
                        self.collect(b);
                    }
                }
                if wanted.is_empty() {
                    self.collect(a);
                }
                for (b, c) in wanted {
                    self.insert(a, b, c);
                }
            }
            Change::RemoveFrom(a) => {
                let old: Vec<u8> = self
                    .published
                    .keys()
                    .filter(|&&(x, _)| x == a)
                    .map(|&(_, b)| b)
                    .collect();
                assert_eq!(table.remove_edges_from(&a), old.len());
                for b in old {
                    self.published.remove(&(a, b));
                    self.collect(b);
                }
                self.collect(a);
            }
        }
    }

    fn stops(&self) -> BTreeSet<u8> {
        self.nodes
            .iter()
            .filter(|&(_, &transit)| !transit)
            .map(|(&x, _)| x)
            .collect()
    }
}

proptest! {
    /// Every change, applied to a table whose trees are cached (all of them, or some when
    /// the cache is small), gives the answers of a from-scratch Floyd–Warshall.
    #[test]
    fn incremental_changes_match_floyd_warshall(
        changes in prop::collection::vec((change(), any::<bool>()), 0..40),
        rule in rule(),
        cached in 1usize..10,
    ) {
        const N: u8 = 7;
        let config = RouteConfig::builder()
            .edge_rule(rule)
            .max_cached_sources(cached)
            .build();
        let mut table = RoutingTable::<u8>::with_config(config);
        let mut model = Model::default();
        for (change, query) in &changes {
            model.apply(&mut table, change);
            for x in 0..N {
                prop_assert_eq!(table.contains_node(&x), model.nodes.contains_key(&x), "{}", x);
                prop_assert_eq!(table.is_transit(&x), model.nodes.get(&x).is_none_or(|&t| t));
            }
            prop_assert_eq!(table.edge_count(), model.published.len());
            if *query {
                check(&mut table, &model.published, N, rule, &model.stops())?;
            }
        }
        check(&mut table, &model.published, N, rule, &model.stops())?;
        let (cached_now, spare) = table.trees_held();
        prop_assert!(cached_now + spare <= cached);
    }
}

#[test]
fn neighbours_are_the_usable_links() {
    let mut t = Table::new();
    link(&mut t, "a", "b", 2);
    t.insert_edge("b", "a", 5).unwrap();
    link(&mut t, "a", "c", 1);
    t.insert_edge("a", "d", 1).unwrap();
    let sorted = |t: &Table, n| {
        let mut v: Vec<_> = t.neighbours(&n).map(|(n, c)| (*n, c)).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&t, "a"), [("b", 5), ("c", 1)]);
    assert_eq!(sorted(&t, "d"), []);
    t.remove_edge(&"c", &"a");
    assert_eq!(sorted(&t, "a"), [("b", 5)]);
    let directed = RouteConfig::builder().edge_rule(EdgeRule::Directed).build();
    let mut t = Table::with_config(directed);
    t.insert_edge("a", "d", 3).unwrap();
    assert_eq!(sorted(&t, "a"), [("d", 3)]);
    assert_eq!(sorted(&t, "d"), []);
}

mod policy {
    use super::super::{RoutePolicy, RoutingTable, ShortestPath};
    use crate::path::ServicePath;

    fn node(name: &str) -> ServicePath {
        ServicePath::new(&format!("/test/cn/linux/w1/g1/Node/{name}")).unwrap()
    }

    fn table() -> RoutingTable {
        let mut t = RoutingTable::new();
        for (a, b, cost) in [("a", "b", 1), ("b", "c", 1), ("a", "x", 5), ("x", "c", 5)] {
            t.insert_edge(node(a), node(b), cost).unwrap();
            t.insert_edge(node(b), node(a), cost).unwrap();
        }
        t
    }

    #[test]
    fn shortest_path_is_the_tables_next_hop() {
        let mut t = table();
        let mut policy = ShortestPath;
        assert_eq!(
            policy.next_hop(&mut t, &node("a"), &node("c")),
            Some(node("b"))
        );
        t.set_transit(node("b"), false).unwrap();
        assert_eq!(
            policy.next_hop(&mut t, &node("a"), &node("c")),
            Some(node("x"))
        );
        assert_eq!(policy.next_hop(&mut t, &node("a"), &node("a")), None);
        assert_eq!(policy.next_hop(&mut t, &node("a"), &node("nowhere")), None);
    }

    #[test]
    fn closures_are_policies_and_keep_state() {
        let mut calls = 0u32;
        let mut cheapest_neighbour =
            move |t: &mut RoutingTable, from: &ServicePath, to: &ServicePath| {
                calls += 1;
                assert!(calls <= 2, "called {calls} times");
                t.distance(from, to)?;
                t.neighbours(from)
                    .min_by_key(|&(n, cost)| (cost, n.clone()))
                    .map(|(n, _)| n.clone())
            };
        let mut t = table();
        assert_eq!(
            cheapest_neighbour.next_hop(&mut t, &node("c"), &node("a")),
            Some(node("b"))
        );
        let mut boxed: Box<dyn RoutePolicy> = Box::new(cheapest_neighbour);
        assert_eq!(boxed.next_hop(&mut t, &node("c"), &node("nowhere")), None);
    }
}

proptest! {
    /// Following `EqualCostMultipath` hop by hop, every node using its own view of the
    /// same links, reaches the destination: each hop is a usable link, strictly nearer
    /// the destination, and only transit nodes are passed through.
    #[test]
    fn equal_cost_multipath_hops_reach_the_destination(
        n in 2u8..8,
        raw in prop::collection::vec((0u8..8, 0u8..8, 1u32..4), 0..30),
        transit in prop::collection::vec(any::<bool>(), 8),
    ) {
        let node = |i: u8| crate::path::ServicePath::new(&format!("/demo/cn/android/w1/g1/N/n{i}")).unwrap();
        let mut table = RoutingTable::new();
        for &(a, b, c) in &raw {
            let (a, b) = (a % n, b % n);
            if a != b {
                table.insert_edge(node(a), node(b), c).unwrap();
                table.insert_edge(node(b), node(a), c).unwrap();
            }
        }
        for i in 0..n {
            if !transit[usize::from(i)] && table.contains_node(&node(i)) {
                table.set_transit(node(i), false).unwrap();
            }
        }
        let mut policy = EqualCostMultipath::default();
        for s in 0..n {
            for t in 0..n {
                let (s, t) = (node(s), node(t));
                let Some(mut left) = table.distance(&s, &t) else {
                    prop_assert_eq!(policy.next_hop(&mut table, &s, &t), None);
                    continue;
                };
                let mut at = s.clone();
                let mut steps = 0;
                while at != t {
                    let next = policy.next_hop(&mut table, &at, &t);
                    prop_assert!(next.is_some(), "{} has no hop towards {}", at, t);
                    let next = next.unwrap();
                    let cost = table.usable_cost(&at, &next);
                    prop_assert!(cost.is_some(), "{} -> {} is not a usable link", at, next);
                    if next != t {
                        prop_assert!(table.is_transit(&next), "{} does not forward", next);
                    }
                    let rest = if next == t { 0 } else { table.distance(&next, &t).unwrap() };
                    prop_assert_eq!(u64::from(cost.unwrap()) + rest, left, "not on a shortest path");
                    prop_assert!(rest < left);
                    left = rest;
                    at = next;
                    steps += 1;
                    prop_assert!(steps <= usize::from(n), "a loop");
                }
            }
        }
    }
}
