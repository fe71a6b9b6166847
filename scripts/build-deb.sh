#!/usr/bin/env bash
# `npm run deb`: the .debs and a local apt repository under dist/apt, built the way Debian builds:
# dpkg-buildpackage inside a clean Debian 12 chroot (cached in .cache/, git-ignored), against Debian's
# own nodejs, so the native addons match the Node that `apt install` pulls in. The JavaScript is bundled
# on the host first (it is architecture-independent). Needs root (debootstrap, chroot).
#   MNEDC_DEB_VERSION=0.1.1 npm run deb   builds a higher version (for upgrade tests)
#   MNEDC_DEB_OUT=dist/apt-next           puts the packages and repository there instead of dist/apt
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CHROOT=$ROOT/.cache/build-bookworm
MIRROR=${MNEDC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
VERSION=${MNEDC_DEB_VERSION:-$(node -p "require('./package.json').version")}
OUT=$(realpath -m "${MNEDC_DEB_OUT:-$ROOT/dist/apt}")

[[ $(id -u) -eq 0 ]] || { echo "build-deb: needs root (debootstrap and chroot)" >&2; exit 2; }
need=()
for tool in debootstrap lintian dpkg-scanpackages; do
  command -v "$tool" >/dev/null || need+=("$tool")
done
if ((${#need[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap lintian dpkg-dev >/dev/null
fi

bash scripts/setup.sh
node scripts/bundle.js

if [[ ! -x $CHROOT/usr/bin/dpkg-buildpackage ]]; then
  echo "build-deb: bootstrapping the Debian 12 build chroot (once; cached in .cache/)" >&2
  rm -rf "$CHROOT"
  debootstrap --variant=buildd bookworm "$CHROOT" "$MIRROR" >/dev/null
fi
# apt, not debootstrap --include, resolves the build dependencies: the latter misses virtual packages.
if ! chroot "$CHROOT" dpkg -s debhelper nodejs libnode-dev node-gyp apt-utils >/dev/null 2>&1; then
  chroot "$CHROOT" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    debhelper nodejs libnode-dev libuv1-dev libsystemd-dev node-gyp python3 pkg-config apt-utils >/dev/null'
fi

# The source tree dpkg-buildpackage sees: packaging, units, man pages, conffiles, bundles, native sources.
STAGE=$CHROOT/build/mnedc-$VERSION
rm -rf "$CHROOT/build" && mkdir -p "$STAGE/native/tun" "$STAGE/native/sd-notify" "$STAGE/build"
cp -r debian systemd man etc polkit "$STAGE/"
cp -r build/bundle "$STAGE/build/"
rm -f "$STAGE"/build/bundle/*.node
cp packages/tun/binding.gyp "$STAGE/native/tun/" && cp -r packages/tun/native "$STAGE/native/tun/"
cp node_modules/sd-notify/{binding.gyp,notify.cc,noop.cc} "$STAGE/native/sd-notify/"
if [[ $VERSION != $(dpkg-parsechangelog -l debian/changelog -S Version) ]]; then
  { printf 'mnedc (%s) bookworm; urgency=medium\n\n  * Rebuilt as %s.\n\n -- mnedc developers <dev@mnedc.org>  %s\n\n' \
      "$VERSION" "$VERSION" "$(date -R)"; cat debian/changelog; } > "$STAGE/debian/changelog"
fi

mount --bind /proc "$CHROOT/proc"
trap 'umount "$CHROOT/proc" 2>/dev/null || true' EXIT
chroot "$CHROOT" sh -c "cd /build/mnedc-$VERSION && HOME=/tmp dpkg-buildpackage -us -uc -b >/build/log 2>&1" ||
  { tail -40 "$CHROOT/build/log" >&2; exit 1; }

mkdir -p "$OUT"
rm -f "$OUT"/mnedc*_"$VERSION"_*.deb
cp "$CHROOT"/build/*.deb "$OUT/"
( cd "$OUT" && dpkg-scanpackages --multiversion . /dev/null > Packages 2>/dev/null && gzip -kf Packages )
cp -r "$OUT" "$CHROOT/build/apt" && chroot "$CHROOT" sh -c 'cd /build/apt && apt-ftparchive release . > Release' && cp "$CHROOT/build/apt/Release" "$OUT/"

errors=0
warnings=0
debs=("$OUT"/*_"$VERSION"_*.deb)
for deb in "${debs[@]}"; do
  report=$(lintian "$deb" 2>&1) || true
  [[ -z $report ]] || echo "$report"
  errors=$((errors + $(grep -c '^E: ' <<<"$report" || true)))
  warnings=$((warnings + $(grep -c '^W: ' <<<"$report" || true)))
done
echo "lintian: $errors errors, $warnings warnings in ${#debs[@]} packages"
echo "build-deb: ${#debs[@]} packages and a local apt repository in ${OUT#$ROOT/}"
((errors == 0))
