"""python-fido2 against the trussed-udp peer (fido-authenticator behind the SPEC §10
UDP HID bridge).

Proves the independent peer works with an independent client before prereg-station's own
host stack is tested against it. Builds nothing: scripts/test.sh builds the tool and
exports its path in PREREG_TRUSSED_UDP.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import threading
from hashlib import sha256

import pytest

TOOL = os.environ.get("PREREG_TRUSSED_UDP")
if not TOOL:
    pytest.skip(
        "PREREG_TRUSSED_UDP is unset: build the peer with tools/trussed-udp/build.sh "
        "(scripts/test.sh does) and export its path",
        allow_module_level=True,
    )

from fido2.attestation import PackedAttestation  # noqa: E402
from fido2.ctap import CtapError  # noqa: E402
from fido2.ctap2 import Ctap2, ClientPin, Config, CredentialManagement  # noqa: E402
from fido2.hid import CtapHidDevice, CAPABILITY, STATUS  # noqa: E402
from fido2.hid.base import CtapHidConnection, HidDescriptor  # noqa: E402
from fido2.webauthn import AttestedCredentialData, AuthenticatorData  # noqa: E402

PIN = "482913"
NEW_PIN = "73910264"
RP = {"id": "myorg.example", "name": "MyOrg"}
USER = {"id": b"\x01user-0001", "name": "jan@example.com", "displayName": "Jan"}
ES256 = [{"type": "public-key", "alg": -7}]


class UdpConnection(CtapHidConnection):
    """One datagram = one 64-byte report, no report id (SPEC §10)."""

    def __init__(self, addr: tuple[str, int], timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.connect(addr)
        self.sock.settimeout(timeout)

    def write_packet(self, data: bytes) -> None:
        assert len(data) == 64
        self.sock.send(data)

    def read_packet(self) -> bytes:
        data = self.sock.recv(128)
        if len(data) != 64:
            raise OSError(f"bridge sent a {len(data)}-byte datagram")
        return data

    def close(self) -> None:
        self.sock.close()


class Peer:
    def __init__(self, *extra: str):
        self.proc = subprocess.Popen(
            [TOOL, "--listen", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        prefix = "trussed-udp listening on "
        if not line.startswith(prefix):
            self.close()
            raise RuntimeError(f"trussed-udp did not start: {line!r}")
        host, port = line[len(prefix):].strip().rsplit(":", 1)
        self.addr = (host, int(port))

    def device(self) -> CtapHidDevice:
        desc = HidDescriptor("udp:%s:%d" % self.addr, 0, 0, 64, 64, "trussed-udp", None)
        return CtapHidDevice(desc, UdpConnection(self.addr))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.close()


def make_rk(ctap: Ctap2, pin: ClientPin, user=USER, **kw):
    token = pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP["id"])
    cdh = sha256(b"client data " + user["id"]).digest()
    att = ctap.make_credential(
        cdh,
        RP,
        user,
        ES256,
        options={"rk": True},
        pin_uv_param=pin.protocol.authenticate(token, cdh),
        pin_uv_protocol=pin.protocol.VERSION,
        **kw,
    )
    return cdh, att


def test_ctaphid_init_ping_wink(peer):
    dev = peer.device()
    assert dev.version == 2
    assert dev.capabilities & CAPABILITY.CBOR
    assert dev.capabilities & CAPABILITY.WINK
    data = os.urandom(300)  # init packet + continuation packets both ways
    assert dev.ping(data) == data
    dev.wink()


def test_bridge_framing_errors(peer):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.bind(("127.0.0.1", 0))
    # A report on a channel that was never allocated -> ERROR INVALID_CHANNEL (0x0B).
    s.sendto(struct.pack(">IBH", 0x12345678, 0x80 | 0x10, 1).ljust(64, b"\0"), peer.addr)
    r = s.recv(128)
    assert r[:7] == struct.pack(">IBH", 0x12345678, 0x80 | 0x3F, 1) and r[7] == 0x0B
    # A short datagram is ignored; the bridge keeps serving.
    s.sendto(b"\x01\x02\x03", peer.addr)
    nonce = os.urandom(8)
    s.sendto(struct.pack(">IBH", 0xFFFFFFFF, 0x86, 8).ljust(7, b"\0") + nonce + bytes(49), peer.addr)
    r = s.recv(128)
    assert len(r) == 64 and r[4] == 0x86 and r[7:15] == nonce
    s.close()


def test_get_info_offers_the_recipe(peer):
    info = Ctap2(peer.device()).info
    assert "FIDO_2_1" in info.versions
    assert list(info.pin_uv_protocols) == [2, 1]
    assert info.options["clientPin"] is False
    for opt in ("rk", "credMgmt", "authnrCfg", "setMinPINLength", "pinUvAuthToken"):
        assert info.options.get(opt) is True, opt
    assert info.force_pin_change is False
    assert info.min_pin_length == 4
    assert info.remaining_disc_creds and info.remaining_disc_creds > 0


def test_full_recipe_with_python_fido2(peer):
    ctap = Ctap2(peer.device())
    pin = ClientPin(ctap)
    assert pin.protocol.VERSION == 2
    pin.set_pin(PIN)
    assert ctap.get_info().options["clientPin"] is True
    assert pin.get_pin_retries()[0] == 8

    # makeCredential (rk) with a fresh mc-permission token, self-attested "packed".
    cdh, att = make_rk(ctap, pin)
    assert att.fmt == "packed"
    auth_data = att.auth_data
    assert auth_data.flags & AuthenticatorData.FLAG.UP
    assert auth_data.flags & AuthenticatorData.FLAG.UV
    assert auth_data.flags & AuthenticatorData.FLAG.AT
    assert auth_data.rp_id_hash == sha256(RP["id"].encode()).digest()
    PackedAttestation().verify(att.att_stmt, auth_data, cdh)
    cred: AttestedCredentialData = auth_data.credential_data

    # Second user, then credential management sees exactly both.
    user2 = {"id": b"\x02user-0002", "name": "kim@example.com", "displayName": "Kim"}
    make_rk(ctap, pin, user=user2)
    token = pin.get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    cm = CredentialManagement(ctap, pin.protocol, token)
    meta = cm.get_metadata()
    assert meta[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 2
    rps = cm.enumerate_rps()
    assert [r[CredentialManagement.RESULT.RP]["id"] for r in rps] == [RP["id"]]
    creds = cm.enumerate_creds(sha256(RP["id"].encode()).digest())
    users = sorted(c[CredentialManagement.RESULT.USER]["id"] for c in creds)
    assert users == sorted([USER["id"], user2["id"]])
    ids = [c[CredentialManagement.RESULT.CREDENTIAL_ID]["id"] for c in creds]
    assert cred.credential_id in ids

    # Last step of the recipe: setMinPINLength with forceChangePin.
    token = pin.get_pin_token(PIN, ClientPin.PERMISSION.AUTHENTICATOR_CFG)
    Config(ctap, pin.protocol, token).set_min_pin_length(min_pin_length=8, force_change_pin=True)
    info = ctap.get_info()
    assert info.force_pin_change is True
    assert info.min_pin_length == 8
    # No token can be had until the PIN is changed (CTAP 2.1 §6.5.5.7).
    with pytest.raises(CtapError) as e:
        pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP["id"])
    assert e.value.code == CtapError.ERR.PIN_POLICY_VIOLATION
    # A PIN shorter than the new minimum is refused; a long enough one clears the flag.
    with pytest.raises(CtapError) as e:
        pin.change_pin(PIN, "1234567")
    assert e.value.code == CtapError.ERR.PIN_POLICY_VIOLATION
    pin.change_pin(PIN, NEW_PIN)
    assert ctap.get_info().force_pin_change is False


def test_wrong_pin_counts_down(peer):
    ctap = Ctap2(peer.device())
    pin = ClientPin(ctap)
    pin.set_pin(PIN)
    with pytest.raises(CtapError) as e:
        pin.get_pin_token("000000", ClientPin.PERMISSION.MAKE_CREDENTIAL, RP["id"])
    assert e.value.code == CtapError.ERR.PIN_INVALID
    assert pin.get_pin_retries()[0] == 7


def test_keepalive_upneeded_then_cancel():
    # The virtual user waits 3 s before touching: long enough to see UPNEEDED and cancel.
    p = Peer("--up-delay-ms", "3000")
    try:
        ctap = Ctap2(p.device())
        pin = ClientPin(ctap)
        pin.set_pin(PIN)
        seen: list[int] = []
        cancel = threading.Event()

        def on_keepalive(status):
            seen.append(status)
            if status == STATUS.UPNEEDED:
                cancel.set()

        with pytest.raises(CtapError) as e:
            make_rk(ctap, pin, event=cancel, on_keepalive=on_keepalive)
        assert e.value.code == CtapError.ERR.KEEPALIVE_CANCEL
        assert STATUS.UPNEEDED in seen
        # The device is usable again at once and the touch arrives after the delay.
        seen.clear()
        make_rk(ctap, pin, on_keepalive=seen.append)
        assert STATUS.UPNEEDED in seen
    finally:
        p.close()
