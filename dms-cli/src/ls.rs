//! `dms ls` and `dms watch`: what discovery holds.

use std::collections::BTreeMap;

use dms::registration::Registration;
use dms::{Discovery, ServicePath};
use dms_discovery::{Key, WatchEvent, next_event};

use crate::discovery_url::{DiscoveryUrl, unreachable, with_discovery};
use crate::failure::Failure;

/// Options of `dms ls`.
#[derive(Debug, clap::Args)]
pub(crate) struct LsArgs {
    /// Discovery: etcd://host:port[,host:port...].
    #[arg(long)]
    discovery: DiscoveryUrl,
    /// Only what is under this path (e.g. /demo/cn or a cluster path).
    #[arg(default_value = "/")]
    prefix: String,
    /// One JSON object per instance.
    #[arg(long)]
    json: bool,
    /// The routing table instead (multi-hop forwarding): each instance's link record
    /// under PREFIX (whether it forwards, its links with their costs), each link marked
    /// usable (both ends list it) or one-sided (and why), and the records refused with
    /// why. With --json one object per record: {"table","revision","instance",
    /// "forwards","links":[{"to","cost","usable","usable_cost"|"why"}]}, or
    /// {"table","refused","why"}.
    #[arg(long)]
    routes: bool,
}

/// Options of `dms watch`.
#[derive(Debug, clap::Args)]
pub(crate) struct WatchArgs {
    /// Discovery: etcd://host:port[,host:port...].
    #[arg(long)]
    discovery: DiscoveryUrl,
    /// Only what is under this path.
    #[arg(default_value = "/")]
    prefix: String,
}

fn prefix_key(prefix: &str) -> Result<Option<Key>, Failure> {
    if prefix == "/" {
        return Ok(None);
    }
    Key::new(prefix.trim_end_matches('/'))
        .map(Some)
        .map_err(|e| Failure::Usage(format!("bad prefix {prefix:?}: {e}")))
}

/// The keys to read for `prefix`: itself, or for the root every application (`/App`)
/// that has an instance, found through the bucket claims every instance makes.
async fn roots<D: Discovery>(
    discovery: &D,
    url: &DiscoveryUrl,
    prefix: Option<&Key>,
) -> Result<Vec<Key>, Failure> {
    if let Some(key) = prefix {
        return Ok(vec![key.clone()]);
    }
    let claims = Key::new("/@dms/buckets").map_err(|e| Failure::Other(e.to_string()))?;
    let (entries, _) = discovery
        .list(&claims)
        .await
        .map_err(|e| unreachable(url, e))?;
    let mut apps: Vec<Key> = entries
        .iter()
        .filter_map(|e| {
            std::str::from_utf8(&e.value)
                .ok()?
                .parse::<ServicePath>()
                .ok()
        })
        .filter_map(|p| Key::new(format!("/{}", p.as_str().split('/').nth(1)?)).ok())
        .collect();
    apps.sort();
    apps.dedup();
    Ok(apps)
}

/// The registrations under `prefix` (the root: every application).
async fn registrations<D: Discovery>(
    discovery: &D,
    url: &DiscoveryUrl,
    prefix: Option<&Key>,
) -> Result<Vec<(ServicePath, Option<Registration>)>, Failure> {
    let roots = roots(discovery, url, prefix).await?;
    let mut found = Vec::new();
    for root in roots {
        let (entries, _) = discovery
            .list(&root)
            .await
            .map_err(|e| unreachable(url, e))?;
        for entry in entries {
            if let Ok(path) = entry.key.as_str().parse::<ServicePath>() {
                found.push((path, Registration::decode(&entry.value)));
            }
        }
    }
    Ok(found)
}

pub(crate) async fn run(args: LsArgs) -> Result<(), Failure> {
    let url = args.discovery.clone();
    with_discovery!(&url, |d| ls(d, &url, &args))
}

