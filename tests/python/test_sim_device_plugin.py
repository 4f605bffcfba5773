"""The device-suite plugin's skip audit (tests/python/sim_device_plugin.py): a skip
passes only when the key's getInfo lacks what the skip reason names."""

from types import SimpleNamespace

import sim_device_plugin as plugin


def info(**kw):
    base = dict(pin_uv_protocols=[2, 1], algorithms=[{"alg": -7, "type": "public-key"}],
                extensions=["credProtect", "hmac-secret"], options={"clientPin": True})
    base.update(kw)
    return SimpleNamespace(**base)


def test_protocol_and_algorithm_skips_follow_get_info():
    assert plugin.skip_is_explained("PIN/UV protocol 2 not supported", info(pin_uv_protocols=[1]))
    assert not plugin.skip_is_explained("PIN/UV protocol 2 not supported", info())
    assert plugin.skip_is_explained("Algorithm EdDSA not supported", info())
    assert not plugin.skip_is_explained(
        "Algorithm EdDSA not supported",
        info(algorithms=[{"alg": -7, "type": "public-key"}, {"alg": -8, "type": "public-key"}]))


def test_option_and_extension_skips_follow_get_info():
    assert plugin.skip_is_explained("LargeBlobs not supported by authenticator", info())
    assert not plugin.skip_is_explained(
        "LargeBlobs not supported by authenticator", info(options={"largeBlobs": True}))
    assert plugin.skip_is_explained("hmac-secret-mc not supported by authenticator", info())
    assert not plugin.skip_is_explained("hmac-secret not supported by authenticator", info())
    assert plugin.skip_is_explained("Config not supported by authenticator", info())
    assert not plugin.skip_is_explained(
        "Config not supported by authenticator", info(options={"authnrCfg": True}))


def test_unknown_skip_reasons_are_not_explained():
    assert not plugin.skip_is_explained("Requires factory reset", info())
    assert not plugin.skip_is_explained("Device is not a CtapHidDevice", info())
