//! `dms ls --routes` and `dms route`: the routing table of multi-hop forwarding, as the
//! instances published it in discovery (one link record per instance, on its lease).
//!
//! A link is *usable* only when both of its ends list it (at the larger of their costs);
//! only instances whose record says they forward (brokers) are intermediate hops.

use std::collections::{BTreeMap, BTreeSet};

use dms::routing::{LinkRecord, TableSnapshot, read_table, table_key};
use dms::{ClusterPath, Discovery, ServicePath};
use dms_core::route::RoutingTable;
use dms_discovery::Key;

use crate::discovery_url::{DiscoveryUrl, unreachable, with_discovery};
use crate::failure::Failure;

/// Options of `dms route`.
#[derive(Debug, clap::Args)]
pub(crate) struct RouteArgs {
    /// Discovery: etcd://host:port[,host:port...] (memory:// is in-process only, and
    /// empty).
    #[arg(long, env = "DMS_DISCOVERY")]
    discovery: DiscoveryUrl,
    /// The instance a message starts from (its service path).
    #[arg(long, value_name = "INSTANCE")]
    from: ServicePath,
    /// The instance it is for, or a cluster path: then the route to each of its
    /// instances that has a link record.
    #[arg(long, value_name = "INSTANCE|CLUSTER")]
    to: String,
    /// The hop limit the origin sends with (the default of `dms node`: 16): a longer
    /// route is reported as unusable.
    #[arg(long, default_value_t = dms_core::proto::control::DEFAULT_HOP_LIMIT)]
    hop_limit: u8,
    /// One JSON object per destination: {"from","to","reachable","hops":[{"from","to",
    /// "cost"}],"total_cost"} or {"from","to","reachable":false,"why"}.
    #[arg(long)]
    json: bool,
}

/// The routing tables (one per `/App/Area/Platform`) that hold the instances under
/// `prefix`: the prefix's own when it names a platform or more, else those of the
/// instances that claim a bucket under it.
async fn tables<D: Discovery>(
    discovery: &D,
    url: &DiscoveryUrl,
    prefix: &str,
) -> Result<Vec<Key>, Failure> {
    let segments: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    let table = |scope: &str| {
        Key::new(format!("{scope}/{}", dms::routing::ROUTING_TABLE))
            .map_err(|e| Failure::Usage(format!("bad prefix {prefix:?}: {e}")))
    };
    if segments.len() >= 3 {
        return Ok(vec![table(&format!(
            "/{}/{}/{}",
            segments[0], segments[1], segments[2]
        ))?]);
    }
    let claims = Key::new("/@dms/buckets").map_err(|e| Failure::Other(e.to_string()))?;
    let (entries, _) = discovery
        .list(&claims)
        .await
        .map_err(|e| unreachable(url, e))?;
    let keys: BTreeSet<Key> = entries
        .iter()
        .filter_map(|e| {
            std::str::from_utf8(&e.value)
                .ok()?
                .parse::<ServicePath>()
                .ok()
        })
        .filter(|path| under(path, prefix))
        .filter_map(|path| table_key(&path).ok())
        .collect();
    Ok(keys.into_iter().collect())
}

