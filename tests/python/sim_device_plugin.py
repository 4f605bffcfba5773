"""pytest plugin: python-fido2's own device test suite against a simulated YubiKey.

The `fido2` sdist ships `tests/device/` — Yubico's tests for real authenticators. Its
conftest finds a key through `fido2.hid` (list_descriptors / open_connection /
open_device) and asks a person, through a `Printer`, to touch the key or to remove and
insert it. This plugin leaves the tests themselves untouched and changes only those two
seams, in the conftest's own namespace once pytest has loaded it:

* discovery: one descriptor, path `udp:127.0.0.1:PORT`, for a key served by
  `prereg-station sim serve` over the UDP HID bridge (SPEC §10: one datagram = one
  64-byte report, no report id); opening it gives a `CtapHidDevice` on a UDP socket;
* the person: "remove" unplugs the simulated key (its descriptor disappears, as a USB
  device's does) and "insert" plugs it back, which powers it up again — volatile state
  lost, the 3-wrong-PINs-per-power-cycle counter and the reset window restart, exactly
  what the suite's reconnect tests check. Touch prompts need no action: the key runs
  with `--touch auto`.

The plugin starts the simulator itself (once per session, lazily: the conftest probes
for keys before `pytest_configure`'s fixtures exist) and stops it at the end.

Use: `pytest -p sim_device_plugin --sim-profile yubikey-5.7 <sdist>/tests/device`
with this directory on PYTHONPATH; tests/python/run-device-suite.sh does that for
every profile.
"""

import atexit
import logging
import os
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

logger = logging.getLogger("sim_device_plugin")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = ROOT / "target" / "debug" / "prereg-station"
# Yubico's vendor id and the YubiKey 5 OTP+FIDO+CCID product id: what a real key's HID
# descriptor carries (the suite does not check them, but a descriptor needs values).
VID, PID = 0x1050, 0x0407
# A real HID read blocks until the key answers; a simulated key that stops answering
# should fail the test, not hang the run. Keepalives arrive every 100 ms while the key
# is busy, so this bounds only silence.
READ_TIMEOUT_S = 15


class UdpConnection(CtapHidConnection):
    """A CtapHidConnection over the UDP HID bridge: one datagram = one 64-byte report."""

    def __init__(self, addr):
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(READ_TIMEOUT_S)

    def write_packet(self, data):
        if len(data) != 64:
            raise ValueError(f"a CTAPHID report is 64 bytes, got {len(data)}")
        self.sock.sendto(bytes(data), self.addr)

    def read_packet(self):
        while True:
            data, sender = self.sock.recvfrom(2048)
            # Only the key's own address speaks on this socket; anything else is noise.
            if sender == self.addr and len(data) == 64:
                return data
            logger.warning("ignoring %d-byte datagram from %s", len(data), sender)

    def close(self):
        self.sock.close()


class SimServer:
    """One `prereg-station sim serve` process with one key, driven over stdin."""

    def __init__(self, binary, profile, seed):
        self.profile = profile
        self._lock = threading.Lock()
        # A file, not a pipe: nobody reads the simulator's log while the suite runs,
        # and a full pipe would stall the key.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [
                str(binary), "sim", "serve", "--profile", profile,
                "--udp", "127.0.0.1:0", "--count", "1", "--touch", "auto",
                "--seed", str(seed),
            ],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        line = self.proc.stdout.readline()
        # "sim key 0: profile P product N serial S udp 127.0.0.1:PORT"
        if " udp " not in line:
            self.stop()
            self.log.seek(0)
            err = self.log.read()
            raise RuntimeError(f"sim serve did not start: {line!r} {err}")
        host, port = line.rsplit(" udp ", 1)[1].strip().rsplit(":", 1)
        self.addr = (host, int(port))
        self.present = True
        logger.info("simulated key up: %s", line.strip())

    @property
    def path(self):
        return f"udp:{self.addr[0]}:{self.addr[1]}"

    def control(self, line):
        """One stdin control line (`unplug 0`, `plug 0`, …); returns the answer line."""
        with self._lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline().strip()
        if not answer.startswith("ok"):
            raise RuntimeError(f"sim serve refused {line!r}: {answer!r}")
        return answer

    def remove(self):
        self.control("unplug 0")
        self.present = False

    def insert(self):
        self.control("plug 0")
        self.present = True

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_server = None
_options = {"profile": None, "bin": None, "seed": 15}


def server():
    global _server
    if _server is None:
        binary = Path(_options["bin"] or os.environ.get("PREREG_STATION_BIN", DEFAULT_BIN))
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run cargo build first")
        _server = SimServer(binary, _options["profile"], _options["seed"])
        atexit.register(_server.stop)
    return _server


def _descriptor():
    s = server()
    return HidDescriptor(s.path, VID, PID, 64, 64, f"simulated {s.profile}", None)


def list_descriptors():
    # Cheap: the conftest polls this every 0.1-0.5 s while it waits for a (re)insert.
    return [_descriptor()] if server().present else []


def open_connection(descriptor):
    s = server()
    if descriptor.path != s.path or not s.present:
        raise OSError(f"no such device: {descriptor.path}")
    return UdpConnection(s.addr)


def open_device(path):
    d = _descriptor()
    if path != d.path:
        raise OSError(f"no such device: {path}")
    return CtapHidDevice(d, open_connection(d))


