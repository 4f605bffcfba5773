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


# ---- Extensions and large blobs (issue #15: CTAP 2.1 §12.5, §12.2, §12.3, §6.10) ----
#
# python-fido2's own client-side extension code (HmacSecretExtension, CredBlobExtension,
# LargeBlobExtension) and its LargeBlobs class are the independent check: they do the
# key agreement, encryption and array encoding; the simulator only has to answer right.

import os
import struct

from fido2 import cbor
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap2.blob import LargeBlobs
from fido2.ctap2.extensions import HmacSecretExtension
from fido2.ctap2.pin import PinProtocolV1, PinProtocolV2
from fido2.server import Fido2Server
from fido2.utils import sha256, websafe_encode

PROFILES_WITH_LARGE_BLOBS = ["yubikey-5.7", "security-key-5.7"]


class PinInteraction(UserInteraction):
    def request_pin(self, permissions, rd_id):
        return PIN


def fido2_client(dev, *extensions):
    kwargs = {"extensions": list(extensions)} if extensions else {}
    return Fido2Client(
        dev,
        client_data_collector=DefaultClientDataCollector("https://example.com"),
        user_interaction=PinInteraction(),
        **kwargs,
    )


def register(client, *, rk, extensions):
    server = Fido2Server({"id": "example.com", "name": "Example"})
    options, state = server.register_begin(
        {"id": b"user-ext", "name": "jan"},
        resident_key_requirement="required" if rk else "discouraged",
        user_verification="required",
    )
    result = client.make_credential({**options["publicKey"], "extensions": extensions})
    return server, server.register_complete(state, result), result


def authenticate(client, server, credential, extensions):
    options, state = server.authenticate_begin([credential], user_verification="required")
    response = client.get_assertion(
        {**options["publicKey"], "extensions": extensions}
    ).get_response(0)
    # The server checks the signature over authData with its extensions (ED flag).
    server.authenticate_complete(state, [credential], response)
    return response


@pytest.mark.parametrize("profile", ["yubikey-5.2", "yubikey-5.4", "yubikey-5.7"])
def test_hmac_secret_through_python_fido2_client(serve, profile):
    server = serve(profile)
    dev = server.device()
    ClientPin(Ctap2(dev)).set_pin(PIN)
    client = fido2_client(dev, HmacSecretExtension(allow_hmac_secret=True))
    rp, auth_data, result = register(client, rk=False, extensions={"hmacCreateSecret": True})
    assert result.client_extension_results["hmacCreateSecret"] is True
    cred = auth_data.credential_data
    salt1, salt2 = os.urandom(32), os.urandom(32)
    out = authenticate(client, rp, cred, {"hmacGetSecret": {"salt1": salt1}})
    first = out.client_extension_results.hmac_get_secret.output1
    assert len(first) == 32
    out = authenticate(client, rp, cred, {"hmacGetSecret": {"salt1": salt1, "salt2": salt2}})
    both = out.client_extension_results.hmac_get_secret
    assert both.output1 == first  # same CredRandom, same salt
    assert both.output2 not in (None, first)
    # prf (WebAuthn L3) maps onto hmac-secret through the same client code.
    out = authenticate(client, rp, cred, {"prf": {"eval": {"first": websafe_encode(salt1)}}})
    assert out.client_extension_results.prf.results.first not in (None, first)


def hmac_secret_input(ctap, protocol, salts):
    cp = ClientPin(ctap, protocol)
    key_agreement, shared = cp._get_shared_secret()
    salt_enc = protocol.encrypt(shared, salts)
    return shared, {1: key_agreement, 2: salt_enc, 3: protocol.authenticate(shared, salt_enc),
                    4: protocol.VERSION}


def test_hmac_secret_both_protocols_with_and_without_uv(serve):
    """CredRandom does not depend on the PIN protocol, but on UV (§12.5: two values)."""
    server = serve("yubikey-5.7")
    ctap = Ctap2(server.device())
    cp = ClientPin(ctap)
    cp.set_pin(PIN)
    cdh = hashlib.sha256(b"hs").digest()
    token = cp.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP["id"])
    att = ctap.make_credential(
        cdh, RP, {"id": b"u-hs", "name": "jan"}, [{"type": "public-key", "alg": -7}],
        extensions={"hmac-secret": True}, options={"rk": True},
        pin_uv_param=cp.protocol.authenticate(token, cdh), pin_uv_protocol=cp.protocol.VERSION,
    )
    assert AuthenticatorData(att.auth_data).extensions == {"hmac-secret": True}
    salt = os.urandom(32)
    outputs = {}
    for protocol in (PinProtocolV1(), PinProtocolV2()):
        for uv in (False, True):
            shared, ext = hmac_secret_input(ctap, protocol, salt)
            kwargs = {}
            if uv:
                pin = ClientPin(ctap, protocol)
                tok = pin.get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, RP["id"])
                kwargs = {"pin_uv_param": protocol.authenticate(tok, cdh),
                          "pin_uv_protocol": protocol.VERSION}
            a = ctap.get_assertion(RP["id"], cdh, extensions={"hmac-secret": ext}, **kwargs)
            auth = AuthenticatorData(a.auth_data)
            assert auth.flags & AuthenticatorData.FLAG.EXTENSION_DATA
            assert auth.is_user_verified() == uv
            a.verify(cdh, AuthenticatorData(att.auth_data).credential_data.public_key)
            enc = auth.extensions["hmac-secret"]
            assert len(enc) == (32 if protocol.VERSION == 1 else 48)
            outputs[(protocol.VERSION, uv)] = protocol.decrypt(shared, enc)
    assert outputs[(1, False)] == outputs[(2, False)]
    assert outputs[(1, True)] == outputs[(2, True)]
    assert outputs[(1, False)] != outputs[(1, True)]


