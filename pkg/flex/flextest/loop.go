// Package flextest holds the one fake of the FlexVolume driver's tests: an iSCSI stand-in made
// of loop devices. LoopTargets plays the array side (a fake.Exporter for the Datera simulator:
// one sparse backing file per volume, the target's ACL); LoopInitiator plays the node side (an
// iscsi.Initiator: login attaches the volume's backing file with losetup and creates the udev
// by-path link; logout removes both). Everything else in the tests is real: the driver, the
// Datera simulator over HTTP, loop block devices, blkid, mkfs, mount.
//
// The two halves share state through files under one directory, so the initiator works in a
// driver subprocess while the simulator runs in the test process. Login refuses an initiator
// that is not in the target's ACL, as a real target does.
package flextest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/iscsi"
)

// target is the shared state of one exported storage_instance.
type target struct {
	IQN        string   `json:"iqn"`
	Backing    string   `json:"backing"`
	SizeGiB    int64    `json:"sizeGiB"`
	Exported   bool     `json:"exported"`
	AllowAll   bool     `json:"allowAll"`
	Initiators []string `json:"initiators"`
}

func targetPath(dir, iqn string) string { return filepath.Join(dir, "targets", iqn+".json") }

func readTarget(dir, iqn string) (*target, error) {
	b, err := os.ReadFile(targetPath(dir, iqn))
	if err != nil {
		return nil, err
	}
	var t target
	return &t, json.Unmarshal(b, &t)
}

func writeTarget(dir string, t *target) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	p := targetPath(dir, t.IQN)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// LoopTargets is the array side: a fake.Exporter.
type LoopTargets struct {
	Dir string
	mu  sync.Mutex
}

var _ fake.Exporter = (*LoopTargets)(nil)

// BackingFile is the sparse file of a volume.
func (l *LoopTargets) BackingFile(volumeUUID string) string {
	return filepath.Join(l.Dir, "backing", volumeUUID+".img")
}

