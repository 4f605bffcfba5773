"""jwcrypto as an independent JOSE peer for the Rust integration tests
(tests/it/jose.rs). Test-only; nobody here wrote jwcrypto.

  jose_peer.py encrypt-requests DIR   reads transport.jwks, pin.json, cred.json;
                                      prints {alg: {pin, cred[, pin_apu]}} compact JWEs
  jose_peer.py open-responses DIR     reads sign.jwks, response.jwk, pin.jwe, cred.jwe;
                                      decrypts (JWE), verifies (JWS), prints payloads + headers
  jose_peer.py sign-requests DIR      reads transport.jwks, pin.json, cred.json; makes its own
                                      IdP signing keys (P-256, P-384), writes idp-signing.jwks;
                                      prints {ES256|ES384: {pin, cred}}: JWS inside JWE (SPEC §4)
"""

import json
import pathlib
import sys

from fido2.attestation import PackedAttestation
from fido2.utils import websafe_decode
from fido2.webauthn import AttestationObject, CollectedClientData
from jwcrypto import jwe, jwk, jws
from jwcrypto.common import base64url_encode, json_decode


def encrypt_requests(d: pathlib.Path) -> None:
    keyset = jwk.JWKSet.from_json((d / "transport.jwks").read_text())
    key = list(keyset["keys"])[0]
    kid = key.get("kid")
    pin = (d / "pin.json").read_text()
    cred = (d / "cred.json").read_text()
    def enc(alg, payload, cty, extra=None):
        header = {"alg": alg, "enc": "A256GCM", "kid": kid, "cty": cty}
        header.update(extra or {})
        token = jwe.JWE(payload.encode(), protected=json.dumps(header))
        token.add_recipient(key)
        return token.serialize(compact=True)

    out = {}
    for alg in ("ECDH-ES+A256KW", "ECDH-ES"):
        out[alg] = {
            "pin": enc(alg, pin, "prereg.pin-request.v1"),
            "cred": enc(alg, cred, "prereg.cred-request.v1"),
        }
    # RFC 7518 §4.6.1.2-3: PartyUInfo/PartyVInfo enter the Concat KDF.
    out["ECDH-ES+A256KW"]["pin_apu"] = enc(
        "ECDH-ES+A256KW",
        pin,
        "prereg.pin-request.v1",
        {"apu": base64url_encode(b"okta-tenant"), "apv": base64url_encode(b"yubico-station")},
    )
    print(json.dumps(out))


def open_responses(d: pathlib.Path) -> None:
    signers = jwk.JWKSet.from_json((d / "sign.jwks").read_text())
    response_key = jwk.JWK.from_json((d / "response.jwk").read_text())
    result = {}
    for name, typ in (("pin", "prereg.pin-response.v1"), ("cred", "prereg.cred-response.v1")):
        outer = jwe.JWE()
        outer.deserialize((d / f"{name}.jwe").read_text(), key=response_key)
        outer_header = json_decode(outer.objects["protected"])
        assert outer_header["alg"] == "ECDH-ES+A256KW", outer_header
        assert outer_header["enc"] == "A256GCM", outer_header
        assert outer_header["cty"] == "JWT", outer_header
        assert outer_header["kid"] == response_key.get("kid"), outer_header
        inner = jws.JWS()
        inner.deserialize(outer.payload.decode())
        inner_header = json_decode(inner.objects["protected"])
        signer = signers.get_key(inner_header["kid"])
        assert signer is not None, inner_header
        inner.verify(signer, alg="ES384")
        assert inner_header["typ"] == typ, inner_header
        result[name] = json.loads(inner.payload)
        result[f"{name}_jws_header"] = inner_header
        result[f"{name}_jwe_header"] = outer_header
    # python-fido2 reads the WebAuthn parts: clientDataJSON as built by the
    # station, and the packed attestation (signature + certificate profile).
    cred = result["cred"]["credential"]["response"]
    client_data = CollectedClientData(websafe_decode(cred["clientDataJSON"]))
    assert client_data.type == "webauthn.create", client_data
    assert client_data.cross_origin is False, client_data
    att = AttestationObject(websafe_decode(cred["attestationObject"]))
    assert att.fmt == "packed", att.fmt
    PackedAttestation().verify(att.att_stmt, att.auth_data, client_data.hash)
    result["fido2"] = {"origin": client_data.origin, "rp_id_hash": att.auth_data.rp_id_hash.hex()}
    print(json.dumps(result))


def sign_requests(d: pathlib.Path) -> None:
    """SPEC §4 IdP-signed requests, made by jwcrypto alone: a compact JWS
    (alg ES256 or ES384, kid, cty = the content type) of the request JSON is
    the plaintext of a JWE whose cty is the content type + "+jws"."""
    keyset = jwk.JWKSet.from_json((d / "transport.jwks").read_text())
    transport = list(keyset["keys"])[0]
    signers = {
        "ES256": jwk.JWK.generate(kty="EC", crv="P-256", kid="py-idp-es256", use="sig"),
        "ES384": jwk.JWK.generate(kty="EC", crv="P-384", kid="py-idp-es384", use="sig"),
    }
    public = jwk.JWKSet()
    for k in signers.values():
        public.add(jwk.JWK.from_json(k.export_public()))
    (d / "idp-signing.jwks").write_text(public.export(private_keys=False))

    def seal(alg, payload, cty):
        signer = signers[alg]
        inner = jws.JWS(payload.encode())
        inner.add_signature(
            signer, alg=alg, protected=json.dumps({"alg": alg, "kid": signer.get("kid"), "cty": cty})
        )
        header = {
            "alg": "ECDH-ES+A256KW",
            "enc": "A256GCM",
            "kid": transport.get("kid"),
            "cty": cty + "+jws",
        }
        outer = jwe.JWE(inner.serialize(compact=True).encode(), protected=json.dumps(header))
        outer.add_recipient(transport)
        return outer.serialize(compact=True)

    pin = (d / "pin.json").read_text()
    cred = (d / "cred.json").read_text()
    out = {
        alg: {
            "pin": seal(alg, pin, "prereg.pin-request.v1"),
            "cred": seal(alg, cred, "prereg.cred-request.v1"),
        }
        for alg in signers
    }
    print(json.dumps(out))


if __name__ == "__main__":
    cmd, directory = sys.argv[1], pathlib.Path(sys.argv[2])
    {
        "encrypt-requests": encrypt_requests,
        "open-responses": open_responses,
        "sign-requests": sign_requests,
    }[cmd](directory)
