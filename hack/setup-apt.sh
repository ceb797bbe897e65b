#!/usr/bin/env bash
# Installs the Debian packages the tests need, only those that are missing.
# Services the packages ship (tgtd, iscsid) are not started: tests start their own on 127.0.0.1.
set -euo pipefail

# qemu-system-x86 and udev serve test/guest: a qemu guest with a real kernel initiator, whose
# iscsid, iscsiadm, udevd and mkfs tools are copied from these host packages (hack/setup-guest.sh
# fetches its kernel and busybox).
PACKAGES=(tgt open-iscsi libiscsi-bin xfsprogs e2fsprogs util-linux iproute2 kmod qemu-system-x86 udev)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "[setup-apt] all packages present: ${PACKAGES[*]}"
  exec "$(dirname "$0")/setup-guest.sh"
fi

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo
echo "[setup-apt] installing: ${missing[*]}"
# Keep package scripts from starting daemons on this machine (policy-rc.d 101 = "action forbidden").
policy=/usr/sbin/policy-rc.d
created_policy=false
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=true
fi
trap '$created_policy && $SUDO rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "[setup-apt] done"
"$(dirname "$0")/setup-guest.sh"