// Export implements fake.Exporter: it creates the backing file (sparse, SizeGiB) of the first LUN.
func (l *LoopTargets) Export(_ context.Context, spec fake.TargetSpec) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(spec.LUNs) == 0 {
		return fmt.Errorf("target %s has no LUN", spec.IQN)
	}
	lun := spec.LUNs[0]
	backing := l.BackingFile(lun.VolumeUUID)
	if err := os.MkdirAll(filepath.Dir(backing), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(backing, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() < lun.SizeGiB<<30 {
		if err := f.Truncate(lun.SizeGiB << 30); err != nil {
			return err
		}
	}
	return writeTarget(l.Dir, &target{IQN: spec.IQN, Backing: backing, SizeGiB: lun.SizeGiB, Exported: true,
		AllowAll: spec.AllowAll, Initiators: spec.Initiators})
}

// SetACL implements fake.Exporter.
func (l *LoopTargets) SetACL(_ context.Context, iqn string, allowAll bool, initiators []string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, err := readTarget(l.Dir, iqn)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	t.AllowAll, t.Initiators = allowAll, initiators
	return writeTarget(l.Dir, t)
}

// Unexport implements fake.Exporter; the backing file stays for a later export.
func (l *LoopTargets) Unexport(_ context.Context, iqn string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, err := readTarget(l.Dir, iqn)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	t.Exported = false
	return writeTarget(l.Dir, t)
}

// Grow implements fake.Exporter.
func (l *LoopTargets) Grow(_ context.Context, volumeUUID string, sizeGiB int64) error {
	return os.Truncate(l.BackingFile(volumeUUID), sizeGiB<<30)
}

// Destroy implements fake.Exporter.
func (l *LoopTargets) Destroy(_ context.Context, volumeUUID string) error {
	err := os.Remove(l.BackingFile(volumeUUID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// LoopInitiator is the node side: an iscsi.Initiator backed by loop devices.
type LoopInitiator struct {
	// Dir is the LoopTargets directory.
	Dir string
	// ByPathDir receives the ip-<portal>-iscsi-<iqn>-lun-<n> links.
	ByPathDir string
	// Name is this node's initiator name, checked against the target's ACL.
	Name string
}

var _ iscsi.Initiator = (*LoopInitiator)(nil)

// Login implements iscsi.Initiator: per portal, attach the backing file (reusing a loop device
// this initiator already attached to it: the "session exists" case) and create the by-path
// link. Each initiator has its own loop devices, as each node has its own sessions, so two
// stand-in nodes on one host see different devices of one volume.
func (l *LoopInitiator) Login(ctx context.Context, req iscsi.LoginRequest) (*iscsi.LoginResult, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	t, err := readTarget(l.Dir, req.IQN)
	if err != nil || !t.Exported {
		return nil, fmt.Errorf("login to %s: target not found (exported targets: %v)", req.IQN, err)
	}
	if !t.AllowAll && !slices.Contains(t.Initiators, l.Name) {
		return nil, fmt.Errorf("login to %s: initiator %s is not in the target's ACL (authorization failure)", req.IQN, l.Name)
	}
	res := &iscsi.LoginResult{Failed: map[string]error{}}
	attached, err := l.sessions(ctx, req.IQN, t.Backing)
	if err != nil {
		return nil, err
	}
	for i, p := range req.Portals {
		var dev string
		if i < len(attached) {
			dev = attached[i]
		} else {
			out, err := exec.CommandContext(ctx, "losetup", "--find", "--show", t.Backing).CombinedOutput()
			if err != nil {
				res.Failed[p] = fmt.Errorf("losetup %s: %w: %s", t.Backing, err, out)
				continue
			}
			dev = strings.TrimSpace(string(out))
			attached = append(attached, dev)
			if err := l.saveSessions(req.IQN, attached); err != nil {
				return nil, err
			}
			if err := appendLine(filepath.Join(l.Dir, "logins.log"), req.IQN+" "+p+" "+dev+" "+l.Name); err != nil {
				return nil, err
			}
		}
		link := (iscsi.Devices{ByPathDir: l.ByPathDir}).ByPathLink(p, req.IQN, req.LUN)
		if cur, err := os.Readlink(link); err != nil || cur != dev {
			if err := os.MkdirAll(l.ByPathDir, 0o755); err != nil {
				return nil, err
			}
			_ = os.Remove(link)
			if err := os.Symlink(dev, link); err != nil {
				return nil, err
			}
		}
		res.LoggedIn = append(res.LoggedIn, p)
	}
	if len(res.LoggedIn) == 0 {
		return res, fmt.Errorf("login to %s failed on every portal: %v", req.IQN, res.Failed)
	}
	return res, nil
}

// sessionsPath holds the loop devices this initiator attached for a target, one per line.
func (l *LoopInitiator) sessionsPath(iqn string) string {
	return filepath.Join(l.Dir, "sessions", l.Name, iqn)
}

// sessions lists this initiator's loop devices of the target that are still attached to its
// backing file.
func (l *LoopInitiator) sessions(ctx context.Context, iqn, backing string) ([]string, error) {
	b, err := os.ReadFile(l.sessionsPath(iqn))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	live, err := loopsOf(ctx, backing)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range strings.Fields(string(b)) {
		if slices.Contains(live, d) {
			out = append(out, d)
		}
	}
	return out, nil
}

func (l *LoopInitiator) saveSessions(iqn string, devs []string) error {
	p := l.sessionsPath(iqn)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(strings.Join(devs, "\n")+"\n"), 0o644)
}

// Logout implements iscsi.Initiator: remove the links, detach this initiator's loop devices of
// the backing file. Nothing attached is success.
func (l *LoopInitiator) Logout(ctx context.Context, req iscsi.LogoutRequest) error {
	if err := req.Validate(); err != nil {
		return err
	}
	for _, p := range req.Portals {
		link := (iscsi.Devices{ByPathDir: l.ByPathDir}).ByPathLink(p, req.IQN, req.LUN)
		if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	t, err := readTarget(l.Dir, req.IQN)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	devs, err := l.sessions(ctx, req.IQN, t.Backing)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if out, err := exec.CommandContext(ctx, "losetup", "-d", d).CombinedOutput(); err != nil {
			return fmt.Errorf("losetup -d %s: %w: %s", d, err, out)
		}
	}
	if err := os.Remove(l.sessionsPath(req.IQN)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// DetachBacking detaches every loop device attached to file.
func DetachBacking(ctx context.Context, file string) error {
	devs, err := loopsOf(ctx, file)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if out, err := exec.CommandContext(ctx, "losetup", "-d", d).CombinedOutput(); err != nil {
			return fmt.Errorf("losetup -d %s: %w: %s", d, err, out)
		}
	}
	return nil
}

// loopsOf lists the loop devices attached to file (`losetup -j`), sorted.
func loopsOf(ctx context.Context, file string) ([]string, error) {
	if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	out, err := exec.CommandContext(ctx, "losetup", "-j", file).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("losetup -j %s: %w: %s", file, err, out)
	}
	var devs []string
	for _, line := range strings.Split(string(out), "\n") {
		if dev, _, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(dev, "/dev/loop") {
			devs = append(devs, dev)
		}
	}
	slices.Sort(devs)
	return devs, nil
}

// LoopsOf is loopsOf for tests.
func LoopsOf(file string) ([]string, error) { return loopsOf(context.Background(), file) }

// Logins counts the loop attachments ("logins") the initiator made for iqn.
func Logins(dir, iqn string) int {
	b, err := os.ReadFile(filepath.Join(dir, "logins.log"))
	if err != nil {
		return 0
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, iqn+" ") {
			n++
		}
	}
	return n
}

// LoginsBy counts the logins to iqn that the initiator named initiator made.
func LoginsBy(dir, iqn, initiator string) int {
	b, err := os.ReadFile(filepath.Join(dir, "logins.log"))
	if err != nil {
		return 0
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == iqn && f[3] == initiator {
			n++
		}
	}
	return n
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(line + "\n")
	return errors.Join(werr, f.Close())
}
