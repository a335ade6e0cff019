//! A call nobody records costs the logging and tracing pipeline nothing: with telemetry
//! installed and nothing exported, the server layer's work on a call allocates exactly what it
//! allocates with no subscriber at all, while the call still runs in a trace (its id for error
//! messages, its `traceparent` for outgoing calls and outbox rows). Allocations are counted per
//! thread by this binary's allocator. (Its own test binary: telemetry is installed once per
//! process, and the allocator is global.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use custops_common::layers::{MiddlewareLayer, ObserveMiddleware};
use custops_common::telemetry::{self, Exporters, LogFormat};
use custops_common::trace_context;
use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer as _, ServiceExt as _};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only a
// thread-local `Cell` that needs no allocation.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_in(work: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    work();
    ALLOCATIONS.with(Cell::get) - before
}

/// A lookup call through the server's observe layer to a handler that notes the trace id it
/// runs in and answers OK at once (trailers-only); what the layer allocates is what we count.
struct Call {
    runtime: tokio::runtime::Runtime,
    seen_trace_ids: Arc<Mutex<Vec<Option<String>>>>,
}

impl Call {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            runtime: tokio::runtime::Builder::new_current_thread().build()?,
            // Room for every call, so noting a trace id never grows the vector.
            seen_trace_ids: Arc::new(Mutex::new(Vec::with_capacity(64))),
        })
    }

    fn run(&self, traceparent: Option<&str>) -> anyhow::Result<()> {
        let seen = Arc::clone(&self.seen_trace_ids);
        let handler = tower::service_fn(move |_request: Request<Body>| {
            let seen = Arc::clone(&seen);
            async move {
                if let Ok(mut seen) = seen.lock() {
                    seen.push(trace_context::current_trace_id());
                }
                let mut response = Response::new(Body::empty());
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static("0"));
                Ok::<_, Infallible>(response)
            }
        });
        let service = MiddlewareLayer(ObserveMiddleware::new()).layer(handler);
        let mut request = Request::builder()
            .uri("/custops.segmentation.v1.SegmentService/CheckMembership")
            .body(Body::empty())?;
        if let Some(traceparent) = traceparent {
            request
                .headers_mut()
                .insert("traceparent", http::HeaderValue::from_str(traceparent)?);
        }
        let response = self.runtime.block_on(service.oneshot(request))?;
        anyhow::ensure!(response.headers().get("grpc-status").is_some());
        Ok(())
    }

    fn trace_ids(&self) -> Vec<Option<String>> {
        self.seen_trace_ids
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }
}

/// Calls measured in each mode.
const CALLS: usize = 20;

#[test]
fn a_call_nobody_records_allocates_nothing_in_the_tracing_pipeline() -> anyhow::Result<()> {
    let installed = telemetry::init("custops-test", LogFormat::Text, Exporters::None);
    assert!(installed.is_some(), "telemetry was installed elsewhere");
    let call = Call::new()?;
    // Made once: making a dispatcher allocates, using one does not.
    let no_subscriber = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    // Warm-up: statics, callsites and thread-locals are set up once, not per call.
    for _ in 0..3 {
        call.run(None)?;
        tracing::dispatcher::with_default(&no_subscriber, || call.run(None))?;
    }

    let mut with_telemetry = Vec::new();
    let mut without_subscriber = Vec::new();
    for _ in 0..CALLS {
        with_telemetry.push(allocations_in(|| {
            call.run(None).ok();
        }));
        without_subscriber.push(allocations_in(|| {
            tracing::dispatcher::with_default(&no_subscriber, || {
                call.run(None).ok();
            });
        }));
    }
    // The counter sees what the pipeline allocates: a span it does open allocates.
    let opened_span = allocations_in(|| {
        let span = tracing::info_span!("grpc.server", rpc.method = %"CheckMembership");
        drop(span);
    });
    assert!(
        opened_span > 0,
        "an opened span allocated nothing: the counter is blind"
    );
    // A call now and then allocates once more in either mode (the runtime's and the id
    // generator's own bookkeeping), so the calls are compared by their fewest.
    assert_eq!(
        with_telemetry.iter().min(),
        without_subscriber.iter().min(),
        "allocations of unrecorded calls with telemetry installed {with_telemetry:?}, \
         with no subscriber at all {without_subscriber:?}"
    );

    // Every call still ran in a trace: fresh ids, or the caller's unsampled trace carried on.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    call.run(Some(&format!("00-{caller_trace}-00f067aa0ba902b7-00")))?;
    let trace_ids = call.trace_ids();
    assert_eq!(trace_ids.len(), 2 * 3 + 2 * CALLS + 1);
    for trace_id in &trace_ids {
        let trace_id = trace_id.as_deref().unwrap_or_default();
        assert_eq!(trace_id.len(), 32, "{trace_id:?}");
    }
    assert_eq!(
        trace_ids.last().cloned().flatten().as_deref(),
        Some(caller_trace)
    );
    let distinct: std::collections::BTreeSet<_> = trace_ids.iter().collect();
    assert_eq!(
        distinct.len(),
        trace_ids.len(),
        "each new call is its own trace"
    );
    Ok(())
}
