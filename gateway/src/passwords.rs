//! Password hashing: argon2id, PHC strings, OWASP parameters by default.
//!
//! The server hashes through [`Hasher`], which runs argon2 on threads of its
//! own, one per slot of a semaphore sized to the CPUs, and refuses work
//! beyond a bounded queue, so a login flood queues (then gets 503) instead
//! of starving the server. The CLI calls the same functions directly.
//!
//! Its own threads, not tokio's blocking pool: each argon2id hash needs its
//! memory cost (19 MiB by default), and the allocator keeps such blocks
//! per thread arena once freed. Spread over the blocking pool's many
//! threads, 200 logins left the process 600 MiB larger. On `slots`
//! threads it still varied (160 to 510 MiB over 200 logins), so a
//! verification now runs in memory its thread keeps from one login to the
//! next ([`verify`]): `slots` blocks for the life of the process.
//!
//! Those threads run at `passwords.priority` (`SCHED_IDLE` by default on
//! Linux): a hash takes only CPU time the threads serving requests leave,
//! so a login flood lengthens the logins' own wait, not the proxy's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use tokio::sync::Semaphore;

use crate::config::{HashingPriority, PasswordConfig};
use crate::error::{Error, Result};

/// Shortest accepted new password, in characters (Unicode scalar values:
/// what JSON Schema's `minLength` counts, so the API document can say it).
pub const MIN_CHARS: usize = 8;
/// Longest accepted new password, in characters.
pub const MAX_CHARS: usize = 1024;
/// Longest password the hasher is ever given, in bytes: `MAX_CHARS` of the
/// widest UTF-8. The cap protects the hasher at login.
pub const MAX_LEN: usize = 4 * MAX_CHARS;

/// Checks a new password's length and that it differs from the login.
/// `field` names the request field in the error.
pub fn validate_new(field: &str, password: &str, login: &str) -> Result<()> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(Error::invalid(
            field,
            format!("must be at least {MIN_CHARS} characters"),
        ));
    }
    if chars > MAX_CHARS {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_CHARS} characters"),
        ));
    }
    if password.eq_ignore_ascii_case(login) {
        return Err(Error::invalid(field, "must differ from the login"));
    }
    Ok(())
}

