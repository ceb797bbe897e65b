package iscsi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Default locations of the udev by-path links and sysfs.
const (
	DefaultByPathDir = "/dev/disk/by-path"
	DefaultSysfsDir  = "/sys"
)

// Devices finds and removes the block devices of iSCSI LUNs. Both roots are configurable so
// tests can build a by-path tree and a sysfs tree under a temporary directory.
type Devices struct {
	// ByPathDir holds the udev links ip-<portal>-iscsi-<iqn>-lun-<n> (default /dev/disk/by-path).
	ByPathDir string
	// SysfsDir is the sysfs mount point (default /sys).
	SysfsDir string
}

func (d Devices) byPathDir() string {
	if d.ByPathDir == "" {
		return DefaultByPathDir
	}
	return d.ByPathDir
}

func (d Devices) sysfs(elem ...string) string {
	root := d.SysfsDir
	if root == "" {
		root = DefaultSysfsDir
	}
	return filepath.Join(append([]string{root}, elem...)...)
}

// ByPathName is the udev by-path name of a LUN reached over TCP:
// ip-<portal>-iscsi-<iqn>-lun-<lun>, with IPv6 portals written without brackets.
func ByPathName(portal, iqn string, lun int) string {
	return "ip-" + byPathPortal(portal) + "-iscsi-" + iqn + "-lun-" + strconv.Itoa(lun)
}

// ByPathLink is the full path of ByPathName under the by-path directory. portal and iqn must
// have been validated (ParsePortal, ValidateIQN): they become part of a file name.
func (d Devices) ByPathLink(portal, iqn string, lun int) string {
	return filepath.Join(d.byPathDir(), ByPathName(portal, iqn, lun))
}

// WaitOptions bound WaitForLinks.
type WaitOptions struct {
	// Timeout bounds the wait for the first link (default 30s, the in-tree plugin's bound).
	Timeout time.Duration
	// Grace bounds the wait for the remaining links once one has appeared (default 5s): a dead
	// path must not hold up a volume that already has a live one.
	Grace time.Duration
	// MaxInterval caps the polling interval, which starts at 2ms and doubles (default 50ms).
	MaxInterval time.Duration
}

// ErrNoDevice is returned when no by-path link appeared in time.
var ErrNoDevice = errors.New("no iSCSI device appeared")

// WaitForLinks polls until every link exists, or until the timeout with none (ErrNoDevice), or
// until the grace period after the first one appeared. It returns the links that exist, in the
// order given. A stat error other than "does not exist" ends the wait with that error.
func WaitForLinks(ctx context.Context, links []string, opts WaitOptions) ([]string, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Grace <= 0 {
		opts.Grace = 5 * time.Second
	}
	if opts.MaxInterval <= 0 {
		opts.MaxInterval = 50 * time.Millisecond
	}
	start := time.Now()
	deadline := start.Add(opts.Timeout)
	interval := 2 * time.Millisecond
	var firstSeen time.Time
	for {
		var found []string
		for _, l := range links {
			_, err := os.Stat(l)
			switch {
			case err == nil:
				found = append(found, l)
			case !errors.Is(err, fs.ErrNotExist):
				return nil, fmt.Errorf("checking device link %s: %w", l, err)
			}
		}
		now := time.Now()
		if len(found) == len(links) {
			return found, nil
		}
		if len(found) > 0 {
			if firstSeen.IsZero() {
				firstSeen = now
			}
			if now.Sub(firstSeen) >= opts.Grace {
				return found, nil
			}
		} else if now.After(deadline) {
			return nil, fmt.Errorf("%w after %s: waited for %s", ErrNoDevice, now.Sub(start).Round(time.Millisecond), strings.Join(links, ", "))
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			if len(found) > 0 {
				return found, nil
			}
			return nil, fmt.Errorf("waiting for %s: %w", strings.Join(links, ", "), ctx.Err())
		case <-t.C:
		}
		interval = min(interval*2, opts.MaxInterval)
	}
}

// ResolveBlockDevice follows a device link and checks that it ends at a block device.
func ResolveBlockDevice(link string) (string, error) {
	dev, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", link, err)
	}
	st, err := os.Stat(dev)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", link, err)
	}
	if st.Mode()&fs.ModeDevice == 0 || st.Mode()&fs.ModeCharDevice != 0 {
		return "", fmt.Errorf("%s resolves to %s, which is not a block device", link, dev)
	}
	return dev, nil
}

