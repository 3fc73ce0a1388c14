//! `wasi:io/streams` and `wasi:io/poll` that never block the calling thread.
//!
//! wasmtime-wasi's synchronous bindings run blocking stream and poll calls
//! through `Handle::block_on`, which panics on a tokio worker thread, where
//! `decide` runs. A blocking call would also escape the epoch deadline,
//! which only interrupts wasm code. So these bindings, linked over
//! wasmtime-wasi's, poll the operation once: if it is ready (plugin output
//! always is) it completes; if it would wait, the call traps, and the
//! request fails closed.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynPollable, StreamError, StreamResult};
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    HostInputStream as AsyncInput, HostOutputStream as AsyncOutput,
};

use super::sandbox::State;

const WOULD_BLOCK: &str = "a policy plugin may not block (wasi:io wait)";

/// Links the non-blocking bindings over those already in `linker`.
pub(crate) fn shadow_blocking_io(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    streams::add_to_linker::<State, NonBlocking>(linker, |s| Io(s.table()))?;
    poll::add_to_linker::<State, NonBlocking>(linker, |s| Io(s.table()))?;
    linker.allow_shadowing(false);
    Ok(())
}

struct NonBlocking;

impl HasData for NonBlocking {
    type Data<'a> = Io<'a>;
}

/// The instance's resource table, seen through the non-blocking bindings.
struct Io<'a>(&'a mut ResourceTable);

/// Polls `f` once: its output if ready, else None.
fn ready_now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

fn trap_if_blocked<T>(out: Option<wasmtime::Result<T>>) -> wasmtime::Result<T> {
    out.unwrap_or_else(|| Err(wasmtime::format_err!("{WOULD_BLOCK}")))
}

fn stream_trap_if_blocked<T>(out: Option<StreamResult<T>>) -> StreamResult<T> {
    out.unwrap_or_else(|| Err(StreamError::trap(WOULD_BLOCK)))
}

impl streams::Host for Io<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        let converted =
            wasmtime_wasi_io::bindings::wasi::io::streams::Host::convert_stream_error(self.0, err)?;
        Ok(converted.into())
    }
}

impl streams::HostOutputStream for Io<'_> {
    fn drop(&mut self, stream: Resource<streams::OutputStream>) -> wasmtime::Result<()> {
        trap_if_blocked(ready_now(AsyncOutput::drop(self.0, stream)))
    }

    fn check_write(&mut self, stream: Resource<streams::OutputStream>) -> StreamResult<u64> {
        AsyncOutput::check_write(self.0, stream)
    }

    fn write(
        &mut self,
        stream: Resource<streams::OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        AsyncOutput::write(self.0, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<streams::OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        stream_trap_if_blocked(ready_now(AsyncOutput::blocking_write_and_flush(
            self.0, stream, bytes,
        )))
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<streams::OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        stream_trap_if_blocked(ready_now(AsyncOutput::blocking_write_zeroes_and_flush(
            self.0, stream, len,
        )))
    }

    fn subscribe(
        &mut self,
        stream: Resource<streams::OutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        AsyncOutput::subscribe(self.0, stream)
    }

    fn write_zeroes(
        &mut self,
        stream: Resource<streams::OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        AsyncOutput::write_zeroes(self.0, stream, len)
    }

    fn flush(&mut self, stream: Resource<streams::OutputStream>) -> StreamResult<()> {
        AsyncOutput::flush(self.0, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<streams::OutputStream>) -> StreamResult<()> {
        stream_trap_if_blocked(ready_now(AsyncOutput::blocking_flush(self.0, stream)))
    }

    fn splice(
        &mut self,
        dst: Resource<streams::OutputStream>,
        src: Resource<streams::InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        AsyncOutput::splice(self.0, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<streams::OutputStream>,
        src: Resource<streams::InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        stream_trap_if_blocked(ready_now(AsyncOutput::blocking_splice(
            self.0, dst, src, len,
        )))
    }
}

impl streams::HostInputStream for Io<'_> {
    fn drop(&mut self, stream: Resource<streams::InputStream>) -> wasmtime::Result<()> {
        trap_if_blocked(ready_now(AsyncInput::drop(self.0, stream)))
    }

    fn read(&mut self, stream: Resource<streams::InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        AsyncInput::read(self.0, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<streams::InputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        stream_trap_if_blocked(ready_now(AsyncInput::blocking_read(self.0, stream, len)))
    }

    fn skip(&mut self, stream: Resource<streams::InputStream>, len: u64) -> StreamResult<u64> {
        AsyncInput::skip(self.0, stream, len)
    }

    fn blocking_skip(
        &mut self,
        stream: Resource<streams::InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        stream_trap_if_blocked(ready_now(AsyncInput::blocking_skip(self.0, stream, len)))
    }

    fn subscribe(
        &mut self,
        stream: Resource<streams::InputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        AsyncInput::subscribe(self.0, stream)
    }
}

impl poll::Host for Io<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        trap_if_blocked(ready_now(async_poll::Host::poll(self.0, pollables)))
    }
}

impl poll::HostPollable for Io<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        trap_if_blocked(ready_now(async_poll::HostPollable::ready(self.0, pollable)))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        trap_if_blocked(ready_now(async_poll::HostPollable::block(self.0, pollable)))
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}
