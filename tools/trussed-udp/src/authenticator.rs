//! fido-authenticator on trussed's virtual platform, on its own thread.
//!
//! The trussed service runs on a second thread and is woken by each syscall (instead of
//! trussed's test runner, which polls every millisecond and cannot carry an interrupt flag
//! into the service context — we need one for CTAPHID_CANCEL).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ctaphid_app::{App as _, Command, Error as AppError};
use fido_authenticator::{Authenticator, Config, Conforming, FirmwareVersion};
use heapless_bytes::Bytes;
use trussed::backend::BackendId;
use trussed::pipe::{ServiceEndpoint, TrussedChannel};
use trussed::platform::{Syscall, UserInterface};
use trussed::service::Service;
use trussed::types::{ui::Status, CoreContext};
use trussed::virt::{self, StorageConfig, StoreConfig};
use trussed::ClientImplementation;
use trussed_core::types::{consent::Level, reboot::To};
use trussed_core::InterruptFlag;
use trussed_staging::virt::{BackendIds, Dispatcher};

use crate::ctaphid::{self, AppCommand, MAX_MESSAGE};

/// Set while a request runs; CTAPHID_CANCEL interrupts it. The service checks it while
/// it waits for user presence and the app then answers CTAP2_ERR_KEEPALIVE_CANCEL.
static INTERRUPT: InterruptFlag = InterruptFlag::new();

/// Backends of the single client: trussed-staging first (fs-info and hkdf extensions,
/// which fido-authenticator requires), then the core backend.
static BACKENDS: [BackendId<BackendIds>; 2] = [
    BackendId::Custom(BackendIds::StagingBackend),
    BackendId::Core,
];

/// Options of the virtual authenticator.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a user-presence check waits before it is confirmed automatically
    /// (0 = at once). Lets clients see KEEPALIVE UPNEEDED and test CANCEL.
    pub up_delay: Duration,
    /// Internal flash image file (persistent state); RAM when `None`.
    pub state_file: Option<PathBuf>,
    /// Resident-credential limit; `None` = as much as the 64 KiB flash holds.
    pub max_resident_credentials: Option<u32>,
    /// Seed for the trussed DRBG (fresh per boot in normal use).
    pub seed: [u8; 32],
}

/// A request for the authenticator thread.
#[derive(Debug)]
pub struct Job {
    pub command: AppCommand,
    pub payload: Vec<u8>,
}

/// What the UDP side needs to know while a request runs.
#[derive(Debug, Default)]
pub struct Shared {
    /// The service is waiting for user presence (KEEPALIVE status UPNEEDED).
    pub up_needed: AtomicBool,
}

/// Handle to the running authenticator.
#[derive(Debug)]
pub struct Handle {
    pub jobs: Sender<Job>,
    /// One answer per job: the response message or a CTAPHID error code.
    pub replies: Receiver<Result<Vec<u8>, u8>>,
    pub shared: Arc<Shared>,
    pub thread: JoinHandle<()>,
}

/// Asks the running request to stop (CTAPHID_CANCEL).
pub fn cancel() {
    INTERRUPT.interrupt();
}

/// Starts the authenticator thread.
pub fn spawn(opts: Options) -> std::io::Result<Handle> {
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let (replies_tx, replies_rx) = mpsc::channel();
    let shared = Arc::new(Shared::default());
    let ui_shared = shared.clone();
    let thread = thread::Builder::new()
        .name("authenticator".into())
        // fido-authenticator keeps large heapless buffers on the stack.
        .stack_size(16 << 20)
        .spawn(move || run(opts, ui_shared, jobs_rx, replies_tx))?;
    Ok(Handle {
        jobs: jobs_tx,
        replies: replies_rx,
        shared,
        thread,
    })
}

/// Wakes the service thread for each syscall.
struct WakeService(Sender<()>);

impl Syscall for WakeService {
    fn syscall(&mut self) {
        // The service thread only stops after every client is dropped, so this cannot fail
        // while a client exists; ignoring the result is safe.
        let _ = self.0.send(());
    }
}

type Client<'a> = ClientImplementation<'a, WakeService, Dispatcher>;

