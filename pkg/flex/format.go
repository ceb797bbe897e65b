package flex

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	utilexec "k8s.io/utils/exec"
)

// DeviceProbe is what is on a device, established without writing to it.
type DeviceProbe struct {
	// Blank: blkid found no signature (exit 2) AND the device exists, is a block device of
	// non-zero size, and its first and last MiB read back as zeros.
	Blank bool
	// FSType is the filesystem blkid found ("" when none).
	FSType string
	// Other names what makes the device neither blank nor a filesystem (a partition table,
	// data without a signature).
	Other string
	// Size in bytes.
	Size int64
}

// probeWindow is how much of each end of the device must be zeros to call it blank.
const probeWindow = 1 << 20

// ProbeDevice decides whether a device is blank, holds a filesystem, or holds something else.
// Any doubt is an error, never "blank": blkid's exit 2 also means "could not probe" (it is what
// a missing device gives), which wiped disks in kubernetes#95183, so "blank" additionally needs
// the device to be readable and to read back as zeros where every filesystem, partition table
// and volume-manager label keeps its signature.
func ProbeDevice(ctx context.Context, ex utilexec.Interface, dev string) (DeviceProbe, error) {
	var p DeviceProbe
	st, err := os.Stat(dev)
	if err != nil {
		return p, fmt.Errorf("probing %s: %w", dev, err)
	}
	if st.Mode()&fs.ModeDevice == 0 || st.Mode()&fs.ModeCharDevice != 0 {
		return p, fmt.Errorf("probing %s: not a block device", dev)
	}
	head, tail, size, err := readEnds(dev)
	if err != nil {
		return p, fmt.Errorf("probing %s: the device cannot be read: %w", dev, err)
	}
	p.Size = size
	out, err := ex.CommandContext(ctx, "blkid", "-p", "-s", "TYPE", "-s", "PTTYPE", "-o", "export", dev).CombinedOutput()
	var ee utilexec.ExitError
	switch {
	case err == nil:
		fstype, pttype := parseBlkid(string(out))
		switch {
		case pttype != "":
			p.Other = "a partition table (" + pttype + ")"
		case fstype != "":
			p.FSType = fstype
		default:
			return p, fmt.Errorf("probing %s: blkid succeeded without a TYPE or PTTYPE: %q", dev, clip(string(out)))
		}
	case errors.As(err, &ee) && ee.Exited() && ee.ExitStatus() == 2:
		if allZero(head) && allZero(tail) {
			p.Blank = true
		} else {
			p.Other = "data without a signature blkid recognizes"
		}
	default:
		return p, fmt.Errorf("probing %s: blkid failed: %v: %s", dev, err, clip(strings.TrimSpace(string(out))))
	}
	return p, nil
}

func readEnds(dev string) (head, tail []byte, size int64, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, nil, 0, err
	}
	defer f.Close()
	size, err = f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, nil, 0, err
	}
	if size <= 0 {
		return nil, nil, 0, fmt.Errorf("size is %d", size)
	}
	n := min(size, probeWindow)
	head = make([]byte, n)
	if _, err := f.ReadAt(head, 0); err != nil {
		return nil, nil, 0, err
	}
	tail = make([]byte, n)
	if _, err := f.ReadAt(tail, size-n); err != nil {
		return nil, nil, 0, err
	}
	return head, tail, size, nil
}

