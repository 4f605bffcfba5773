#!/usr/bin/env bash
# Builds p11-kit 0.25.5 (Debian trixie's upstream tarball, checked by its
# SHA-256 from trixie's Sources index) into target/p11-kit-0.25.5 and prints
# that prefix. Why: the memory test of tests/it/hsm_process.rs puts the
# SoftHSM2 token in another process behind `p11-kit server`, and bookworm's
# p11-kit 0.24 cannot forward CKM_ECDH1_DERIVE over its RPC, so the station
# could sign but not decrypt through it; 0.25 can. Nothing is installed on
# the system: the test names the prefix (PREREG_TEST_P11_KIT_PREFIX).
# Idempotent: a finished build is reused (~45 s cold on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.25.5
sha256=04d0a86450cdb1be018f26af6699857171a188ac6d5b8c90786a60854e1198e5
url="http://deb.debian.org/debian/pool/main/p/p11-kit/p11-kit_${version}.orig.tar.xz"
prefix="$PWD/target/p11-kit-$version"
if [ -x "$prefix/bin/p11-kit" ] && [ -f "$prefix/lib/pkcs11/p11-kit-client.so" ]; then
  echo "$prefix"
  exit 0
fi
work="$PWD/target/p11-kit-build"
rm -rf "$work" "$prefix"
mkdir -p "$work"
tarball="$work/p11-kit.tar.xz"
curl -fsSL --retry 3 -o "$tarball" "$url"
echo "$sha256  $tarball" | sha256sum -c --quiet - || { echo "p11-kit-build: checksum mismatch for $url" >&2; exit 1; }
tar -xJf "$tarball" -C "$work"
(
  cd "$work/p11-kit-$version"
  ./configure --prefix="$prefix" --disable-trust-module --without-trust-paths \
    --disable-doc --disable-nls --without-bash-completion --without-systemd >"$work/configure.log" 2>&1 \
    || { tail -20 "$work/configure.log" >&2; exit 1; }
  make -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; exit 1; }
  make install >"$work/install.log" 2>&1 || { tail -20 "$work/install.log" >&2; exit 1; }
)
rm -rf "$work"
echo "p11-kit-build: p11-kit $version in $prefix" >&2
echo "$prefix"