async fn ls<D: Discovery>(discovery: D, url: &DiscoveryUrl, args: &LsArgs) -> Result<(), Failure> {
    if args.routes {
        return crate::route::ls_routes(&discovery, url, &args.prefix, args.json).await;
    }
    let prefix = prefix_key(&args.prefix)?;
    let found = registrations(&discovery, url, prefix.as_ref()).await?;
    let mut clusters: BTreeMap<String, Vec<(ServicePath, Option<Registration>)>> = BTreeMap::new();
    for (path, registration) in found {
        clusters
            .entry(path.cluster().to_string())
            .or_default()
            .push((path, registration));
    }
    for (cluster, mut instances) in clusters {
        instances.sort_by_key(|(p, r)| (r.as_ref().map_or(u32::MAX, |r| r.bucket), p.clone()));
        if !args.json {
            crate::print_line(&format!("{cluster}  ({} instances)", instances.len()));
        }
        for (path, registration) in instances {
            let (state, bucket, endpoints) = match &registration {
                Some(r) => ("registered", Some(r.bucket), r.endpoints.clone()),
                None => ("unreadable", None, Vec::new()),
            };
            if args.json {
                let line = serde_json::json!({
                    "cluster": cluster,
                    "instance": path.instance(),
                    "path": path.to_string(),
                    "bucket": bucket,
                    "endpoints": endpoints,
                    "targets": registration.as_ref().map(|r| r.targets.clone()).unwrap_or_default(),
                    "state": state,
                });
                crate::print_line(&line.to_string());
            } else {
                let bucket = bucket.map_or("-".to_owned(), |b| b.to_string());
                crate::print_line(&format!(
                    "  {:<20} bucket {bucket:<3} {:<28} {state}",
                    path.instance(),
                    endpoints.join(",")
                ));
            }
        }
    }
    Ok(())
}

pub(crate) async fn watch(args: WatchArgs) -> Result<(), Failure> {
    let url = args.discovery.clone();
    with_discovery!(&url, |d| watch_with(d, &url, &args))
}

async fn watch_with<D: Discovery>(
    discovery: D,
    url: &DiscoveryUrl,
    args: &WatchArgs,
) -> Result<(), Failure> {
    let prefix = prefix_key(&args.prefix)?;
    let roots = roots(&discovery, url, prefix.as_ref()).await?;
    if roots.is_empty() {
        return Err(Failure::Usage(
            "nothing is registered yet: give a PREFIX to watch (e.g. /demo)".into(),
        ));
    }
    // One watch per root, merged (the root itself is not a key that can be watched).
    let (tx, mut events) = tokio::sync::mpsc::channel(1024);
    for root in roots {
        let (_, revision) = discovery
            .list(&root)
            .await
            .map_err(|e| unreachable(url, e))?;
        let mut stream = discovery
            .watch(&root, Some(revision))
            .await
            .map_err(|e| unreachable(url, e))?;
        crate::print_line(&format!("watching {root} from revision {revision}"));
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(event) = next_event(&mut stream).await {
                let stop = event.is_err();
                if tx.send(event).await.is_err() || stop {
                    return;
                }
            }
        });
    }
    drop(tx);
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match event {
            Some(Ok(WatchEvent::Put(entry))) => {
                let detail = Registration::decode(&entry.value)
                    .map(|r| format!("bucket {} {}", r.bucket, r.endpoints.join(",")))
                    .unwrap_or_else(|| String::from_utf8_lossy(&entry.value).into_owned());
                crate::print_line(&format!(
                    "{} PUT {} {detail}",
                    entry.mod_revision, entry.key
                ));
            }
            Some(Ok(WatchEvent::Delete { key, revision })) => {
                crate::print_line(&format!("{revision} DELETE {key}"))
            }
            Some(Err(error)) => return Err(unreachable(url, error)),
            None => return Err(Failure::Other("the watch ended".into())),
        }
    }
}
