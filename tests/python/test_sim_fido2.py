"""python-fido2 (Yubico's host library, an independent peer) drives the
simulated YubiKey over the UDP HID bridge of SPEC §10.

Each test starts `prereg-station sim serve` itself and stops it afterwards.
python-fido2 decodes every reply with strict_cbor=True, so any non-canonical
CBOR from the simulator fails these tests.
"""

import hashlib
import os
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fido2.attestation import PackedAttestation, verify_x509_chain
from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, Config, Ctap2, CredentialManagement
from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor
from fido2.webauthn import AuthenticatorData

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("PREREG_STATION_BIN", ROOT / "target" / "debug" / "prereg-station"))
SEED = 42
PIN = "482913"
RP = {"id": "example.com", "name": "Example"}
AAGUID_5_7_NFC = bytes.fromhex("a25342c03cdc44148e46f4807fca511c")


class UdpConnection(CtapHidConnection):
    """One datagram = one 64-byte report, no report id (SPEC §10)."""

    def __init__(self, addr):
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)

    def write_packet(self, data):
        assert len(data) == 64
        self.sock.sendto(bytes(data), self.addr)

    def read_packet(self):
        data, _ = self.sock.recvfrom(2048)
        assert len(data) == 64
        return data

    def close(self):
        self.sock.close()


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, profile, *extra):
        if not BIN.exists():
            pytest.fail(f"{BIN} is missing: run cargo build first")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(BIN), "sim", "serve", "--profile", profile, "--udp", f"127.0.0.1:{self.port}",
             "--seed", str(SEED), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        if "serial" not in line:
            self.stop()
            pytest.fail(f"sim serve did not start: {line!r} {self.proc.stderr.read()}")
        self.serial = int(line.split("serial ")[1].split()[0])

    def control(self, line):
        """A stdin control line (`touch 0`, `power-cycle 0`, …); returns the answer."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def device(self):
        desc = HidDescriptor("udp", 0x1050, 0x0407, 64, 64, "simulated YubiKey", None)
        return CtapHidDevice(desc, UdpConnection(("127.0.0.1", self.port)))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def serve():
    servers = []

    def start(profile, *extra):
        s = Server(profile, *extra)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def root_der(tmp_path_factory):
    out = tmp_path_factory.mktemp("ca") / "root.pem"
    subprocess.run([str(BIN), "sim", "ca", "--out", str(out), "--seed", str(SEED)], check=True)
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    assert "NOT A YUBICO KEY" in cert.subject.rfc4514_string()
    return cert.public_bytes(Encoding.DER)


def make_rk(ctap, cp, user_id, cdh, cred_protect=None):
    token = cp.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP["id"])
    ext = {"credProtect": cred_protect} if cred_protect else None
    return ctap.make_credential(
        cdh, RP, {"id": user_id, "name": "jan", "displayName": "Jan"},
        [{"type": "public-key", "alg": -7}], extensions=ext, options={"rk": True},
        pin_uv_param=cp.protocol.authenticate(token, cdh), pin_uv_protocol=cp.protocol.VERSION,
    )


def test_recipe_on_yubikey_5_7(serve, root_der):
    server = serve("yubikey-5.7")
    dev = server.device()
    assert dev.device_version == (5, 7, 1)
    ctap = Ctap2(dev)  # strict_cbor=True
    info = ctap.info
    assert "FIDO_2_1" in info.versions
    assert info.aaguid == AAGUID_5_7_NFC
    assert info.options["clientPin"] is False
    assert info.options["setMinPINLength"] is True
    assert info.remaining_disc_creds == 100
    assert info.pin_uv_protocols == [2, 1]

    cp = ClientPin(ctap)
    assert cp.protocol.VERSION == 2
    cp.set_pin(PIN)
    assert ctap.get_info().options["clientPin"] is True
    assert cp.get_pin_retries()[0] == 8

    cdh = hashlib.sha256(b'{"type":"webauthn.create"}').digest()
    att = make_rk(ctap, cp, b"user-1", cdh, cred_protect=3)
    assert att.fmt == "packed"
    auth_data = AuthenticatorData(att.auth_data)
    assert auth_data.credential_data.aaguid == AAGUID_5_7_NFC
    assert auth_data.is_user_verified() and auth_data.is_user_present()
    assert auth_data.extensions == {"credProtect": 3}
    # Attestation: packed signature and x5c chaining to the simulator root.
    result = PackedAttestation().verify(att.att_stmt, auth_data, cdh)
    verify_x509_chain(result.trust_path + [root_der])

    # getAssertion with a ga token (credProtect 3 needs UV).
    token = cp.get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, RP["id"])
    cdh2 = hashlib.sha256(b"assert").digest()
    assertion = ctap.get_assertion(
        RP["id"], cdh2, pin_uv_param=cp.protocol.authenticate(token, cdh2),
        pin_uv_protocol=cp.protocol.VERSION,
    )
    assertion.verify(cdh2, auth_data.credential_data.public_key)
    assert assertion.user["id"] == b"user-1"
    # Without UV the credProtect-3 credential is invisible.
    with pytest.raises(CtapError) as e:
        ctap.get_assertion(RP["id"], cdh2)
    assert e.value.code == CtapError.ERR.NO_CREDENTIALS

    # Credential management (0x0A).
    token = cp.get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    cm = CredentialManagement(ctap, cp.protocol, token)
    meta = cm.get_metadata()
    assert meta[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 1
    assert meta[CredentialManagement.RESULT.MAX_REMAINING_COUNT] == 99
    rps = cm.enumerate_rps()
    assert rps[0][CredentialManagement.RESULT.RP]["id"] == "example.com"
    creds = cm.enumerate_creds(hashlib.sha256(b"example.com").digest())
    assert creds[0][CredentialManagement.RESULT.USER]["id"] == b"user-1"
    assert creds[0][CredentialManagement.RESULT.CRED_PROTECT] == 3

    # setMinPINLength + forceChangePin, then changePIN.
    token = cp.get_pin_token(PIN, ClientPin.PERMISSION.AUTHENTICATOR_CFG)
    Config(ctap, cp.protocol, token).set_min_pin_length(min_pin_length=6, force_change_pin=True)
    info = ctap.get_info()
    assert info.force_pin_change is True and info.min_pin_length == 6
    with pytest.raises(CtapError) as e:
        cp.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP["id"])
    assert e.value.code == CtapError.ERR.PIN_INVALID  # as on a real key
    assert cp.get_pin_retries()[0] == 8  # the PIN itself was right
    with pytest.raises(CtapError) as e:
        Config(ctap, cp.protocol, token).set_min_pin_length(min_pin_length=4)
    assert e.value.code == CtapError.ERR.PIN_POLICY_VIOLATION
    cp.change_pin(PIN, "970531")
    assert ctap.get_info().force_pin_change is False
    cp.get_pin_token("970531", ClientPin.PERMISSION.MAKE_CREDENTIAL, RP["id"])


def test_attestation_does_not_chain_to_another_seeds_root(serve, tmp_path):
    server = serve("yubikey-5.7")
    ctap = Ctap2(server.device())
    cp = ClientPin(ctap)
    cp.set_pin(PIN)
    cdh = hashlib.sha256(b"x").digest()
    att = make_rk(ctap, cp, b"u", cdh)
    out = tmp_path / "other.pem"
    subprocess.run([str(BIN), "sim", "ca", "--out", str(out), "--seed", "43"], check=True)
    other = x509.load_pem_x509_certificate(out.read_bytes()).public_bytes(Encoding.DER)
    result = PackedAttestation().verify(att.att_stmt, AuthenticatorData(att.auth_data), cdh)
    with pytest.raises(Exception):
        verify_x509_chain(result.trust_path + [other])


def test_reset_within_window(serve):
    server = serve("yubikey-5.7")
    ctap = Ctap2(server.device())
    cp = ClientPin(ctap)
    cp.set_pin(PIN)
    make_rk(ctap, cp, b"u", hashlib.sha256(b"r").digest())
    ctap.reset()
    info = ctap.get_info()
    assert info.options["clientPin"] is False
    assert info.remaining_disc_creds == 100
    with pytest.raises(CtapError) as e:
        cp.get_pin_retries()
    assert e.value.code == CtapError.ERR.PIN_NOT_SET


@pytest.mark.parametrize("profile,protocol", [("yubikey-5.2", 1), ("yubikey-5.4", 2)])
def test_fido_2_1_pre_refusals(serve, profile, protocol):
    server = serve(profile)
    ctap = Ctap2(server.device())
    info = ctap.info
    assert "FIDO_2_1_PRE" in info.versions and "FIDO_2_1" not in info.versions
    assert not Config.is_supported(info)
    assert "setMinPINLength" not in info.options
    # No authenticatorConfig at all.
    with pytest.raises(CtapError) as e:
        ctap.config(Config.CMD.SET_MIN_PIN_LENGTH, {3: True})
    assert e.value.code == CtapError.ERR.INVALID_COMMAND
    cp = ClientPin(ctap)
    assert cp.protocol.VERSION == protocol
    cp.set_pin(PIN)
    # python-fido2 falls back to legacy getPinToken (no pinUvAuthToken option).
    att = make_rk(ctap, cp, b"user-pre", hashlib.sha256(b"pre").digest())
    assert AuthenticatorData(att.auth_data).credential_data is not None
    # Credential management through the preview command 0x41.
    token = cp.get_pin_token(PIN)
    cm = CredentialManagement(ctap, cp.protocol, token)
    meta = cm.get_metadata()
    assert meta[CredentialManagement.RESULT.MAX_REMAINING_COUNT] == 24
    # Permissions subcommand 0x09 does not exist on these keys.
    with pytest.raises(CtapError) as e:
        ctap.client_pin(protocol, ClientPin.CMD.GET_TOKEN_USING_PIN, permissions=1)
    assert e.value.code == CtapError.ERR.INVALID_SUBCOMMAND


def test_rig_touch_over_stdin_and_power_cycle(serve):
    server = serve("yubikey-5.7", "--touch", "rig")
    ctap = Ctap2(server.device())
    seen = []

    def on_keepalive(status):
        seen.append(status)
        if len(seen) == 1:
            assert server.control("touch 0") == "ok touched"

    ctap.selection(on_keepalive=on_keepalive)
    assert seen and seen[0] == 2  # KEEPALIVE UPNEEDED
    # Reset after a power cycle, touched by the rig.
    cp = ClientPin(ctap)
    cp.set_pin(PIN)
    assert server.control("power-cycle 0") == "ok"
    ctap = Ctap2(server.device())
    touched = []

    def touch_once(status):
        if not touched:
            touched.append(server.control("touch 0"))

    ctap.reset(on_keepalive=touch_once)
    assert touched == ["ok touched"]
    assert ctap.get_info().options["clientPin"] is False
    assert "pin_set false" in server.control("status 0")


# ---- issue #15: what getInfo advertises works (U2F_V2, EdDSA, credProtect) ----

from fido2.cose import CoseKey, ES256, EdDSA  # noqa: E402
from fido2.ctap1 import APDU, ApduError, Ctap1  # noqa: E402


@pytest.mark.parametrize("profile", ["yubikey-5.2", "yubikey-5.7"])
def test_u2f_register_authenticate_and_ctap2_interop(serve, profile):
    server = serve(profile)
    dev = server.device()
    ctap1 = Ctap1(dev)
    assert ctap1.get_version() == "U2F_V2"
    app = hashlib.sha256(b"u2f.example").digest()
    chal = hashlib.sha256(b"register").digest()
    reg = ctap1.register(chal, app)
    reg.verify(app, chal)  # attestation signature with the certificate's key
    x509.load_der_x509_certificate(reg.certificate)

    with pytest.raises(ApduError) as e:
        ctap1.authenticate(chal, app, reg.key_handle, check_only=True)
    assert e.value.code == APDU.USE_NOT_SATISFIED  # 6985: the handle is ours
    with pytest.raises(ApduError) as e:
        ctap1.authenticate(chal, hashlib.sha256(b"other").digest(), reg.key_handle, check_only=True)
    assert e.value.code == APDU.WRONG_DATA  # 6A80: another appId

    sig = ctap1.authenticate(chal, app, reg.key_handle)
    assert sig.user_presence & 1
    sig.verify(app, chal, reg.public_key)
    sig2 = ctap1.authenticate(chal, app, reg.key_handle)
    assert sig2.counter > sig.counter

    # The U2F key handle in CTAP2 getAssertion, rpIdHash = appParam.
    ctap = Ctap2(dev)
    cdh = hashlib.sha256(b"interop").digest()
    assertion = ctap.get_assertion(
        "u2f.example", cdh, allow_list=[{"type": "public-key", "id": reg.key_handle}]
    )
    assertion.verify(cdh, ES256.from_ctap1(reg.public_key))

    # A non-resident CTAP2 credential in U2F AUTHENTICATE.
    att = ctap.make_credential(
        cdh, {"id": "u2f.example"}, {"id": b"u"}, [{"type": "public-key", "alg": -7}]
    )
    cred = AuthenticatorData(att.auth_data).credential_data
    sig = ctap1.authenticate(chal, app, cred.credential_id)
    sig.verify(app, chal, b"\x04" + cred.public_key[-2] + cred.public_key[-3])


@pytest.mark.parametrize("profile", ["yubikey-5.2", "yubikey-5.4", "yubikey-5.7"])
def test_eddsa_credential_make_and_assert(serve, profile):
    server = serve(profile)
    ctap = Ctap2(server.device())
    assert {"alg": -8, "type": "public-key"} in ctap.info.algorithms
    cdh = hashlib.sha256(b"ed").digest()
    att = ctap.make_credential(
        cdh, RP, {"id": b"ed"}, [{"type": "public-key", "alg": -8}],
        extensions={"credProtect": 1},
    )
    auth_data = AuthenticatorData(att.auth_data)
    key = auth_data.credential_data.public_key
    assert isinstance(key, EdDSA) and key[1] == 1 and key[-1] == 6  # OKP, Ed25519
    assert auth_data.extensions == {"credProtect": 1}
    cdh2 = hashlib.sha256(b"ed-assert").digest()
    assertion = ctap.get_assertion(
        RP["id"], cdh2,
        allow_list=[{"type": "public-key", "id": auth_data.credential_data.credential_id}],
    )
    assertion.verify(cdh2, CoseKey.parse(dict(key)))