// MultipathHolder returns the device-mapper device (/dev/dm-N) that holds dev (/dev/sdX), or ""
// when none does.
func (d Devices) MultipathHolder(dev string) (string, error) {
	holders, err := os.ReadDir(d.sysfs("block", filepath.Base(dev), "holders"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading holders of %s: %w", dev, err)
	}
	for _, h := range holders {
		if strings.HasPrefix(h.Name(), "dm-") {
			return "/dev/" + h.Name(), nil
		}
	}
	return "", nil
}

// WaitMultipath polls for the device-mapper holder of dev, up to timeout. It returns "" without
// error when none appeared: the caller then uses the path device.
func (d Devices) WaitMultipath(ctx context.Context, dev string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	interval := 5 * time.Millisecond
	for {
		dm, err := d.MultipathHolder(dev)
		if err != nil || dm != "" {
			return dm, err
		}
		if time.Now().After(deadline) {
			return "", nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(interval):
		}
		interval = min(interval*2, 100*time.Millisecond)
	}
}

// DeleteSCSIDevice asks the kernel to drop a SCSI disk (/dev/sdX) before logout, as the in-tree
// plugin does; logging out under a live device spins kernel workers (open-iscsi#90). A device
// that is already gone is success.
func (d Devices) DeleteSCSIDevice(dev string) error {
	name := filepath.Base(dev)
	if !strings.HasPrefix(name, "sd") {
		return fmt.Errorf("%s is not a SCSI disk", dev)
	}
	p := d.sysfs("block", name, "device", "delete")
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting SCSI device %s: %w", dev, err)
	}
	_, werr := f.WriteString("1")
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("deleting SCSI device %s: %w", dev, err)
	}
	return nil
}

// ScanLUN writes "0 0 <lun>" to the scan file of the SCSI host that carries the session of iqn
// on portal. Sessions are set to node.session.scan=manual so that only this LUN is mapped
// (kubernetes#90982). It fails when no such session is in sysfs.
func (d Devices) ScanLUN(iqn, portal string, lun int) error {
	host, err := d.SessionHost(iqn, portal)
	if err != nil {
		return err
	}
	p := d.sysfs("class", "scsi_host", host, "scan")
	if err := os.WriteFile(p, []byte("0 0 "+strconv.Itoa(lun)), 0); err != nil {
		return fmt.Errorf("scanning LUN %d of %s on %s: %w", lun, iqn, portal, err)
	}
	return nil
}

// SessionHost returns the SCSI host ("hostN") of the session to iqn on portal, read from
// /sys/class/iscsi_host/host*/device/session*/iscsi_session/session*/targetname and the
// connection's (persistent_)address and port.
func (d Devices) SessionHost(iqn, portal string) (string, error) {
	want := byPathPortal(portal)
	names, err := filepath.Glob(d.sysfs("class", "iscsi_host", "host*", "device", "session*", "iscsi_session", "session*", "targetname"))
	if err != nil {
		return "", err
	}
	slices.Sort(names)
	for _, tn := range names {
		b, err := os.ReadFile(tn)
		if err != nil || strings.TrimSpace(string(b)) != iqn {
			continue
		}
		// .../iscsi_host/hostN/device/sessionM/iscsi_session/sessionM/targetname
		sessionDir := filepath.Dir(filepath.Dir(filepath.Dir(tn)))
		host := filepath.Base(filepath.Dir(filepath.Dir(sessionDir)))
		conns, _ := filepath.Glob(filepath.Join(sessionDir, "connection*", "iscsi_connection", "connection*"))
		for _, c := range conns {
			for _, pre := range []string{"persistent_", ""} {
				addr, err1 := os.ReadFile(filepath.Join(c, pre+"address"))
				port, err2 := os.ReadFile(filepath.Join(c, pre+"port"))
				if err1 != nil || err2 != nil {
					continue
				}
				if strings.TrimSpace(string(addr))+":"+strings.TrimSpace(string(port)) == want {
					return host, nil
				}
			}
		}
	}
	return "", fmt.Errorf("no iSCSI session to %s on %s in %s", iqn, portal, d.sysfs("class", "iscsi_host"))
}
