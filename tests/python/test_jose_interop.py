"""Interop of the station's JOSE and the reference IdP with independent peers,
through the built binary's public commands only.

A Python "station" written on jwcrypto, cryptography and python-fido2 (none
of it ours) reads the jobs `prereg-station idp enroll` makes, decrypts them
with the station's key files from `keys generate`, creates packed
attestations under its own CA, signs and encrypts responses, and hands the
results to `prereg-station idp activate`, which must verify them; and must
refuse the tampered ones.
"""

import datetime
import hashlib
import json
import os
import pathlib
import secrets
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from fido2 import cbor
from jwcrypto import jwe, jwk, jws
from jwcrypto.common import base64url_decode, base64url_encode, json_decode

ROOT = pathlib.Path(__file__).resolve().parents[2]
AAGUID = bytes.fromhex("a25342c03cdc44148e46f4807fca511c")


@pytest.fixture(scope="session")
def binary():
    path = os.environ.get("PREREG_STATION_BIN") or str(ROOT / "target/debug/prereg-station")
    if not pathlib.Path(path).exists():
        subprocess.run(["cargo", "build", "--quiet"], cwd=ROOT, check=True)
    return path


def run(binary, *args, check=True):
    proc = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


class PyStation:
    """The station's side, written against the SPEC with other people's libraries."""

    def __init__(self, keys_dir: pathlib.Path, rsa_root: bool = False):
        self.keys = {}
        for f in keys_dir.glob("*.jwk"):
            k = jwk.JWK.from_json(f.read_text())
            self.keys[k.get("kid")] = k
        manifest = json.loads((keys_dir / "manifest.json").read_text())
        self.sign_key = self.keys[manifest["active_signing_kid"]]
        # Yubico's real attestation roots are RSA (PKCS#1 v1.5, SHA-256).
        if rsa_root:
            self.ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.ca_key = ec.generate_private_key(ec.SECP384R1())
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "py station root")])
        self.root = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(self.ca_key.public_key())
            .serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256() if rsa_root else hashes.SHA384())
        )
        leaf_name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "py station"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
                x509.NameAttribute(NameOID.COMMON_NAME, "py station attestation"),
            ]
        )
        self.leaf = (
            x509.CertificateBuilder()
            .subject_name(leaf_name)
            .issuer_name(ca_name)
            .public_key(self.leaf_key.public_key())
            .serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.UnrecognizedExtension(
                    x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4"), b"\x04\x10" + AAGUID
                ),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def decrypt(self, token: str, cty: str) -> dict:
        header = json_decode(base64url_decode(token.split(".")[0]))
        assert header["enc"] == "A256GCM" and header["cty"] == cty, header
        t = jwe.JWE()
        t.deserialize(token, key=self.keys[header["kid"]])
        return json.loads(t.payload)

    def seal(self, payload: dict, typ: str, response_key: dict, sign_key=None) -> str:
        signer = sign_key or self.sign_key
        s = jws.JWS(json.dumps(payload).encode())
        s.add_signature(
            signer, alg="ES384", protected=json.dumps({"alg": "ES384", "kid": signer.get("kid"), "typ": typ})
        )
        inner = s.serialize(compact=True)
        rk = jwk.JWK(**response_key)
        e = jwe.JWE(
            inner.encode(),
            protected=json.dumps(
                {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": response_key["kid"], "cty": "JWT"}
            ),
        )
        e.add_recipient(rk)
        return e.serialize(compact=True)

    def make_credential(self, req: dict, tamper_challenge=False):
        opts = req["publicKey"]
        rp_id = opts["rp"]["id"]
        challenge = opts["challenge"]
        if tamper_challenge:
            challenge = base64url_encode(secrets.token_bytes(32))
        origin = req.get("origin") or f"https://{rp_id}"
        client_data = json.dumps(
            {"type": "webauthn.create", "challenge": challenge, "origin": origin, "crossOrigin": False},
            separators=(",", ":"),
        ).encode()
        cred_key = ec.generate_private_key(ec.SECP256R1())
        nums = cred_key.public_key().public_numbers()
        cose = cbor.encode({1: 2, 3: -7, -1: 1, -2: nums.x.to_bytes(32, "big"), -3: nums.y.to_bytes(32, "big")})
        cred_id = secrets.token_bytes(64)
        protect = {
            "userVerificationOptional": 1,
            "userVerificationOptionalWithCredentialIDList": 2,
            "userVerificationRequired": 3,
        }.get((opts.get("extensions") or {}).get("credentialProtectionPolicy"))
        flags = 0x01 | 0x04 | 0x40 | (0x80 if protect else 0)
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([flags])
            + (0).to_bytes(4, "big")
            + AAGUID
            + len(cred_id).to_bytes(2, "big")
            + cred_id
            + cose
            + (cbor.encode({"credProtect": protect}) if protect else b"")
        )
        sig = self.leaf_key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        if opts.get("attestation") == "none":
            fmt, stmt = "none", {}
        else:
            fmt = "packed"
            stmt = {"alg": -7, "sig": sig, "x5c": [self.leaf.public_bytes(serialization.Encoding.DER)]}
        att = cbor.encode({"fmt": fmt, "attStmt": stmt, "authData": auth_data})
        return cred_id, client_data, att

    def program(self, shipment: dict, serial: str, tamper=None):
        item = shipment["shipment_items"][0]
        pc = item["product_customizations"][0]
        pin_req = self.decrypt(pc["fido_pin_request"], "prereg.pin-request.v1")
        now = pin_req["iat"] + 5
        pin = f"{secrets.randbelow(10**6):06d}"
        digest = lambda t: base64url_encode(hashlib.sha256(t.encode()).digest())  # noqa: E731
        device = {"serialNumber": serial, "firmwareVersion": "5.7.1"}
        sign_key = None
        if tamper == "foreign-signer":
            sign_key = jwk.JWK.generate(kty="EC", crv="P-384", kid=self.sign_key.get("kid"))
        pin_resp = self.seal(
            {
                "v": 1,
                "userId": pin_req["userId"],
                "requestDigest": digest(pc["fido_pin_request"]),
                **device,
                "pin": pin,
                "forceChangePin": pin_req["pinPolicy"]["forceChangePin"],
                "minPinLength": pin_req["pinPolicy"].get("minPinLength"),
                "iat": now,
            },
            "prereg.pin-response.v1",
            pin_req["responseKey"],
            sign_key,
        )
        creds = []
        for token in pc["fido_credential_requests"]:
            req = self.decrypt(token, "prereg.cred-request.v1")
            assert req["userId"] == pin_req["userId"]
            assert req["authenticatorEnrollmentId"] in pin_req["authenticatorEnrollmentIds"]
            cred_id, client_data, att = self.make_credential(req, tamper_challenge=(tamper == "challenge"))
            cid = base64url_encode(cred_id)
            creds.append(
                self.seal(
                    {
                        "v": 1,
                        "authenticatorEnrollmentId": req["authenticatorEnrollmentId"],
                        "requestDigest": digest(token),
                        **device,
                        "aaguid": "a25342c0-3cdc-4414-8e46-f4807fca511c",
                        "credential": {
                            "type": "public-key",
                            "id": cid,
                            "rawId": cid,
                            "authenticatorAttachment": "cross-platform",
                            "response": {
                                "clientDataJSON": base64url_encode(client_data),
                                "attestationObject": base64url_encode(att),
                                "transports": ["nfc", "usb"],
                            },
                            "clientExtensionResults": {"credProps": {"rk": True}},
                        },
                        "iat": now,
                    },
                    "prereg.cred-response.v1",
                    req["responseKey"],
                    sign_key,
                )
            )
        result = {
            "shipment_id": shipment["shipment_id"],
            "shipment_state": {"shipment_state_id": 103},
            "shipment_items": [
                {
                    "product_id": item["product_id"],
                    "product_data": [
                        {
                            "serial_number": serial,
                            "firmware_version": "5.7.1",
                            "fido_pin_response": pin_resp,
                            "fido_credential_responses": creds,
                        }
                    ],
                }
            ],
        }
        return result, pin


@pytest.fixture()
def setup(binary, tmp_path):
    run(binary, "keys", "generate", "--dir", tmp_path / "keys")
    run(binary, "keys", "export-jwks", "--dir", tmp_path / "keys", "--out", tmp_path / "pub")
    return tmp_path


def test_exported_jwks_are_public_p384(setup):
    for name, use in (("transport-keys.jwks", "enc"), ("sign.jwks", "sig")):
        ks = jwk.JWKSet.from_json((setup / "pub" / name).read_text())
        keys = list(ks["keys"])
        assert keys
        for k in keys:
            assert k.get("kty") == "EC" and k.get("crv") == "P-384" and k.get("use") == use
            assert k.get("kid") and not k.has_private
    for f in (setup / "keys").glob("*.jwk"):
        assert f.stat().st_mode & 0o077 == 0, f


@pytest.mark.parametrize(
    "alg,attestation,rsa_root",
    [
        ("ECDH-ES+A256KW", "direct", False),
        ("ECDH-ES+A256KW", "direct", True),
        ("ECDH-ES", "direct", False),
        ("ECDH-ES+A256KW", "none", False),
        ("ECDH-ES", "none", False),
    ],
)
def test_python_station_results_activate(binary, setup, alg, attestation, rsa_root):
    jobs = setup / "jobs.jsonl"
    run(
        binary, "idp", "enroll", "--state", setup / "idp", "--station-jwks",
        setup / "pub" / "transport-keys.jwks", "--users", "2", "--credentials", "2",
        "--alg", alg, "--attestation", attestation, "--out", jobs,
    )
    station = PyStation(setup / "keys", rsa_root=rsa_root)
    (setup / "root.pem").write_bytes(station.root_pem())
    outbox = setup / "outbox"
    outbox.mkdir()
    pins = {}
    for i, line in enumerate(jobs.read_text().splitlines()):
        shipment = json.loads(line)
        header = json_decode(base64url_decode(shipment["shipment_items"][0]["product_customizations"][0]["fido_pin_request"].split(".")[0]))
        assert header["alg"] == alg
        result, pin = station.program(shipment, f"3000000{i}")
        (outbox / f"{shipment['shipment_id']}.json").write_text(json.dumps(result))
        pins[shipment["shipment_id"]] = pin
    common = ["idp", "activate", "--state", setup / "idp", "--sign-jwks", setup / "pub" / "sign.jwks", "--roots", setup / "root.pem"]
    out = run(binary, *common, "--json", "--show-pin", outbox).stdout
    reports = [json.loads(line) for line in out.splitlines()]
    assert len(reports) == 2
    for r in reports:
        assert r["verified"], r
        assert r["pin"] == pins[r["shipment_id"]]
        assert len(r["credentials"]) == 2
        assert all(c["fmt"] == ("packed" if attestation == "direct" else "none") for c in r["credentials"])
    plain = run(binary, *common, outbox).stdout
    assert not any(p in plain for p in pins.values())


@pytest.mark.parametrize("tamper,code", [("challenge", "client_data.challenge"), ("foreign-signer", "jws.signature_invalid")])
def test_tampered_results_are_refused(binary, setup, tamper, code):
    jobs = setup / "jobs.jsonl"
    run(binary, "idp", "enroll", "--state", setup / "idp", "--station-jwks", setup / "pub" / "transport-keys.jwks", "--out", jobs)
    station = PyStation(setup / "keys")
    (setup / "root.pem").write_bytes(station.root_pem())
    result, _ = station.program(json.loads(jobs.read_text().splitlines()[0]), "40000000", tamper=tamper)
    (setup / "result.json").write_text(json.dumps(result))
    proc = run(binary, "idp", "activate", "--state", setup / "idp", "--sign-jwks", setup / "pub" / "sign.jwks", "--roots", setup / "root.pem", "--json", setup / "result.json", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert code in proc.stdout, proc.stdout


def test_signed_requests_from_idp_enroll_verify_in_jwcrypto(binary, setup):
    """`idp enroll --sign` (SPEC §4): every request JWE has cty <type>+jws and
    carries a compact ES384 JWS that jwcrypto verifies against the public
    idp-signing.jwks the command wrote; one responseKey per shipment."""
    jobs = setup / "jobs.jsonl"
    proc = run(
        binary, "idp", "enroll", "--state", setup / "idp", "--station-jwks",
        setup / "pub" / "transport-keys.jwks", "--users", "2", "--credentials", "2",
        "--sign", "--out", jobs,
    )
    assert "idp_signing_jwks = " in proc.stderr, proc.stderr
    signers = jwk.JWKSet.from_json((setup / "idp" / "idp-signing.jwks").read_text())
    for k in signers["keys"]:
        assert not k.has_private and k.get("crv") == "P-384" and k.get("use") == "sig"
    assert list((setup / "idp" / "signing").glob("*.jwk")), "the private key stays in the state dir"
    station = PyStation(setup / "keys")
    for line in jobs.read_text().splitlines():
        pc = json.loads(line)["shipment_items"][0]["product_customizations"][0]
        requests = [(pc["fido_pin_request"], "prereg.pin-request.v1")] + [
            (c, "prereg.cred-request.v1") for c in pc["fido_credential_requests"]
        ]
        response_keys = set()
        for token, cty in requests:
            header = json_decode(base64url_decode(token.split(".")[0]))
            assert header["cty"] == cty + "+jws", header
            outer = jwe.JWE()
            outer.deserialize(token, key=station.keys[header["kid"]])
            inner = jws.JWS()
            inner.deserialize(outer.payload.decode())
            inner_header = json_decode(inner.objects["protected"])
            assert inner_header["alg"] == "ES384" and inner_header["cty"] == cty, inner_header
            inner.verify(signers.get_key(inner_header["kid"]), alg="ES384")
            request = json.loads(inner.payload)
            response_keys.add(json.dumps(request["responseKey"], sort_keys=True))
            # A flipped signature bit fails in jwcrypto too.
            h, p, s = outer.payload.decode().split(".")
            sig = bytearray(base64url_decode(s))
            sig[3] ^= 1
            forged = jws.JWS()
            forged.deserialize(".".join([h, p, base64url_encode(bytes(sig))]))
            with pytest.raises(jws.InvalidJWSSignature):
                forged.verify(signers.get_key(inner_header["kid"]), alg="ES384")
        assert len(response_keys) == 1, "one responseKey per job (SPEC §4)"
