"""python-fido2 (not ours) drives the simulated YubiKey over the UDP HID bridge.

The test starts `prereg-station sim serve` itself on a free port, talks to it
through python-fido2's own CTAPHID, CTAP2, PIN protocol, config and credential
management code (a `CtapHidConnection` over UDP, research §5), and stops it
after. python-fido2's `Ctap2` decodes every reply with strict (canonical) CBOR,
so each passing call also checks our encoding. Attestations are verified with
python-fido2's packed-attestation verifier against `prereg-station sim ca`.
"""

import hashlib
import os
import pathlib
import socket
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fido2.attestation import PackedAttestation, verify_x509_chain
from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, Config, Ctap2, CredentialManagement
from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor
from fido2.webauthn import PublicKeyCredentialDescriptor

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED = 7
PIN = "583920"
NEW_PIN = "8461537"


@pytest.fixture(scope="session")
def binary():
    path = os.environ.get("PREREG_STATION_BIN") or str(ROOT / "target/debug/prereg-station")
    if not pathlib.Path(path).exists():
        subprocess.run(["cargo", "build", "--quiet"], cwd=ROOT, check=True)
    return path


class UdpConnection(CtapHidConnection):
    """One datagram = one 64-byte report, no report id (SPEC §10)."""

    def __init__(self, addr):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(addr)
        self.sock.settimeout(5.0)

    def write_packet(self, data):
        assert len(data) == 64
        self.sock.send(data)

    def read_packet(self):
        data = self.sock.recv(2048)
        assert len(data) == 64, len(data)
        return data

    def close(self):
        self.sock.close()


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, binary, profile, seed=SEED):
        port = free_udp_port()
        self.proc = subprocess.Popen(
            [binary, "sim", "serve", "--profile", profile, "--udp", f"127.0.0.1:{port}",
             "--seed", str(seed)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        assert f"udp 127.0.0.1:{port}" in line, (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        self.line = line
        self.addr = ("127.0.0.1", port)
        self.conns = []

    def ctap(self):
        conn = UdpConnection(self.addr)
        self.conns.append(conn)
        dev = CtapHidDevice(HidDescriptor("sim", 0x1050, 0x0407, 64, 64, "sim", None), conn)
        return Ctap2(dev)  # strict_cbor=True by default

    def stop(self):
        for c in self.conns:
            c.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def serve(binary):
    started = []

    def start(profile, seed=SEED):
        s = Served(binary, profile, seed)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def ca_der(binary, tmp_path_factory):
    out = tmp_path_factory.mktemp("ca") / "sim-ca.pem"
    subprocess.run([binary, "sim", "ca", "--out", str(out), "--seed", str(SEED)], check=True)
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    assert "SIMULATOR" in cert.subject.rfc4514_string()
    return cert.public_bytes(serialization.Encoding.DER)


def make_rk(ctap, token, protocol, rp_id, user_id, name):
    cdh = hashlib.sha256(b"challenge " + user_id).digest()
    return cdh, ctap.make_credential(
        cdh,
        {"id": rp_id, "name": "Example"},
        {"id": user_id, "name": name, "displayName": name.title()},
        [{"type": "public-key", "alg": -7}],
        options={"rk": True},
        pin_uv_param=protocol.authenticate(token, cdh),
        pin_uv_protocol=protocol.VERSION,
    )


def test_programming_flow_on_yubikey_5_7(serve, ca_der):
    s = serve("yubikey-5.7")
    ctap = s.ctap()
    info = ctap.info
    assert "FIDO_2_1" in info.versions
    assert info.options["clientPin"] is False
    assert info.options["credMgmt"] and info.options["authnrCfg"] and info.options["setMinPINLength"]
    assert info.remaining_disc_creds == 100
    assert 2 in info.pin_uv_protocols

    cp = ClientPin(ctap)
    cp.set_pin(PIN)
    assert cp.get_pin_retries()[0] == 8
    assert ctap.get_info().options["clientPin"] is True

    # setMinPINLength + forceChangePin (CTAP 2.1 §6.11.4): tokens refused until changePIN.
    token = cp.get_pin_token(PIN, ClientPin.PERMISSION.AUTHENTICATOR_CFG)
    Config(ctap, cp.protocol, token).set_min_pin_length(min_pin_length=7, force_change_pin=True)
    info = ctap.get_info()
    assert info.force_pin_change is True and info.min_pin_length == 7
    with pytest.raises(CtapError) as e:
        cp.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, "example.com")
    assert e.value.code == CtapError.ERR.PIN_POLICY_VIOLATION
    with pytest.raises(CtapError) as e:
        cp.change_pin(PIN, "123456")  # shorter than the new minimum
    assert e.value.code == CtapError.ERR.PIN_POLICY_VIOLATION
    cp.change_pin(PIN, NEW_PIN)
    assert ctap.get_info().force_pin_change is False

    # makeCredential rk with packed attestation, verified by python-fido2 against the sim CA.
    token = cp.get_pin_token(NEW_PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, "example.com")
    cdh, att = make_rk(ctap, token, cp.protocol, "example.com", b"\x01" * 16, "alice")
    assert att.fmt == "packed"
    assert att.auth_data.credential_data.aaguid == info.aaguid
    result = PackedAttestation().verify(att.att_stmt, att.auth_data, cdh)
    verify_x509_chain(result.trust_path + [ca_der])
    # The token lost its permissions with the user-presence check (CTAP 2.1 §6.1.2 step 14).
    with pytest.raises(CtapError) as e:
        make_rk(ctap, token, cp.protocol, "example.com", b"\x02" * 16, "bob")
    assert e.value.code == CtapError.ERR.PIN_AUTH_INVALID
    token = cp.get_pin_token(NEW_PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, "example.com")
    make_rk(ctap, token, cp.protocol, "example.com", b"\x02" * 16, "bob")

    # getAssertion with the public key from the attestation.
    token = cp.get_pin_token(NEW_PIN, ClientPin.PERMISSION.GET_ASSERTION, "example.com")
    cdh2 = hashlib.sha256(b"login").digest()
    cred = att.auth_data.credential_data
    assertion = ctap.get_assertion(
        "example.com", cdh2,
        allow_list=[{"type": "public-key", "id": cred.credential_id}],
        pin_uv_param=cp.protocol.authenticate(token, cdh2), pin_uv_protocol=cp.protocol.VERSION,
    )
    assertion.verify(cdh2, cred.public_key)
    assert assertion.auth_data.is_user_verified()

    # Credential management sees both, deletes one.
    token = cp.get_pin_token(NEW_PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    cm = CredentialManagement(ctap, cp.protocol, token)
    meta = cm.get_metadata()
    assert meta[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 2
    assert meta[CredentialManagement.RESULT.MAX_REMAINING_COUNT] == 98
    rps = cm.enumerate_rps()
    assert [r[CredentialManagement.RESULT.RP]["id"] for r in rps] == ["example.com"]
    creds = cm.enumerate_creds(hashlib.sha256(b"example.com").digest())
    names = sorted(c[CredentialManagement.RESULT.USER]["name"] for c in creds)
    assert names == ["alice", "bob"]
    cm.delete_cred(PublicKeyCredentialDescriptor(type="public-key", id=cred.credential_id))
    assert cm.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 1


def test_wrong_pins_block_until_power_cycle(serve):
    s = serve("yubikey-5.7")
    ctap = s.ctap()
    cp = ClientPin(ctap)
    cp.set_pin(PIN)
    for expected in (CtapError.ERR.PIN_INVALID, CtapError.ERR.PIN_INVALID, CtapError.ERR.PIN_AUTH_BLOCKED):
        with pytest.raises(CtapError) as e:
            cp.get_pin_token("999111", ClientPin.PERMISSION.MAKE_CREDENTIAL, "example.com")
        assert e.value.code == expected
    assert cp.get_pin_retries() == (5, True)
    with pytest.raises(CtapError) as e:
        cp.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, "example.com")
    assert e.value.code == CtapError.ERR.PIN_AUTH_BLOCKED


def test_reset_within_window_wipes_pin_and_credentials(serve):
    s = serve("yubikey-5.7")
    ctap = s.ctap()
    cp = ClientPin(ctap)
    cp.set_pin(PIN)
    token = cp.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, "example.com")
    make_rk(ctap, token, cp.protocol, "example.com", b"\x01" * 16, "alice")
    assert ctap.get_info().remaining_disc_creds == 99
    ctap.reset()  # touch mode auto; the key was powered up moments ago (< 10 s)
    info = ctap.get_info()
    assert info.options["clientPin"] is False
    assert info.remaining_disc_creds == 100


@pytest.mark.parametrize("profile", ["yubikey-5.2", "yubikey-5.4"])
def test_fido_2_1_pre_refusals(serve, profile):
    s = serve(profile)
    ctap = s.ctap()
    info = ctap.info
    assert "FIDO_2_1" not in info.versions and "FIDO_2_1_PRE" in info.versions
    assert not Config.is_supported(info)
    assert "pinUvAuthToken" not in info.options
    cp = ClientPin(ctap)
    cp.set_pin(PIN)
    # Legacy getPinToken (0x05) only; python-fido2 falls back to it by itself.
    token = cp.get_pin_token(PIN)
    # No authenticatorConfig (0x0D): INVALID_COMMAND, even with a valid token.
    with pytest.raises(CtapError) as e:
        ctap.config(0x03, {}, cp.protocol.VERSION, cp.protocol.authenticate(token, b"\xff" * 32 + b"\x0d\x03"))
    assert e.value.code == CtapError.ERR.INVALID_COMMAND
    # Credential management only as the 2.1 prototype 0x41 (python-fido2 picks it from the options).
    assert CredentialManagement.is_supported(info) and not info.options.get("credMgmt")
    cm = CredentialManagement(ctap, cp.protocol, token)
    assert cm.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 0


def test_seed_makes_the_same_key(serve):
    a = serve("yubikey-5.7", seed=11)
    b = serve("yubikey-5.7", seed=11)
    serial = lambda s: s.line.split(" serial ")[1].split()[0]
    assert serial(a) == serial(b)
    assert a.ctap().info.aaguid == b.ctap().info.aaguid