fn run(
    opts: Options,
    shared: Arc<Shared>,
    jobs: Receiver<Job>,
    replies: Sender<Result<Vec<u8>, u8>>,
) {
    let store = StoreConfig {
        internal: match &opts.state_file {
            Some(path) => StorageConfig::filesystem(path.clone()),
            None => StorageConfig::ram(),
        },
        external: StorageConfig::ram(),
        volatile: StorageConfig::ram(),
    };
    virt::with_platform(store, |mut platform| {
        use trussed::platform::Platform as _;
        platform.user_interface().set_inner(Box::new(AutoUp {
            shared: shared.clone(),
            delay: opts.up_delay,
            waiting_since: None,
        }));
        let channel = TrussedChannel::new();
        let Some((requester, responder)) = channel.split() else {
            eprintln!("trussed-udp: trussed channel already split");
            return;
        };
        let Ok(client_id) = "fido".try_into() else {
            eprintln!("trussed-udp: invalid trussed client id");
            return;
        };
        let context = CoreContext::with_interrupt(client_id, Some(&INTERRUPT));
        let mut endpoints = [ServiceEndpoint::new(responder, context, &BACKENDS)];
        let mut service = Service::with_dispatch(platform, Dispatcher::default());
        // virt's platform RNG has a fixed seed; trussed mixes this stored seed in.
        service.set_seed_if_uninitialized(&opts.seed);
        let (wake_tx, wake_rx) = mpsc::channel();
        let client: Client<'_> =
            ClientImplementation::new(requester, WakeService(wake_tx), Some(&INTERRUPT));

        thread::scope(|s| {
            s.spawn(move || {
                // Ends when the client (the only sender) is dropped.
                while wake_rx.recv().is_ok() {
                    service.process(&mut endpoints);
                }
            });
            let config = Config {
                max_msg_size: MAX_MESSAGE,
                skip_up_timeout: None,
                max_resident_credential_count: opts.max_resident_credentials,
                large_blobs: None,
                nfc_transport: false,
                ccid_transport: false,
                firmware_version: Some(FirmwareVersion::new(FIRMWARE_VERSION)),
                credential_id_version: None,
                // A long touch cannot be simulated meaningfully; a normal one resets.
                long_touch_for_reset: false,
                fido2_up_timeout: None,
            };
            let mut app = Authenticator::new(client, Conforming {}, config);
            for job in jobs {
                let command = match job.command {
                    AppCommand::Cbor => Command::Cbor,
                    AppCommand::Msg => Command::Msg,
                };
                let mut response = Bytes::<MAX_MESSAGE>::new();
                INTERRUPT.set_working();
                let result = app.call(command, &job.payload, response.as_mut_view());
                INTERRUPT.set_idle();
                shared.up_needed.store(false, Ordering::Relaxed);
                let reply = match result {
                    Ok(()) => Ok(response.to_vec()),
                    Err(AppError::InvalidLength) => Err(ctaphid::err::INVALID_LEN),
                    Err(AppError::InvalidCommand) => Err(ctaphid::err::INVALID_CMD),
                    Err(AppError::NoResponse) => Err(ctaphid::err::OTHER),
                };
                if replies.send(reply).is_err() {
                    break;
                }
            }
            // Dropping the app drops the client and with it the service's wake sender.
            drop(app);
        });
    });
}

/// getInfo firmwareVersion (0x0E): the fido-authenticator release this tool pins, 0.4.0.
const FIRMWARE_VERSION: usize = 0x0004_0000;

/// The virtual user: confirms every presence check, after `delay`.
struct AutoUp {
    shared: Arc<Shared>,
    delay: Duration,
    waiting_since: Option<Instant>,
}

impl UserInterface for AutoUp {
    fn check_user_presence(&mut self) -> Level {
        // set_status(WaitingForUserPresence) starts each wait; it is not always ended by
        // another set_status (timeouts and interrupts return early), hence the restart.
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.delay {
            return Level::Normal;
        }
        // The service polls in a tight loop; don't burn a core while "waiting for touch".
        thread::sleep(Duration::from_millis(5));
        Level::None
    }

    fn set_status(&mut self, status: Status) {
        let waiting = matches!(status, Status::WaitingForUserPresence);
        self.waiting_since = waiting.then(Instant::now);
        self.shared.up_needed.store(waiting, Ordering::Relaxed);
    }

    fn reboot(&mut self, to: To) -> ! {
        eprintln!("trussed-udp: authenticator asked for a reboot ({to:?}); exiting");
        std::process::exit(3)
    }
}
