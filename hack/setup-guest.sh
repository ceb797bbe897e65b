#!/usr/bin/env bash
# Fetches what the qemu guest of test/guest boots and that is not installed on the host: the
# Debian kernel package (only vmlinuz and the module directories the guest loads are unpacked)
# and busybox-static (unpacked, not installed). Cached outside the repository by version:
#   ${PETFABRIC_CACHE:-~/.cache/petfabric}/guest/<kernel package>_<version>/{kernel,busybox}
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
dir="$cache/${kpkg}_${kver}"
if [[ -f $dir/.done && -f $dir/busybox/.done-$bbver ]]; then
  echo "[setup-guest] guest kernel $kpkg $kver and busybox-static $bbver cached in $dir"
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
    "$M/drivers/net/virtio_net.ko" "$M/drivers/net/net_failover.ko" "$M/net/core/*" "$M/arch/x86/crypto/*"
  rm -rf "$dir/kernel"; mv "$dir/kernel.tmp" "$dir/kernel"
  rm -f ./linux-image-*.deb   # 70 MB the guest never needs again
  touch "$dir/.done"
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
ln -sfn "$dir" "$cache/current"
echo "[setup-guest] done in $(since "$t0")s: $dir ($(du -sh "$dir" | cut -f1))"
