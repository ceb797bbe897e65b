package iscsi

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// scsiTypeDisk is the SCSI peripheral device type of a direct-access block device (sysfs
// .../H:C:T:L/type); a storage array controller is 12.
const scsiTypeDisk = 0

// DiskLUN returns the LUN of the volume's disk behind the session to iqn on portal, after the
// wanted LUN has been scanned. Datera exposes the disk as LUN 0; other targets keep LUN 0 for
// a controller device and put the disk behind it (tgt does). So the disk is found by what it
// is: when the wanted LUN shows up as something other than a disk, every LUN of the target is
// scanned and the one disk among them is the volume. A LUN not visible (yet) is left to the
// caller's device wait, which reports it with its own bound.
func (d Devices) DiskLUN(iqn, portal string, want int) (int, error) {
	host, err := d.SessionHost(iqn, portal)
	if err != nil {
		return want, err
	}
	types, err := d.lunTypes(host)
	if err != nil {
		return want, err
	}
	if t, ok := types[want]; !ok || t == scsiTypeDisk {
		return want, nil
	}
	scan := d.sysfs("class", "scsi_host", host, "scan")
	if err := os.WriteFile(scan, []byte("0 0 -"), 0); err != nil {
		return want, fmt.Errorf("LUN %d of %s is not a disk (SCSI type %d); scanning all its LUNs: %w", want, iqn, types[want], err)
	}
	if types, err = d.lunTypes(host); err != nil {
		return want, err
	}
	var disks []int
	for lun, t := range types {
		if t == scsiTypeDisk {
			disks = append(disks, lun)
		}
	}
	slices.Sort(disks)
	switch len(disks) {
	case 1:
		return disks[0], nil
	case 0:
		return want, fmt.Errorf("target %s on %s has no disk LUN (LUN types %v)", iqn, portal, types)
	default:
		return want, fmt.Errorf("target %s on %s has %d disk LUNs %v; a Datera volume's target has one", iqn, portal, len(disks), disks)
	}
}

// lunTypes maps the LUNs mapped on a SCSI host to their SCSI device types, read from
// /sys/class/scsi_host/<host>/device/session*/target*/<H:C:T:L>/type.
func (d Devices) lunTypes(host string) (map[int]int, error) {
	files, err := filepath.Glob(d.sysfs("class", "scsi_host", host, "device", "session*", "target*", "*:*:*:*", "type"))
	if err != nil {
		return nil, err
	}
	out := map[int]int{}
	for _, f := range files {
		hctl := strings.Split(filepath.Base(filepath.Dir(f)), ":")
		lun, err := strconv.Atoi(hctl[len(hctl)-1])
		if err != nil {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the device went away while we looked
		}
		t, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("SCSI device type in %s: %w", f, err)
		}
		out[lun] = t
	}
	return out, nil
}