def test_hmac_secret_malformed_inputs_are_refused(serve):
    server = serve("yubikey-5.7")
    ctap = Ctap2(server.device())
    cdh = hashlib.sha256(b"bad").digest()
    ctap.make_credential(cdh, RP, {"id": b"u-bad", "name": "jan"},
                         [{"type": "public-key", "alg": -7}],
                         extensions={"hmac-secret": True}, options={"rk": True})
    p2 = PinProtocolV2()

    def refused(ext):
        with pytest.raises(CtapError) as e:
            ctap.get_assertion(RP["id"], cdh, extensions={"hmac-secret": ext})
        return e.value.code

    _, good = hmac_secret_input(ctap, p2, os.urandom(32))
    for missing in (1, 2, 3):
        ext = {k: v for k, v in good.items() if k != missing}
        assert refused(ext) == CtapError.ERR.MISSING_PARAMETER
    _, ext = hmac_secret_input(ctap, p2, os.urandom(32))
    ext[3] = bytes(32)
    assert refused(ext) == CtapError.ERR.PIN_AUTH_INVALID
    _, ext = hmac_secret_input(ctap, p2, os.urandom(48))
    assert refused(ext) == CtapError.ERR.INVALID_LENGTH
    _, ext = hmac_secret_input(ctap, p2, os.urandom(32))
    ext[4] = 3
    assert refused(ext) == CtapError.ERR.INVALID_PARAMETER
    # Protocol defaults to 1 when absent: a protocol-2 input then fails saltAuth.
    _, ext = hmac_secret_input(ctap, p2, os.urandom(32))
    del ext[4]
    assert refused(ext) == CtapError.ERR.PIN_AUTH_INVALID
    _, ext = hmac_secret_input(ctap, PinProtocolV1(), os.urandom(64))
    del ext[4]
    a = ctap.get_assertion(RP["id"], cdh, extensions={"hmac-secret": ext})
    assert "hmac-secret" in AuthenticatorData(a.auth_data).extensions


@pytest.mark.parametrize("profile", PROFILES_WITH_LARGE_BLOBS)
def test_cred_blob_through_python_fido2_client(serve, profile):
    server = serve(profile)
    dev = server.device()
    ctap = Ctap2(dev)
    assert ctap.info.max_cred_blob_length == 32
    ClientPin(ctap).set_pin(PIN)
    client = fido2_client(dev)
    blob = os.urandom(32)
    rp, auth_data, _ = register(client, rk=True, extensions={"credBlob": blob})
    assert auth_data.extensions["credBlob"] is True
    out = authenticate(client, rp, auth_data.credential_data, {"getCredBlob": True})
    assert out.response.authenticator_data.extensions["credBlob"] == blob


def test_cred_blob_limits_at_the_ctap_level(serve):
    server = serve("yubikey-5.7")
    ctap = Ctap2(server.device())

    def make(user, blob, rk=True):
        att = ctap.make_credential(
            hashlib.sha256(user).digest(), RP, {"id": user, "name": "jan"},
            [{"type": "public-key", "alg": -7}], extensions={"credBlob": blob},
            options={"rk": rk})
        return AuthenticatorData(att.auth_data)

    assert make(b"u-33", os.urandom(33)).extensions == {"credBlob": False}
    nrk = make(b"u-nrk", b"x", rk=False)
    assert nrk.extensions == {"credBlob": False}  # kept for discoverable credentials only
    a = ctap.get_assertion(RP["id"], bytes(32), extensions={"credBlob": True},
                           allow_list=[{"type": "public-key",
                                        "id": nrk.credential_data.credential_id}])
    assert AuthenticatorData(a.auth_data).extensions == {"credBlob": b""}