class SimPrinter:
    """Stands in for the suite's Printer: the person at the bench is the simulator."""

    def __init__(self, capmanager=None):
        self.capmanager = capmanager

    def print(self, *messages):
        for m in messages:
            logger.info("suite says: %s", m)

    def touch(self):
        # --touch auto: the key counts every user-presence check as touched.
        logger.info("suite asks for a touch (automatic)")

    def remove(self, nfc=False):
        logger.info("suite asks to remove the key: unplugging it")
        server().remove()

    def insert(self, nfc=False):
        logger.info("suite asks to insert the key: plugging it in (power-up)")
        server().insert()


# ---- every skip must be for something the key does not advertise ----
#
# The suite skips a test when the authenticator lacks a feature. On a simulated key
# that is only acceptable when its getInfo really does not offer the feature (issue
# #15: "every skip is for a feature the profile does not advertise"), so each skip
# reason is matched here against the key's own getInfo; a skip that no rule explains
# fails the run.


def _alg_of(name):
    from fido2.cose import CoseKey

    for alg in CoseKey.supported_algorithms():
        if CoseKey.for_alg(alg).__name__ == name:
            return alg
    return None


def _opt(info, name):
    return info.options.get(name)


# (reason pattern, predicate on (match, info) that holds when the skip is justified)
SKIP_RULES = [
    (r"PIN/UV protocol (\d+) not supported", lambda m, i: int(m[1]) not in i.pin_uv_protocols),
    (r"Algorithm (\w+) not supported",
     lambda m, i: _alg_of(m[1]) is not None
     and not any(a.get("alg") == _alg_of(m[1]) for a in i.algorithms)),
    (r"CredBlob not supported", lambda m, i: "credBlob" not in i.extensions),
    (r"LargeBlobs not supported", lambda m, i: not _opt(i, "largeBlobs")),
    (r"Config not supported", lambda m, i: not _opt(i, "authnrCfg")),
    (r"AlwaysUv not supported", lambda m, i: _opt(i, "alwaysUv") is None),
    (r"BioEnrollment not supported",
     lambda m, i: _opt(i, "bioEnroll") is None and _opt(i, "userVerificationMgmtPreview") is None),
    (r"Enterprise Attestation not supported", lambda m, i: _opt(i, "ep") is None),
    (r"Persistent PUAT not supported", lambda m, i: not _opt(i, "perCredMgmtRO")),
    (r"ClientPin update not supported", lambda m, i: not _opt(i, "credMgmt")),
    (r"Permissions not supported", lambda m, i: not _opt(i, "pinUvAuthToken")),
    (r"CredentialManagement not supported",
     lambda m, i: not _opt(i, "credMgmt") and not _opt(i, "credentialMgmtPreview")),
    (r"ClientPin not supported", lambda m, i: _opt(i, "clientPin") is None),
    (r"([\w-]+) not supported by authenticator", lambda m, i: m[1] not in i.extensions),
]


def skip_is_explained(reason, info):
    """Whether `reason` (a skip message of the suite) names something `info` lacks."""
    import re

    for pattern, justified in SKIP_RULES:
        m = re.search(pattern, reason)
        if m:
            return bool(justified(m, info))
    return False


_skips = []


def pytest_runtest_logreport(report):
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        _skips.append((report.nodeid, reason))


def pytest_sessionfinish(session, exitstatus):
    if _server is None or not _skips:
        return
    from fido2.ctap2 import Ctap2

    try:
        info = Ctap2(open_device(_descriptor().path)).get_info()
    except Exception as e:  # noqa: BLE001 - any failure here must fail the run
        unexplained = [(n, f"{r} (getInfo failed: {e})") for n, r in _skips]
    else:
        unexplained = [(n, r) for n, r in _skips if not skip_is_explained(r, info)]
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    for nodeid, reason in unexplained:
        if tr:
            tr.write_line(f"UNEXPLAINED SKIP {nodeid}: {reason} (not explained by the key's getInfo)", red=True)
    if unexplained:
        session.exitstatus = 1


def pytest_addoption(parser):
    group = parser.getgroup("prereg-sim", "simulated YubiKey over the UDP HID bridge")
    group.addoption(
        "--sim-profile",
        default=os.environ.get("PREREG_SIM_PROFILE", "yubikey-5.7"),
        help="firmware profile of the simulated key (default yubikey-5.7)",
    )
    group.addoption("--sim-bin", default=None, help="prereg-station binary")
    group.addoption("--sim-seed", type=int, default=15, help="simulator seed")


def pytest_configure(config):
    _options["profile"] = config.getoption("sim_profile")
    _options["bin"] = config.getoption("sim_bin")
    _options["seed"] = config.getoption("sim_seed")


def pytest_plugin_registered(plugin, manager):
    # The device suite's conftest imported these names from fido2.hid and tests.device;
    # rebinding them in its module namespace is the whole redirection.
    name = getattr(plugin, "__name__", "")
    if name.endswith("device.conftest") and hasattr(plugin, "DeviceManager"):
        plugin.list_descriptors = list_descriptors
        plugin.open_connection = open_connection
        plugin.open_device = open_device
        plugin.Printer = SimPrinter
        logger.info("device suite redirected to the simulated key")


def pytest_report_header(config):
    return f"prereg-station simulated key: profile {config.getoption('sim_profile')}"


def pytest_unconfigure(config):
    global _server
    if _server is not None:
        _server.stop()
        _server = None
