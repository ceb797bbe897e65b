package guest

// initScript is the guest's /init: bring up modules, udev, the network and iscsid, then run the
// test's /guest-test and power off. Machine-readable lines go to the second serial port (ttyS1),
// kernel messages stay on the console (ttyS0).
const initScript = `#!/bin/sh
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run; mkdir -p /run/lock/iscsi /run/udev
. /etc/petfabric/guest.sh
fail() { say "PFG-RESULT FAIL step=$1 t=$(up)"; dmesg | tail -30; sync; poweroff -f; sleep 5; }
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^pfg\.$1=//p"; }
IP=$(arg ip); HOST=$(arg host)
step init
for m in virtio_pci virtio_net crc32c_generic sd_mod iscsi_tcp ext4 xfs; do modprobe $m 2>/dev/null || echo "modprobe $m failed"; done
[ -d /sys/module/iscsi_tcp ] || fail modules
step modules
# udevd only has to see the iSCSI disks that appear later (their by-path links): no coldplug
# trigger of the devices already there, which costs seconds under emulation.
/lib/systemd/systemd-udevd --daemon --resolve-names=never 2>/dev/null || fail udevd
step udev
ip link set lo up; ip addr add "$IP/24" dev eth0 && ip link set eth0 up || fail net
i=0; until ping -c1 -W1 "$HOST" >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 20 ] && fail ping; done
step net
iscsid || fail iscsid
step ready
[ -x /guest-test ] || fail no-guest-test
/guest-test; rc=$?
if [ $rc = 0 ]; then say "PFG-RESULT PASS t=$(up)"; else say "PFG-RESULT FAIL step=guest-test rc=$rc t=$(up)"; fi
sync; poweroff -f; sleep 5
`

// guestLib is sourced by /init and by test scripts: helpers that print one result line each.
//
//	step LABEL          PFG-STEP LABEL t=<uptime>
//	flex LABEL ARGS…    runs the driver; PFG-FLEX LABEL rc=<exit> <its reply>
//	check LABEL CMD…    runs CMD; PFG-CHECK LABEL rc=<exit> <output, lines joined by |>
//	multipath_up        loads device-mapper multipath and starts multipathd (log in
//	                    /tmp/multipathd.log); fails unless it answers within 10 s

const guestLib = `RES=/dev/ttyS1; [ -c $RES ] || RES=/dev/console
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "$*" >$RES; }
step() { say "PFG-STEP $1 t=$(up)"; }
flex() { l=$1; shift; out=$(/usr/local/bin/flex "$@" 2>&1); rc=$?; say "PFG-FLEX $l rc=$rc $(printf %s "$out" | tr '\n' ' ')"; return $rc; }
check() { l=$1; shift; out=$("$@" 2>&1); rc=$?; say "PFG-CHECK $l rc=$rc $(printf %s "$out" | tr '\n' '|')"; return 0; }
multipath_up() {
	for m in dm_multipath dm_round_robin dm_service_time; do modprobe $m || return 1; done
	multipathd -d -s -v2 >/tmp/multipathd.log 2>&1 &
	i=0; until multipathd show daemon 2>/dev/null | grep -qE 'idle|running'; do
		i=$((i+1)); [ $i -ge 100 ] && return 1; sleep 0.1; done
}
`

// iscsidConf sets the initiator's timeouts deliberately: a refused login (not in the ACL, bad
// CHAP) fails at once instead of retrying for two minutes, and a dead portal is given up on
// within seconds so that an unmount under it stays bounded.
const iscsidConf = `iscsid.startup = /usr/sbin/iscsid
node.startup = manual
node.session.initial_login_retry_max = 1
node.conn[0].timeo.login_timeout = 5
node.conn[0].timeo.logout_timeout = 5
node.conn[0].timeo.noop_out_interval = 2
node.conn[0].timeo.noop_out_timeout = 2
node.session.timeo.replacement_timeout = 5
node.session.err_timeo.abort_timeout = 5
node.session.err_timeo.lu_reset_timeout = 5
node.session.err_timeo.tgt_reset_timeout = 5
node.session.auth.chap_algs = MD5
node.session.queue_depth = 32
node.session.nr_sessions = 1
node.session.iscsi.InitialR2T = No
node.session.iscsi.ImmediateData = Yes
node.session.iscsi.FirstBurstLength = 262144
node.session.iscsi.MaxBurstLength = 16776192
node.conn[0].iscsi.MaxRecvDataSegmentLength = 262144
node.conn[0].iscsi.MaxXmitDataSegmentLength = 0
discovery.sendtargets.iscsi.MaxRecvDataSegmentLength = 32768
`

// multipathConf is the guest's /etc/multipath.conf, read by multipathd when a test starts it:
// every SCSI disk is a path (no wait for a second path or a wwids entry), maps are named by
// WWID, a path is checked every second, and a map whose last path failed fails I/O instead of
// queueing it forever. No partitions are mapped (kpartx is not in the guest).
const multipathConf = `defaults {
	find_multipaths off
	user_friendly_names no
	polling_interval 1
	no_path_retry fail
	skip_kpartx yes
	enable_foreign "^$"
}
`