@pytest.mark.parametrize("profile", PROFILES_WITH_LARGE_BLOBS)
def test_large_blob_through_python_fido2_client(serve, profile):
    server = serve(profile)
    dev = server.device()
    ctap = Ctap2(dev)
    assert ctap.info.max_large_blob == 4096
    ClientPin(ctap).set_pin(PIN)
    client = fido2_client(dev)
    rp, auth_data, result = register(
        client, rk=True, extensions={"largeBlob": {"support": "required"}})
    assert result.client_extension_results.large_blob.supported is True
    cred = auth_data.credential_data
    data = os.urandom(1500)  # compressed and encrypted by the client: several fragments
    out = authenticate(client, rp, cred, {"largeBlob": {"write": websafe_encode(data)}})
    assert out.client_extension_results.large_blob.written is True
    out = authenticate(client, rp, cred, {"largeBlob": {"read": True}})
    assert out.client_extension_results.large_blob.blob == data
    # The array survives a power cycle, and reset empties it.
    assert server.control("power-cycle 0") == "ok"
    ctap = Ctap2(server.device())
    assert len(LargeBlobs(ctap).read_blob_array()) == 1
    ctap.reset()
    assert LargeBlobs(ctap).read_blob_array() == []


def lb_token(ctap, permissions=ClientPin.PERMISSION.LARGE_BLOB_WRITE):
    cp = ClientPin(ctap)
    return cp.protocol, cp.get_pin_token(PIN, permissions)


def test_large_blobs_command_rules(serve):
    server = serve("yubikey-5.7")
    ctap = Ctap2(server.device())
    # Factory state: the empty array and its checksum, no PIN needed to write.
    raw = ctap.large_blobs(0, get=100)[1]
    assert raw == b"\x80" + sha256(b"\x80")[:16]
    LargeBlobs(ctap).write_blob_array([{1: b"open"}])
    assert LargeBlobs(ctap).read_blob_array() == [{1: b"open"}]
    ClientPin(ctap).set_pin(PIN)
    with pytest.raises(CtapError, match="PUAT_REQUIRED"):
        LargeBlobs(ctap).write_blob_array([])
    protocol, token = lb_token(ctap, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    with pytest.raises(CtapError, match="PIN_AUTH_INVALID"):
        LargeBlobs(ctap, protocol, token).write_blob_array([])
    protocol, token = lb_token(ctap)
    lb = LargeBlobs(ctap, protocol, token)
    # Size bound: exactly maxSerializedLargeBlobArray fits, one byte more does not.
    max_size = ctap.info.max_large_blob - 16
    array = [{1: os.urandom(max_size - 8)}]
    array.extend([0] * (max_size - len(cbor.encode(array))))
    lb.write_blob_array(array)
    assert lb.read_blob_array() == array
    with pytest.raises(CtapError, match="LARGE_BLOB_STORAGE_FULL"):
        lb.write_blob_array(array + [1])

    def set_(offset, data, length=None, token=token):
        msg = b"\xff" * 32 + b"\x0c\x00" + struct.pack("<I", offset) + sha256(data)
        return ctap.large_blobs(offset, set=data, length=length,
                                pin_uv_protocol=protocol.VERSION,
                                pin_uv_param=protocol.authenticate(token, msg))

    data = cbor.encode([{1: b"x" * 40}])
    data += sha256(data)[:16]
    bad = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(CtapError, match="INTEGRITY_FAILURE"):
        set_(0, bad, len(bad))
    with pytest.raises(CtapError, match="INVALID_SEQ"):
        set_(10, data[10:])  # no write in progress
    set_(0, data[:10], len(data))
    with pytest.raises(CtapError, match="INVALID_SEQ"):
        set_(11, data[11:])
    with pytest.raises(CtapError, match="INVALID_PARAMETER"):
        set_(10, data[10:], len(data))  # length only on the first fragment
    with pytest.raises(CtapError, match="INVALID_PARAMETER"):
        set_(10, data[10:] + b"extra")  # past the announced length
    set_(10, data[10:])
    assert lb.read_blob_array() == [{1: b"x" * 40}]
    with pytest.raises(CtapError, match="INVALID_PARAMETER"):
        set_(0, data[:16], 16)  # shorter than a checksum plus one byte
    frag = ctap.info.max_msg_size - 64
    with pytest.raises(CtapError, match="INVALID_LENGTH"):
        ctap.large_blobs(0, get=frag + 1)
    with pytest.raises(CtapError, match="INVALID_LENGTH"):
        set_(0, bytes(frag + 1), 2000)
    with pytest.raises(CtapError, match="INVALID_PARAMETER"):
        ctap.large_blobs(len(data) + 1, get=1)
    with pytest.raises(CtapError, match="INVALID_PARAMETER"):
        ctap.large_blobs(0)  # neither get nor set


@pytest.mark.parametrize("profile", ["yubikey-5.2", "yubikey-5.4"])
def test_profiles_without_large_blobs_refuse_the_command(serve, profile):
    server = serve(profile)
    ctap = Ctap2(server.device())
    raw_info = ctap.send_cbor(Ctap2.CMD.GET_INFO)
    assert 0x0B not in raw_info and 0x0F not in raw_info
    with pytest.raises(CtapError) as e:
        ctap.large_blobs(0, get=10)
    assert e.value.code == CtapError.ERR.INVALID_COMMAND
