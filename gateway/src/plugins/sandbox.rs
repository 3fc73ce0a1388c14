//! What a plugin instance can reach: an empty WASI context (no files, env,
//! args, sockets or stdin), stdout/stderr into the tracing log, the `host`
//! interface's `log`, and a memory cap. Per instance, in its `Store`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::pipe::ClosedInputStream;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_io::bytes::Bytes;

use super::bindings::{Level, authgw, v0_1, v0_2, v0_3};

/// Longest line of plugin output or `log` message kept; the rest is cut.
const MAX_LINE: usize = 2048;

/// The data of one instance's `Store`.
pub(crate) struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// Set when the plugin asked for memory past its limit: a trap that
    /// follows is reported as [`super::FailureKind::Memory`].
    pub(crate) memory_exhausted: bool,
    /// The largest linear memory granted so far, in bytes (memories only
    /// grow, so this is the size of the largest one).
    pub(crate) memory_high: usize,
    /// The call's deadline, in CPU time ([`super::deadline`]).
    pub(crate) deadline: super::deadline::Deadline,
    plugin: Arc<str>,
}

impl State {
    pub(crate) fn new(plugin: Arc<str>, memory_limit: usize) -> State {
        let wasi = WasiCtx::builder()
            .stdin(ClosedInputStream)
            .stdout(LogStream::new(&plugin, "stdout"))
            .stderr(LogStream::new(&plugin, "stderr"))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_limit)
            .trap_on_grow_failure(true)
            .build();
        State {
            wasi,
            table: ResourceTable::new(),
            limits,
            memory_exhausted: false,
            memory_high: 0,
            deadline: super::deadline::Deadline::default(),
            plugin,
        }
    }

    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for State {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.limits.memory_growing(current, desired, maximum);
        if matches!(granted, Ok(true)) {
            self.memory_high = self.memory_high.max(desired);
        } else {
            self.memory_exhausted = true;
        }
        granted
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl authgw::policy::types::Host for State {}

impl v0_3::authgw::policy::types::Host for State {}

impl v0_3::authgw::policy::host::Host for State {
    fn log(&mut self, level: v0_3::Level, message: String) {
        let level = match level {
            v0_3::Level::Trace => Level::Trace,
            v0_3::Level::Debug => Level::Debug,
            v0_3::Level::Info => Level::Info,
            v0_3::Level::Warn => Level::Warn,
            v0_3::Level::Error => Level::Error,
        };
        authgw::policy::host::Host::log(self, level, message);
    }
}

impl v0_2::authgw::policy::types::Host for State {}

impl v0_2::authgw::policy::host::Host for State {
    fn log(&mut self, level: v0_2::Level, message: String) {
        let level = match level {
            v0_2::Level::Trace => Level::Trace,
            v0_2::Level::Debug => Level::Debug,
            v0_2::Level::Info => Level::Info,
            v0_2::Level::Warn => Level::Warn,
            v0_2::Level::Error => Level::Error,
        };
        authgw::policy::host::Host::log(self, level, message);
    }
}

impl v0_1::authgw::policy::types::Host for State {}

impl v0_1::authgw::policy::host::Host for State {
    fn log(&mut self, level: v0_1::Level, message: String) {
        let level = match level {
            v0_1::Level::Trace => Level::Trace,
            v0_1::Level::Debug => Level::Debug,
            v0_1::Level::Info => Level::Info,
            v0_1::Level::Warn => Level::Warn,
            v0_1::Level::Error => Level::Error,
        };
        authgw::policy::host::Host::log(self, level, message);
    }
}

impl authgw::policy::host::Host for State {
    fn log(&mut self, level: Level, message: String) {
        let plugin = &*self.plugin;
        let message = clip(&message);
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

fn clip(s: &str) -> &str {
    if s.len() <= MAX_LINE {
        return s;
    }
    let mut end = MAX_LINE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A plugin's stdout or stderr: each line becomes a tracing event (stdout at
/// info, stderr at warn) tagged with the plugin. Always ready, never blocks.
#[derive(Clone)]
struct LogStream {
    plugin: Arc<str>,
    stream: &'static str,
}

impl LogStream {
    fn new(plugin: &Arc<str>, stream: &'static str) -> LogStream {
        LogStream {
            plugin: plugin.clone(),
            stream,
        }
    }

    fn emit(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (plugin, stream, line) = (&*self.plugin, self.stream, clip(line));
            if stream == "stderr" {
                tracing::warn!(plugin, stream, "{line}");
            } else {
                tracing::info!(plugin, stream, "{line}");
            }
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// How much one write may carry.
const WRITE_BUDGET: usize = 64 * 1024;

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.emit(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.emit(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
