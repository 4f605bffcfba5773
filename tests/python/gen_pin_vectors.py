"""Regenerates tests/vectors/pin-protocols.json with python-fido2 (an independent
implementation) and `cryptography`. Fixed inputs: ECDH scalars, PIN, token, and the
protocol-2 IV (random in real use; fixed here by patching os.urandom in fido2's pin
module only). Run: .venv/bin/python tests/python/gen_pin_vectors.py > tests/vectors/pin-protocols.json
"""
import hashlib
import json
import sys
from importlib.metadata import version

from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.ctap2 import pin as fpin
from fido2.ctap2.pin import PinProtocolV1, PinProtocolV2, _pad_pin

D_A, D_P = 0x0A11CE, 0x0B0B
PIN = "583920"
TOKEN = bytes([0x11] * 32)
IV = bytes([0x01] * 16)
fpin.os.urandom = lambda n: IV[:n]  # fixed IV for protocol 2 (known-answer only)

auth = ec.derive_private_key(D_A, ec.SECP256R1())
plat = ec.derive_private_key(D_P, ec.SECP256R1())
z = plat.exchange(ec.ECDH(), auth.public_key())
assert z == auth.exchange(ec.ECDH(), plat.public_key())


def coords(k):
    n = k.public_key().public_numbers()
    return n.x.to_bytes(32, "big").hex(), n.y.to_bytes(32, "big").hex()


out = {
    "provenance": (
        "Computed with python-fido2 %s (PinProtocolV1/V2 kdf/encrypt/authenticate, fido2.cbor) "
        "and cryptography %s by tests/python/gen_pin_vectors.py; the same values appear in "
        "research ctap-yubikey-facts.md section 5b." % (version("fido2"), version("cryptography"))
    ),
    "authenticator_scalar": "%x" % D_A,
    "platform_scalar": "%x" % D_P,
    "authenticator_x": coords(auth)[0],
    "authenticator_y": coords(auth)[1],
    "platform_x": coords(plat)[0],
    "platform_y": coords(plat)[1],
    "z": z.hex(),
    "pin": PIN,
    "token": TOKEN.hex(),
    "iv_v2": IV.hex(),
    "pin_hash_left16": hashlib.sha256(PIN.encode()).digest()[:16].hex(),
    "padded_pin": _pad_pin(PIN).hex(),
    "platform_key_agreement_cbor": cbor.encode(
        {1: 2, 3: -25, -1: 1, -2: bytes.fromhex(coords(plat)[0]), -3: bytes.fromhex(coords(plat)[1])}
    ).hex(),
    "config_params_cbor": cbor.encode({3: True}).hex(),
    "protocols": {},
}
config_msg = b"\xff" * 32 + b"\x0d" + b"\x03" + cbor.encode({3: True})
for num, proto in ((1, PinProtocolV1()), (2, PinProtocolV2())):
    shared = proto.kdf(z)
    pin_hash_enc = proto.encrypt(shared, hashlib.sha256(PIN.encode()).digest()[:16])
    new_pin_enc = proto.encrypt(shared, _pad_pin(PIN))
    token_enc = proto.encrypt(shared, TOKEN)
    out["protocols"][str(num)] = {
        "shared_secret": shared.hex(),
        "pin_hash_enc": pin_hash_enc.hex(),
        "new_pin_enc": new_pin_enc.hex(),
        "set_pin_auth": proto.authenticate(shared, new_pin_enc).hex(),
        "change_pin_auth": proto.authenticate(shared, new_pin_enc + pin_hash_enc).hex(),
        "token_enc": token_enc.hex(),
        "config_message": config_msg.hex(),
        "config_auth": proto.authenticate(TOKEN, config_msg).hex(),
        "cdh_auth": proto.authenticate(TOKEN, hashlib.sha256(b'{"type":"webauthn.create"}').digest()).hex(),
    }
json.dump(out, sys.stdout, indent=2)
print()