/// Whether `path` is `prefix` or under it (segment-wise; `/` holds everything).
fn under(path: &ServicePath, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    let path = path.as_str();
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// What a listed link is worth to routing.
enum LinkState {
    /// Both ends list it: used at this cost.
    Usable(u32),
    /// Only this end lists it.
    OneSided(String),
}

fn link_state(
    table: &RoutingTable,
    records: &BTreeMap<&ServicePath, &LinkRecord>,
    from: &ServicePath,
    to: &str,
) -> LinkState {
    let Ok(to) = to.parse::<ServicePath>() else {
        return LinkState::OneSided("not a service path".into());
    };
    if let Some(cost) = table.usable_cost(from, &to) {
        return LinkState::Usable(cost);
    }
    if table.published_cost(from, &to).is_none() {
        return LinkState::OneSided("ignored: the routing table refused this record".into());
    }
    match records.get(&to) {
        None => LinkState::OneSided(format!("{to} has no link record")),
        Some(record) if !record.links.iter().any(|l| l.to == from.as_str()) => {
            LinkState::OneSided(format!("{} does not list it", to.instance()))
        }
        Some(_) => LinkState::OneSided(format!("the routing table refused {to}'s record")),
    }
}

/// `dms ls --routes [PREFIX]`: every routing table holding instances under `prefix`,
/// each instance's record (forwards or not, links with costs, usable or one-sided), and
/// the records refused with why.
pub(crate) async fn ls_routes<D: Discovery>(
    discovery: &D,
    url: &DiscoveryUrl,
    prefix: &str,
    json: bool,
) -> Result<(), Failure> {
    let keys = tables(discovery, url, prefix).await?;
    if keys.is_empty() && !json {
        crate::print_line(&format!("no routing table under {prefix}"));
    }
    for key in keys {
        let snapshot = read_table(discovery, &key)
            .await
            .map_err(|e| unreachable(url, e))?;
        let table = snapshot.to_table();
        let records: BTreeMap<&ServicePath, &LinkRecord> =
            snapshot.records.iter().map(|(p, r)| (p, r)).collect();
        let shown: Vec<&(ServicePath, LinkRecord)> = snapshot
            .records
            .iter()
            .filter(|(p, _)| under(p, prefix))
            .collect();
        if !json {
            crate::print_line(&format!(
                "routing table {key} at revision {}: {} records, {} refused",
                snapshot.revision,
                shown.len(),
                snapshot.refused.len()
            ));
        }
        for (path, record) in shown {
            let links: Vec<(String, u32, LinkState)> = record
                .links
                .iter()
                .map(|l| {
                    (
                        l.to.clone(),
                        l.cost,
                        link_state(&table, &records, path, &l.to),
                    )
                })
                .collect();
            if json {
                let links: Vec<serde_json::Value> = links
                    .iter()
                    .map(|(to, cost, state)| match state {
                        LinkState::Usable(used) => serde_json::json!({
                            "to": to, "cost": cost, "usable": true, "usable_cost": used,
                        }),
                        LinkState::OneSided(why) => serde_json::json!({
                            "to": to, "cost": cost, "usable": false, "why": why,
                        }),
                    })
                    .collect();
                let line = serde_json::json!({
                    "table": key.to_string(),
                    "revision": snapshot.revision,
                    "instance": path.to_string(),
                    "forwards": record.forwards,
                    "links": links,
                });
                crate::print_line(&line.to_string());
                continue;
            }
            let role = if record.forwards {
                "forwards (broker)"
            } else {
                "does not forward"
            };
            let n = links.len();
            let s = if n == 1 { "" } else { "s" };
            crate::print_line(&format!("  {path}  {role}, {n} link{s}"));
            for (to, cost, state) in links {
                let state = match state {
                    LinkState::Usable(used) if used == cost => "usable".to_owned(),
                    LinkState::Usable(used) => format!("usable at cost {used} (the larger end)"),
                    LinkState::OneSided(why) => format!("one-sided: {why}"),
                };
                crate::print_line(&format!("    -> {to:<48} cost {cost:<4} {state}"));
            }
        }
        for (refused, why) in &snapshot.refused {
            if json {
                let line = serde_json::json!({
                    "table": key.to_string(),
                    "refused": refused.to_string(),
                    "why": why.to_string(),
                });
                crate::print_line(&line.to_string());
            } else {
                crate::print_line(&format!("  refused {refused}: {why}"));
            }
        }
    }
    Ok(())
}

/// One link of a route: its ends and what routing counts for it.
type Hop = (ServicePath, ServicePath, u32);

/// The path a message from `from` to `to` takes when every hop uses the kernel's default
/// policy ([`dms::routing::route`]): each link with its cost, and the total.
fn kernel_path(
    table: &mut RoutingTable,
    from: &ServicePath,
    to: &ServicePath,
) -> Option<(Vec<Hop>, u64)> {
    let total = table.distance(from, to)?;
    let hops = dms::routing::route(table, from, to)?
        .into_iter()
        .map(|hop| (hop.from, hop.to, hop.cost))
        .collect();
    Some((hops, total))
}

/// Why `to` cannot be reached from `from`, as far as the table tells.
fn why_unreachable(
    snapshot: &TableSnapshot,
    table: &RoutingTable,
    from: &ServicePath,
    to: &ServicePath,
) -> String {
    let record = |who: &ServicePath| snapshot.records.iter().find(|(p, _)| p == who);
    for who in [from, to] {
        let Some((_, r)) = record(who) else {
            return format!(
                "{who} has no link record in the routing table (not running, in another \
                 platform, or its record was refused)"
            );
        };
        let usable = r
            .peers()
            .filter(|(peer, _)| table.usable_cost(who, peer).is_some())
            .count();
        if usable == 0 {
            return if r.links.is_empty() {
                format!(
                    "{who} has no link (it holds no session: does it --target a broker cluster?)"
                )
            } else {
                format!(
                    "{who} has no usable link: its {} link(s) are one-sided (the other ends do not list them)",
                    r.links.len()
                )
            };
        }
    }
    // Would it be reachable if everyone forwarded?
    let mut everyone = RoutingTable::new();
    for (path, record) in &snapshot.records {
        let _ = everyone.set_transit(path.clone(), true);
        let _ = everyone.replace_edges_from(path.clone(), record.peers());
    }
    if let Some(path) = everyone.path(from, to) {
        let blockers: Vec<String> = path[1..path.len().saturating_sub(1)]
            .iter()
            .filter(|hop| record(hop).is_some_and(|(_, r)| !r.forwards))
            .map(ToString::to_string)
            .collect();
        if !blockers.is_empty() {
            return format!(
                "only through instances that do not forward: {} (brokers run with --broker)",
                blockers.join(", ")
            );
        }
    }
    "no chain of usable links joins them".to_owned()
}

/// `dms route --from A --to B`.
pub(crate) async fn run(args: RouteArgs) -> Result<(), Failure> {
    let url = args.discovery.clone();
    with_discovery!(&url, |d| route(d, &url, &args))
}

async fn route<D: Discovery>(
    discovery: D,
    url: &DiscoveryUrl,
    args: &RouteArgs,
) -> Result<(), Failure> {
    let from = &args.from;
    let key = table_key(from).map_err(|e| Failure::Usage(format!("--from {from}: {e}")))?;
    let snapshot = read_table(&discovery, &key)
        .await
        .map_err(|e| unreachable(url, e))?;
    let destinations: Vec<ServicePath> = if let Ok(cluster) = args.to.parse::<ClusterPath>() {
        let found: Vec<ServicePath> = snapshot
            .records
            .iter()
            .map(|(p, _)| p)
            .filter(|p| cluster.contains(p))
            .cloned()
            .collect();
        if found.is_empty() {
            let why = format!("no instance of {cluster} has a link record in {key}");
            report_unreachable(args, from, cluster.as_str(), &why);
            return Err(Failure::Reported(Box::new(Failure::NoInstance(why))));
        }
        found
    } else {
        vec![args.to.parse::<ServicePath>().map_err(|e| {
            Failure::Usage(format!(
                "--to {:?} is neither an instance path (7 segments) nor a cluster path (6): {e}",
                args.to
            ))
        })?]
    };
    let mut table = snapshot.to_table();
    let mut unreachable_count = 0;
    for to in &destinations {
        if table_key(to).ok().as_ref() != Some(&key) {
            unreachable_count += 1;
            let why = format!(
                "{to} is in another routing table than {from} (routes stay within one /App/Area/Platform)"
            );
            report_unreachable(args, from, to.as_str(), &why);
            continue;
        }
        match kernel_path(&mut table, from, to) {
            Some((hops, total)) => {
                let too_long = hops.len() > usize::from(args.hop_limit);
                if too_long {
                    unreachable_count += 1;
                }
                if args.json {
                    let list: Vec<serde_json::Value> = hops
                        .iter()
                        .map(|(a, b, c)| {
                            serde_json::json!({"from": a.to_string(), "to": b.to_string(), "cost": c})
                        })
                        .collect();
                    let mut line = serde_json::json!({
                        "from": from.to_string(),
                        "to": to.to_string(),
                        "reachable": !too_long,
                        "hops": list,
                        "total_cost": total,
                        "revision": snapshot.revision,
                    });
                    if too_long {
                        line["why"] = serde_json::json!(format!(
                            "{} hops, more than the hop limit {}",
                            hops.len(),
                            args.hop_limit
                        ));
                    }
                    crate::print_line(&line.to_string());
                    continue;
                }
                let n = hops.len();
                let s = if n == 1 { "" } else { "s" };
                crate::print_line(&format!(
                    "route {from} -> {to}: {n} hop{s}, total cost {total} (routing table {key} at revision {})",
                    snapshot.revision
                ));
                if n == 0 {
                    crate::print_line("  (the same instance: delivered, not forwarded)");
                }
                for (i, (a, b, cost)) in hops.iter().enumerate() {
                    crate::print_line(&format!("  {:>2}. {a} -> {b}  cost {cost}", i + 1));
                }
                crate::print_line(&format!("  total cost {total}"));
                if too_long {
                    crate::print_line(&format!(
                        "  unusable: {n} hops, more than the hop limit {} (the message would be answered HOP_LIMIT_EXCEEDED)",
                        args.hop_limit
                    ));
                }
            }
            None => {
                unreachable_count += 1;
                let why = why_unreachable(&snapshot, &table, from, to);
                report_unreachable(args, from, to.as_str(), &why);
            }
        }
    }
    if unreachable_count == destinations.len() {
        let what = if destinations.len() == 1 {
            format!("{} is unreachable from {from}", destinations[0])
        } else {
            format!("no instance of {} is reachable from {from}", args.to)
        };
        return Err(Failure::Reported(Box::new(Failure::NoInstance(what))));
    }
    Ok(())
}

fn report_unreachable(args: &RouteArgs, from: &ServicePath, to: &str, why: &str) {
    if args.json {
        let line = serde_json::json!({
            "from": from.to_string(),
            "to": to,
            "reachable": false,
            "why": why,
        });
        crate::print_line(&line.to_string());
    } else {
        crate::print_line(&format!("unreachable: {to} from {from}: {why}"));
    }
}