func allZero(b []byte) bool {
	var zero [4096]byte
	for len(b) > 0 {
		n := min(len(b), len(zero))
		if !bytes.Equal(b[:n], zero[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

func parseBlkid(out string) (fstype, pttype string) {
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok {
			continue
		}
		switch k {
		case "TYPE":
			fstype = v
		case "PTTYPE":
			pttype = v
		}
	}
	return fstype, pttype
}

// mountableFS are filesystems found on a volume that the driver mounts as they are.
var mountableFS = []string{"ext2", "ext3", "ext4", "xfs", "btrfs"}

// fsDecision is how to bring a probed device to a mounted filesystem.
type fsDecision struct {
	FSType string
	Format bool
	// Note explains a deviation from the request (logged).
	Note string
}

// decideFilesystem is the pure policy: format only a verified-blank device mounted read-write;
// mount an existing filesystem as what it is (its data wins over the PV's fsType); refuse
// everything else.
func decideFilesystem(p DeviceProbe, requested string, readOnly bool) (fsDecision, error) {
	switch {
	case p.Blank && readOnly:
		return fsDecision{}, errors.New("the volume is blank and requested read-only: refusing to format it read-only; mount it read-write once")
	case p.Blank:
		return fsDecision{FSType: requested, Format: true}, nil
	case p.FSType != "" && slices.Contains(mountableFS, p.FSType):
		d := fsDecision{FSType: p.FSType}
		if p.FSType != requested {
			d.Note = fmt.Sprintf("the volume already holds %s; mounting it as %s instead of the requested %s (never reformatted)", p.FSType, p.FSType, requested)
		}
		return d, nil
	case p.FSType != "":
		return fsDecision{}, fmt.Errorf("the volume holds %q, which is not a filesystem this driver mounts: refusing to mount or format it", p.FSType)
	default:
		return fsDecision{}, fmt.Errorf("the volume holds %s: refusing to format it (it may hold data)", p.Other)
	}
}

// guardedExec hands k8s.io/mount-utils an exec that refuses mkfs unless the driver armed it for
// exactly that device after its own probe, and re-probes right before running it. So even if
// mount-utils' own blkid check (exit 2 → "unformatted") were fooled by a transient failure, no
// device with data is formatted.
type guardedExec struct {
	utilexec.Interface
	ctx      context.Context
	allowDev string
	// formatted is called after mkfs ran (with its error); it logs and passes the crash point.
	formatted func(dev, cmd string, err error)
}

func (g *guardedExec) Command(cmd string, args ...string) utilexec.Cmd {
	if !strings.HasPrefix(cmd, "mkfs") {
		return g.Interface.Command(cmd, args...)
	}
	return &guardedMkfs{Cmd: g.Interface.CommandContext(g.ctx, cmd, args...), g: g, cmd: cmd, args: args}
}

func (g *guardedExec) CommandContext(ctx context.Context, cmd string, args ...string) utilexec.Cmd {
	if !strings.HasPrefix(cmd, "mkfs") {
		return g.Interface.CommandContext(ctx, cmd, args...)
	}
	return &guardedMkfs{Cmd: g.Interface.CommandContext(ctx, cmd, args...), g: g, cmd: cmd, args: args}
}

type guardedMkfs struct {
	utilexec.Cmd
	g    *guardedExec
	cmd  string
	args []string
}

func (m *guardedMkfs) check() error {
	if len(m.args) == 0 {
		return errors.New("mkfs without a device")
	}
	dev := m.args[len(m.args)-1]
	if m.g.allowDev == "" || dev != m.g.allowDev {
		return fmt.Errorf("refusing %s %s: the driver did not verify that device as blank", m.cmd, dev)
	}
	p, err := ProbeDevice(m.g.ctx, m.g.Interface, dev)
	if err != nil {
		return fmt.Errorf("refusing %s: %w", m.cmd, err)
	}
	if !p.Blank {
		return fmt.Errorf("refusing %s %s: the device is no longer blank (%s%s)", m.cmd, dev, p.FSType, p.Other)
	}
	return nil
}

func (m *guardedMkfs) CombinedOutput() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	out, err := m.Cmd.CombinedOutput()
	if m.g.formatted != nil {
		m.g.formatted(m.args[len(m.args)-1], m.cmd, err)
	}
	return out, err
}

func (m *guardedMkfs) Output() ([]byte, error) { return m.CombinedOutput() }

func (m *guardedMkfs) Run() error {
	_, err := m.CombinedOutput()
	return err
}

func (m *guardedMkfs) Start() error {
	return fmt.Errorf("refusing to start %s asynchronously", m.cmd)
}
