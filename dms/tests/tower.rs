//! Tower on both sides of a request (feature `tower`): a cluster as a `tower::Service`
//! behind timeout, concurrency-limit and buffer layers, and a node serving a
//! `tower::Service` behind concurrency-limit, timeout and load-shed layers, over real TCP.
#![cfg(all(feature = "tower", feature = "tcp"))]
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dms::service::{self, Client, Rejection, Request, TypedClient};
use dms::{ClusterPath, MemoryDiscovery, Multipart, Node, RequestError};
use dms_core::proto::control::codes;
use dms_test_support::wait::within;
use support::{cluster, instance};
use tokio::sync::{Semaphore, mpsc};
use tower::limit::ConcurrencyLimitLayer;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// How long the server's handlers may run.
const SERVER_TIMEOUT: Duration = Duration::from_millis(300);

/// Handlers in flight now, and the most seen at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> Guard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        Guard(self.clone())
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

struct Guard(Arc<InFlight>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The handler of the test servers: the first frame says what to do.
/// - `echo`: answers the payload after a short while (so that calls overlap);
/// - `hang`: never answers (a layer's timeout must);
/// - `reject`: fails with a `Rejection` of code 300;
/// - `fail`: fails with a plain error.
async fn handle(in_flight: Arc<InFlight>, request: Request) -> Result<Multipart, BoxError> {
    let _guard = in_flight.enter();
    let command = request.body().first().cloned().unwrap_or_default();
    match &command[..] {
        b"echo" => {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(request.into_body())
        }
        b"hang" => std::future::pending().await,
        b"reject" => Err(Rejection::new(300, "rejected on purpose").into()),
        _ => Err("the handler failed".into()),
    }
}

/// A node of `cluster_name` serving `handler`.
async fn server<S>(discovery: &MemoryDiscovery, cluster_name: &str, handler: S, max: usize) -> Node
where
    S: Service<Request, Response = Multipart> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let node = Node::builder(instance(cluster_name, "one"))
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    tokio::spawn(service::serve(node.clone(), handler, max));
    node
}

/// A node targeting `clusters`, once it sees one live instance of each.
async fn client_node(discovery: &MemoryDiscovery, clusters: &[&ClusterPath]) -> Node {
    let mut builder = Node::builder(instance("Lobby", "lobby-1")).discovery(discovery.clone());
    for &target in clusters {
        builder = builder.target(target.clone());
    }
    let node = builder.start().await.unwrap();
    for &target in clusters {
        within(
            "the server's instance",
            node.wait_for_instances(target, 1, Duration::from_secs(10)),
        )
        .await
        .unwrap();
    }
    node
}

fn body(frames: &[&'static str]) -> Multipart {
    Multipart::from_frames(frames.iter().copied())
}

/// The code of a remote error behind a tower error.
fn remote(error: &BoxError) -> (u16, String) {
    match error.downcast_ref::<RequestError>() {
        Some(RequestError::Remote { code, detail }) => (*code, detail.clone()),
        _ => panic!("expected a remote error, got {error:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_compose_on_both_sides() {
    const SERVER_LIMIT: usize = 3;
    const SERVE_LIMIT: usize = 2;
    let discovery = MemoryDiscovery::new();

    // Echo: the limit is a layer (serve would allow 16).
    let limited = Arc::new(InFlight::default());
    let counted = limited.clone();
    let handler = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(SERVER_LIMIT))
        .layer(TimeoutLayer::new(SERVER_TIMEOUT))
        .service_fn(move |request| handle(counted.clone(), request));
    let _echo = server(&discovery, "Echo", handler, 16).await;
    // Bounded: no limit layer, serve's own bound.
    let bounded = Arc::new(InFlight::default());
    let counted = bounded.clone();
    let handler = ServiceBuilder::new()
        .layer(TimeoutLayer::new(SERVER_TIMEOUT))
        .service_fn(move |request| handle(counted.clone(), request));
    let _bounded = server(&discovery, "Bounded", handler, SERVE_LIMIT).await;

    let (echo, bounded_cluster) = (cluster("Echo"), cluster("Bounded"));
    let lobby = client_node(&discovery, &[&echo, &bounded_cluster]).await;
    let key = |body: &Multipart| body.get_key();
    let clients = [echo.clone(), bounded_cluster.clone()].map(|target| {
        ServiceBuilder::new()
            .buffer(64)
            .layer(TimeoutLayer::new(Duration::from_secs(5)))
            .layer(ConcurrencyLimitLayer::new(8))
            .service(Client::new(lobby.clone(), target, key))
    });

    // Many overlapping calls: every reply comes back, the servers never run more
    // handlers than their limits, and they did run several at once.
    for (client, in_flight, limit) in [
        (&clients[0], &limited, SERVER_LIMIT),
        (&clients[1], &bounded, SERVE_LIMIT),
    ] {
        let calls: Vec<_> = (0..40)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let player = format!("player-{i}");
                    let sent = Multipart::from_frames(["echo".to_owned(), player]);
                    let reply = client.oneshot(sent.clone()).await.unwrap();
                    assert_eq!(reply.body, sent);
                    assert_eq!(reply.from.instance(), "one");
                })
            })
            .collect();
        for call in calls {
            within("an echo reply", call).await.unwrap();
        }
        let max = in_flight.max();
        assert!(max <= limit, "{max} handlers ran at once, limit {limit}");
        assert!(max > 1, "the calls never overlapped");
    }

    // A handler beyond the server's timeout: HANDLER_FAILED, well before the client's.
    let started = tokio::time::Instant::now();
    let error = within(
        "a timed-out handler",
        clients[0].clone().oneshot(body(&["hang"])),
    )
    .await
    .unwrap_err();
    assert_eq!(
        remote(&error),
        (codes::HANDLER_FAILED, "the handler timed out".into())
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Errors choose their codes; a plain one is HANDLER_FAILED with its text.
    let error = clients[0]
        .clone()
        .oneshot(body(&["reject"]))
        .await
        .unwrap_err();
    assert_eq!(remote(&error), (300, "rejected on purpose".into()));
    let error = clients[1]
        .clone()
        .oneshot(body(&["fail"]))
        .await
        .unwrap_err();
    assert_eq!(
        remote(&error),
        (codes::HANDLER_FAILED, "the handler failed".into())
    );

    // The client's own timeout, shorter than the server's: a tower timeout error.
    let impatient = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(50)))
        .layer(ConcurrencyLimitLayer::new(1))
        .service(Client::new(lobby.clone(), echo.clone(), |_: &Multipart| {
            0u64
        }));
    let error = within("the client's timeout", impatient.oneshot(body(&["hang"])))
        .await
        .unwrap_err();
    assert!(
        error.is::<Elapsed>(),
        "expected a tower timeout, got {error:?}"
    );

    // The servers still answer.
    let reply = clients[1]
        .clone()
        .oneshot(body(&["echo", "again"]))
        .await
        .unwrap();
    assert_eq!(reply.body, body(&["echo", "again"]));
}

