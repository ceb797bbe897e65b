#!/usr/bin/env bash
# Fetches what the qemu guest of test/guest boots and that is not installed on the host: the
# Debian kernel package (only vmlinuz and the module directories the guest loads are unpacked),
# busybox-static and multipath-tools (unpacked, not installed: on the host, the flex driver's
# "multipath: auto" would turn on when the multipath command exists). Cached outside the
# repository by version:
#   ${PETFABRIC_CACHE:-~/.cache/petfabric}/guest/<kernel package>_<version>/{kernel,busybox,multipath}
# A warm run only asks apt-cache which version is current. Idempotent.
set -euo pipefail

cache=${PETFABRIC_CACHE:-$HOME/.cache/petfabric}/guest
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
t0=$(now)

kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[[ -n $kpkg ]] || { echo "[setup-guest] cannot resolve linux-image-amd64 (apt-get update?)" >&2; exit 1; }
kver=$(apt-cache policy "$kpkg" | awk '/Candidate:/{print $2}')
bbver=$(apt-cache policy busybox-static | awk '/Candidate:/{print $2}')
mpver=$(apt-cache policy multipath-tools | awk '/Candidate:/{print $2}')
dir="$cache/${kpkg}_${kver}"
if [[ -f $dir/.done && -f $dir/.done-dm && -f $dir/busybox/.done-$bbver && -f $dir/multipath/.done-$mpver ]]; then
  echo "[setup-guest] guest kernel $kpkg $kver, busybox-static $bbver and multipath-tools $mpver cached in $dir"
  exit 0
fi
mkdir -p "$dir/debs"
cd "$dir/debs"
if [[ ! -f $dir/.done ]]; then
  echo "[setup-guest] downloading $kpkg $kver (about 70 MB) into $dir"
  rm -f ./linux-image-*.deb
  apt-get download -q "$kpkg=$kver" >/dev/null
  rm -rf "$dir/kernel.tmp"; mkdir -p "$dir/kernel.tmp"
  echo "[setup-guest] unpacking vmlinuz and the guest's module directories"
  M='./lib/modules/*/kernel'
  dpkg-deb --fsys-tarfile ./linux-image-*.deb | tar -x -C "$dir/kernel.tmp" --wildcards \
    './boot/vmlinuz-*' './lib/modules/*/modules.*' "$M/fs/ext4/*" "$M/fs/jbd2/*" "$M/fs/mbcache.ko" \
    "$M/fs/xfs/*" "$M/lib/*" "$M/crypto/*" "$M/block/*" "$M/drivers/scsi/*" "$M/drivers/virtio/*" \
    "$M/drivers/net/virtio_net.ko" "$M/drivers/net/net_failover.ko" "$M/net/core/*" "$M/arch/x86/crypto/*" \
    "$M/drivers/md/*"
  rm -rf "$dir/kernel"; mv "$dir/kernel.tmp" "$dir/kernel"
  rm -f ./linux-image-*.deb   # 70 MB the guest never needs again
  touch "$dir/.done" "$dir/.done-dm"
fi
if [[ ! -f $dir/.done-dm ]]; then
  # A kernel cached before the guest had multipath: add the device-mapper modules (drivers/md).
  echo "[setup-guest] downloading $kpkg $kver again for its device-mapper modules"
  rm -f ./linux-image-*.deb
  apt-get download -q "$kpkg=$kver" >/dev/null
  dpkg-deb --fsys-tarfile ./linux-image-*.deb | tar -x -C "$dir/kernel" --wildcards './lib/modules/*/kernel/drivers/md/*'
  rm -f "$dir"/kernel/lib/modules/*/modules.dep   # depmod again, over the new modules too
  rm -f ./linux-image-*.deb
  touch "$dir/.done-dm"
fi
if [[ ! -f $dir/busybox/.done-$bbver ]]; then
  echo "[setup-guest] downloading busybox-static $bbver"
  rm -f ./busybox-static_*.deb
  apt-get download -q "busybox-static=$bbver" >/dev/null
  rm -rf "$dir/busybox"; mkdir -p "$dir/busybox"
  dpkg -x ./busybox-static_*.deb "$dir/busybox"
  rm -f ./busybox-static_*.deb
  touch "$dir/busybox/.done-$bbver"
fi
if [[ ! -f $dir/multipath/.done-$mpver ]]; then
  echo "[setup-guest] downloading multipath-tools $mpver"
  rm -f ./multipath-tools_*.deb
  apt-get download -q "multipath-tools=$mpver" >/dev/null
  rm -rf "$dir/multipath"; mkdir -p "$dir/multipath"
  dpkg -x ./multipath-tools_*.deb "$dir/multipath"
  rm -rf "$dir/multipath/usr/share" "$dir/multipath/usr/include" "$dir/multipath/etc"
  rm -f ./multipath-tools_*.deb
  touch "$dir/multipath/.done-$mpver"
fi
ln -sfn "$dir" "$cache/current"
echo "[setup-guest] done in $(since "$t0")s: $dir ($(du -sh "$dir" | cut -f1))"