fn argon2(config: &PasswordConfig) -> Result<Argon2<'static>> {
    let params = Params::new(
        config.memory_kib,
        config.iterations,
        config.parallelism,
        None,
    )
    .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` into a PHC string (`$argon2id$v=19$m=...`), with a
/// fresh 16-byte salt, in freshly allocated memory (the CLI, the dummy hash
/// at start-up). CPU-heavy: call it off the async runtime.
pub fn hash(config: &PasswordConfig, password: &str) -> Result<String> {
    hash_in(config, password, Memory::Fresh)
}

/// Where a hash's argon2 memory comes from.
#[derive(Clone, Copy)]
enum Memory {
    /// Allocated for the hash and freed after it.
    Fresh,
    /// The calling thread's kept memory ([`with_memory`]): only on the
    /// hashing threads, which keep it for their life anyway.
    Kept,
}

/// [`hash`], as argon2's own `hash_password` computes it (the same PHC
/// string, a salt from the OS), but with its memory from `memory`.
fn hash_in(config: &PasswordConfig, password: &str, memory: Memory) -> Result<String> {
    use argon2::password_hash::phc::{Output, ParamsString, Salt};
    let internal = |e: &dyn std::fmt::Display| Error::Internal(format!("argon2: {e}"));
    let context = argon2(config)?;
    let salt = argon2::password_hash::try_generate_salt().map_err(|e| internal(&e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let mut run = |blocks: &mut [argon2::Block]| {
        context.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, blocks)
    };
    let blocks = context.params().block_count();
    match memory {
        Memory::Fresh => run(&mut vec![argon2::Block::default(); blocks]),
        Memory::Kept => with_memory(blocks, run),
    }
    .map_err(|e| internal(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(context.params()).map_err(|e| internal(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| internal(&e))?),
        hash: Some(Output::new(&out).map_err(|e| internal(&e))?),
    };
    Ok(phc.to_string())
}

/// Verifies `password` against a PHC string; the hash's own parameters
/// apply. As argon2's own `verify_password` (the output compared in
/// constant time), but in the calling thread's kept memory (`MEMORY`):
/// the thread holds the largest hash's memory cost (19 MiB by default) for
/// its life. The server calls it only on the hashing threads
/// ([`Hasher::verify`]); called on a pool's threads, each would keep its own.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut buffer = [0u8; argon2::password_hash::phc::Output::MAX_LENGTH];
    let Some(out) = buffer.get_mut(..expected.len()) else {
        return false;
    };
    let blocks = params.block_count();
    let context = Argon2::new(algorithm, version, params);
    let hashed = with_memory(blocks, |memory| {
        context
            .hash_password_into_with_memory(password.as_bytes(), salt.as_ref(), out, memory)
            .is_ok()
    });
    // Output's equality is constant-time.
    hashed
        && argon2::password_hash::phc::Output::new(out).is_ok_and(|computed| &computed == expected)
}

thread_local! {
    /// The thread's argon2 memory, kept from one verification (or, on the
    /// hashing threads, one new hash: signup, password change) to the next:
    /// allocated once per hashing thread instead of 19 MiB allocated,
    /// faulted in and freed per login. glibc's arenas kept what the
    /// per-login blocks freed, unevenly: 200 logins left a test process
    /// 160 to 510 MiB larger from one run to the next.
    static MEMORY: std::cell::RefCell<Vec<argon2::Block>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on `blocks` argon2 blocks of the thread's kept memory (grown
/// when a hash asks for more); a fresh allocation if it is in use.
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [argon2::Block]) -> T) -> T {
    MEMORY.with(|memory| match memory.try_borrow_mut() {
        Ok(mut memory) => {
            if memory.len() < blocks {
                memory.resize(blocks, argon2::Block::default());
            }
            f(&mut memory[..blocks])
        }
        Err(_) => f(&mut vec![argon2::Block::default(); blocks]),
    })
}

/// Runs argon2 for the server: bounded concurrency, bounded queue.
#[derive(Clone)]
pub struct Hasher {
    config: Arc<PasswordConfig>,
    slots: Arc<Semaphore>,
    workers: Workers,
    bound: usize,
    capacity: usize,
    waiting: Arc<AtomicUsize>,
    running: Arc<Running>,
    /// A hash of a random password with the configured parameters: unknown
    /// logins are verified against it so they take as long as known ones.
    dummy: Arc<str>,
}

/// Hashes computing now, the most ever at once, and how many have run.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads: they take jobs from one queue until the last
/// [`Hasher`] clone is dropped.
#[derive(Clone)]
struct Workers {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Workers {
    fn start(threads: usize, priority: HashingPriority) -> Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    set_priority(priority);
                    loop {
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panic fails that hash (its result channel is
                        // dropped), not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .map_err(|e| Error::Internal(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(Self { jobs })
    }

    fn run(&self, job: Job) -> Result<()> {
        self.jobs
            .send(job)
            .map_err(|_| Error::Unavailable("hasher closed".into()))
    }
}

/// Puts the calling thread at `priority`. Lowering one's own priority
/// needs no privilege; where it is refused all the same (a seccomp
/// profile), the thread logs why and hashes at normal priority.
fn set_priority(priority: HashingPriority) {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        let policy = match priority {
            HashingPriority::Idle => NormalThreadSchedulePolicy::Idle,
            // Min is nice 19 for the normal policies.
            HashingPriority::Low => NormalThreadSchedulePolicy::Batch,
            HashingPriority::Normal => return,
        };
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(policy),
        ) {
            tracing::warn!(error = ?e, ?priority, "cannot lower a hashing thread's priority; it hashes at normal priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

/// Takes one off [`Running::now`] when dropped (also if the hash panics).
struct Leave(Arc<Running>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What `/metrics` shows of the hasher.
#[derive(Debug, Clone, Copy, Default)]
pub struct HasherStats {
    /// Hash requests computing or waiting for a slot.
    pub queued: usize,
    /// Hashes computing now.
    pub running: usize,
    /// The most hashes ever computing at once since start.
    pub running_max: usize,
    /// Hashes computed (or being computed) since start.
    pub total: usize,
    /// The configured bound on `running`.
    pub slots: usize,
}

impl Hasher {
    pub fn new(config: &PasswordConfig) -> Result<Self> {
        let slots = if config.max_concurrent == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            config.max_concurrent
        };
        let dummy = hash(config, &uuid::Uuid::new_v4().to_string())?;
        Ok(Self {
            config: Arc::new(config.clone()),
            slots: Arc::new(Semaphore::new(slots)),
            bound: slots,
            capacity: slots + config.max_queue,
            waiting: Arc::new(AtomicUsize::new(0)),
            running: Arc::default(),
            workers: Workers::start(slots, config.priority)?,
            dummy: dummy.into(),
        })
    }

    /// Runs `f` on the blocking pool once a slot is free. The slot (and the
    /// place in the queue) belongs to the blocking closure: a caller that
    /// goes away (a client that disconnects) frees it only when the hash it
    /// started has finished, so hashes computing never exceed the slots.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let before = self.waiting.fetch_add(1, Ordering::SeqCst);
        let queued = Decrement(self.waiting.clone());
        if before >= self.capacity {
            return Err(Error::Busy {
                retry_after: Duration::from_secs(1),
            });
        }
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("hasher closed".into()))?;
        let running = self.running.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        self.workers.run(Box::new(move || {
            let _permit = permit;
            let _queued = queued;
            let now = running.now.fetch_add(1, Ordering::SeqCst) + 1;
            running.max.fetch_max(now, Ordering::SeqCst);
            running.total.fetch_add(1, Ordering::SeqCst);
            let _running = Leave(running);
            let _ = done.send(f());
        }))?;
        result
            .await
            .map_err(|_| Error::Internal("password hash failed".into()))
    }

    /// Hash requests running or waiting for a slot (a metrics gauge).
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The hasher's gauges for `/metrics`.
    pub fn stats(&self) -> HasherStats {
        HasherStats {
            queued: self.queue_depth(),
            running: self.running.now.load(Ordering::Relaxed),
            running_max: self.running.max.load(Ordering::Relaxed),
            total: self.running.total.load(Ordering::Relaxed),
            slots: self.bound,
        }
    }

    pub async fn hash(&self, password: String) -> Result<String> {
        let config = self.config.clone();
        self.run(move || hash_in(&config, &password, Memory::Kept))
            .await?
    }

    /// Verifies against `phc`, or against the dummy hash when there is no
    /// user (the result is then always false, after the same amount of work).
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool> {
        let real = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.to_string());
        let ok = self.run(move || verify(&password, &phc)).await?;
        Ok(real && ok)
    }
}

/// Takes one off a count when dropped (also when the caller is cancelled).
struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes are argon2id PHC strings with the configured parameters, and
    /// verify only the right password.
    #[test]
    fn hash_and_verify() {
        let phc = hash(&PasswordConfig::default(), "correct horse").unwrap_or_default();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse", &phc));
        assert!(!verify("wrong horse", &phc));
        assert!(!verify("correct horse", "not a phc string"));
    }

    /// A hash in fresh or kept memory is the PHC string argon2's own
    /// `hash_password_with_salt` makes for that salt, argon2's own verifier
    /// accepts it, and every hash has a salt of its own.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn hashes_in_either_memory_are_argon2s_own() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let small = PasswordConfig {
            memory_kib: 1024,
            ..PasswordConfig::default()
        };
        for config in [PasswordConfig::default(), small] {
            let context = argon2(&config).unwrap();
            let mut salts = std::collections::HashSet::new();
            for memory in [Memory::Fresh, Memory::Kept, Memory::Kept] {
                let phc = hash_in(&config, "correct horse", memory).unwrap();
                let parsed = PasswordHash::new(&phc).unwrap();
                let salt = parsed.salt.unwrap();
                assert!(salts.insert(salt.as_ref().to_vec()), "a salt repeated");
                assert_eq!(salt.as_ref().len(), 16);
                let theirs = context
                    .hash_password_with_salt(b"correct horse", salt.as_ref())
                    .unwrap();
                assert_eq!(phc, theirs.to_string());
                assert!(context.verify_password(b"correct horse", &parsed).is_ok());
                assert!(context.verify_password(b"wrong horse", &parsed).is_err());
                assert!(verify("correct horse", &phc));
            }
        }
    }

    /// `verify` in the thread's kept memory agrees with argon2's own
    /// `verify_password` on hashes of other parameters and variants than
    /// the configured ones (each bigger or smaller than the memory kept
    /// from the one before), on wrong passwords and on damaged strings.
    #[test]
    fn verify_agrees_with_argon2s_own() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let own = |password: &str, phc: &str| {
            PasswordHash::new(phc).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        };
        let mut hashes = Vec::new();
        for (algorithm, m, t, p, len) in [
            (Algorithm::Argon2id, 19_456, 2, 1, None),
            (Algorithm::Argon2id, 8_192, 1, 1, Some(16)),
            (Algorithm::Argon2i, 4_096, 3, 2, Some(64)),
            (Algorithm::Argon2id, 32_768, 1, 1, None),
            (Algorithm::Argon2d, 1_024, 1, 1, None),
        ] {
            let Ok(params) = Params::new(m, t, p, len) else {
                panic!("params {m} {t} {p}")
            };
            let phc = Argon2::new(algorithm, Version::V0x13, params)
                .hash_password(b"correct horse")
                .map(|h| h.to_string())
                .unwrap_or_default();
            hashes.push(phc);
        }
        let mut damaged = hashes[0].clone();
        damaged.pop();
        damaged.push('A');
        hashes.push(damaged);
        hashes.push(hashes[1].replace("$argon2id$", "$argon2i$"));
        hashes.push("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ".into());
        for phc in &hashes {
            for password in ["correct horse", "wrong horse", ""] {
                assert_eq!(
                    verify(password, phc),
                    own(password, phc),
                    "{password:?} {phc}"
                );
            }
        }
        assert!(verify("correct horse", &hashes[3]) && verify("correct horse", &hashes[4]));
    }

    /// Length bounds and the login rule.
    #[test]
    fn validation() {
        assert!(validate_new("password", "short", "bob").is_err());
        assert!(validate_new("password", &"x".repeat(1025), "bob").is_err());
        assert!(validate_new("password", "BobTheUser", "bobtheuser").is_err());
        assert!(validate_new("password", "long enough", "bob").is_ok());
    }

    /// The hashing threads run at the configured priority, as the kernel
    /// sees it (`/proc/thread-self/stat`: nice is field 19, the policy field
    /// 41; 0 = SCHED_OTHER, 3 = SCHED_BATCH, 5 = SCHED_IDLE).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_the_configured_priority() {
        for (priority, policy, nice) in [
            (HashingPriority::Idle, "5", "0"),
            (HashingPriority::Low, "3", "19"),
            (HashingPriority::Normal, "0", "0"),
        ] {
            let config = PasswordConfig {
                max_concurrent: 1,
                priority,
                ..PasswordConfig::default()
            };
            let Ok(hasher) = Hasher::new(&config) else {
                panic!("hasher")
            };
            let stat = hasher
                .run(|| std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default())
                .await
                .unwrap_or_default();
            // Fields after the command name (which may hold spaces) start at 3.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            assert_eq!(
                (fields.get(41 - 3).copied(), fields.get(19 - 3).copied()),
                (Some(policy), Some(nice)),
                "{priority:?}: {stat}"
            );
        }
    }

    /// Beyond slots + queue, the hasher answers Busy instead of queueing forever.
    #[tokio::test]
    async fn queue_is_bounded() {
        let config = PasswordConfig {
            max_concurrent: 1,
            max_queue: 0,
            ..PasswordConfig::default()
        };
        let Ok(hasher) = Hasher::new(&config) else {
            panic!("hasher")
        };
        // One hash in flight fills the only slot.
        hasher.waiting.fetch_add(1, Ordering::SeqCst);
        let busy = hasher.hash("password two".into()).await;
        assert!(matches!(busy, Err(Error::Busy { .. })), "{busy:?}");
        hasher.waiting.fetch_sub(1, Ordering::SeqCst);
        assert!(hasher.hash("password two".into()).await.is_ok());
    }
}