/// The dispatch key of the test payloads: their second frame (or 0).
trait Key {
    fn get_key(&self) -> u64;
}

impl Key for Multipart {
    fn get_key(&self) -> u64 {
        self.frames()
            .get(1)
            .map_or(0, |frame| dms_core::path::hash64(frame))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_shed_answers_overloaded_when_saturated() {
    let discovery = MemoryDiscovery::new();
    // One handler at a time; the one running waits for `release`.
    let (started_tx, mut started) = mpsc::channel(8);
    let release = Arc::new(Semaphore::new(0));
    let gate = release.clone();
    let handler = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .service_fn(move |request: Request| {
            let (started, gate) = (started_tx.clone(), gate.clone());
            async move {
                started.send(()).await.unwrap();
                gate.acquire().await.unwrap().forget();
                Ok::<_, Infallible>(request.into_body())
            }
        });
    let _shed = server(&discovery, "Shed", handler, 16).await;
    let shed = cluster("Shed");
    let lobby = client_node(&discovery, &[&shed]).await;
    let client = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(10)))
        .layer(ConcurrencyLimitLayer::new(8))
        .service(Client::new(lobby.clone(), shed.clone(), |_: &Multipart| {
            0u64
        }));

    let held = tokio::spawn(client.clone().oneshot(body(&["held"])));
    within("the first handler", started.recv()).await.unwrap();
    // Saturated: refused at once, not queued.
    for _ in 0..3 {
        let error = within("a shed request", client.clone().oneshot(body(&["more"])))
            .await
            .unwrap_err();
        let (code, detail) = remote(&error);
        assert_eq!(code, codes::OVERLOADED, "{detail}");
    }
    // Released: the held request is answered, and the next one is served again.
    release.add_permits(1);
    let reply = within("the held reply", held).await.unwrap().unwrap();
    assert_eq!(reply.body, body(&["held"]));
    release.add_permits(1);
    let reply = within("a served request", client.oneshot(body(&["after"])))
        .await
        .unwrap();
    assert_eq!(reply.body, body(&["after"]));
    assert!(
        started.try_recv().is_ok(),
        "the handler ran for the last request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_client_and_handler() {
    let discovery = MemoryDiscovery::new();
    let handler = tower::service_fn(|request: Request| async move {
        let n: u64 = request.decode()?;
        let doubled = n
            .checked_mul(2)
            .ok_or_else(|| Rejection::new(301, "too large to double"))?;
        service::encode(&doubled)
    });
    let _double = server(&discovery, "Double", handler, 4).await;
    let double = cluster("Double");
    let lobby = client_node(&discovery, &[&double]).await;

    let typed = TypedClient::<u64, u64>::new(lobby.clone(), double.clone(), |n: &u64| *n);
    assert_eq!(typed.clone().oneshot(21).await.unwrap(), 42);
    let error = typed.oneshot(u64::MAX).await.unwrap_err();
    assert!(
        matches!(error, RequestError::Remote { code: 301, .. }),
        "{error:?}"
    );
    // Two frames are no typed payload: BAD_REQUEST.
    let raw = Client::new(lobby.clone(), double.clone(), |_: &Multipart| 0u64);
    let error = raw.oneshot(body(&["a", "b"])).await.unwrap_err();
    assert!(
        matches!(
            error,
            RequestError::Remote {
                code: codes::BAD_REQUEST,
                ..
            }
        ),
        "{error:?}"
    );
    // A reply of another type: a decode error at the requester.
    let strings = TypedClient::<u64, String>::new(lobby, double, |_: &u64| 0u64);
    let error = strings.oneshot(1).await.unwrap_err();
    assert!(matches!(error, RequestError::Decode(_)), "{error:?}");
}
