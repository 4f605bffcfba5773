"""Independent check of the virtual card's CTAP-over-NFC transport with
Yubico's python-fido2 (`fido2.pcsc.CtapPcscDevice`, over pyscard and pcscd).

Run by tests/it/pcsc.rs while an echo card (status 0x00 then the request
reversed; a request starting 0xFF waits for a touch) sits in READER.

usage: fido2_pcsc_check.py READER
"""

import sys

from fido2.ctap import STATUS
from fido2.hid import CTAPHID
from fido2.pcsc import CtapPcscDevice


def main() -> None:
    reader = sys.argv[1]
    dev = next(CtapPcscDevice.list_devices(reader), None)
    assert dev is not None, f"python-fido2 found no device in {reader!r}"
    request = bytes((i * 7) % 256 for i in range(1800))
    for ext in (False, True):
        # False: short APDUs chained in 250-byte links, 61xx GET RESPONSE;
        # True: one extended APDU without Le.
        dev.use_ext_apdu = ext
        rsp = dev.call(CTAPHID.CBOR, request)
        assert rsp == b"\x00" + request[::-1], f"ext={ext}: {len(rsp)} bytes back"
    dev.use_ext_apdu = False
    seen = []
    rsp = dev.call(CTAPHID.CBOR, b"\xff\x01", on_keepalive=seen.append)
    assert rsp == b"\x00\x01\xff", rsp.hex()
    assert STATUS.UPNEEDED in seen, seen
    print("python-fido2 pcsc: chained, extended and UPNEEDED exchanges ok")


if __name__ == "__main__":
    main()
