package product

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/mount-utils"
)

// Leak probes: a suite takes a Snapshot before it starts anything and one at the end, and
// Leaked lists, precisely, what the second holds that the first did not. Each probe is
// optional (its field left zero: not looked at), so suites that run only part of the product
// (no tgtd, no simulator) use the rest.

// LeakProbes say where a Snapshot looks.
type LeakProbes struct {
	// Client lists PersistentVolumes.
	Client kubernetes.Interface
	// AppInstances lists the Datera volumes (and their ACL entries), e.g. Env.AppInstances or
	// DateraAt(url).
	AppInstances func(context.Context) ([]AppInstance, error)
	// TgtTargets lists tgtd's targets, e.g. Env.TgtTargets or TgtdOn(port).
	TgtTargets func(context.Context) ([]string, error)
	// MountRoots: mount points at or under any of these count.
	MountRoots []string
	// LoopRoots: loop devices whose backing file is under any of these count.
	LoopRoots []string
	// PIDs: any of these processes that still runs counts (zombies do not: they run nothing).
	PIDs []int
	// CmdlineMarkers: any running process (other than this one) whose command line contains
	// one of these counts.
	CmdlineMarkers []string
}

// Snapshot is what the probes saw, each kind sorted.
type Snapshot struct {
	PVs           []string // PV names
	DateraVolumes []string // app_instance names
	ACLEntries    []string // "<app_instance> <initiator>"
	TgtTargets    []string // target IQNs
	Mounts        []string // mount points
	LoopDevices   []string // "/dev/loopN <backing file>"
	Processes     []string // "<pid> <command line>"
}

// LeakProbes are the probes of the whole product environment: its cluster's PVs, the
// simulator's volumes and ACLs, its tgtd's targets, mounts and loop devices under Dir, the
// processes it started (those running now) and any whose command line names Dir.
func (e *Env) LeakProbes() LeakProbes {
	return LeakProbes{
		Client: e.Client, AppInstances: e.AppInstances, TgtTargets: e.TgtTargets,
		MountRoots: []string{e.Dir}, LoopRoots: []string{e.Dir},
		PIDs: e.PIDs(), CmdlineMarkers: []string{e.Dir},
	}
}

// DateraAt lists the app_instances of the Datera simulator at url (as Env.AppInstances does).
func DateraAt(url string) func(context.Context) ([]AppInstance, error) {
	return (&Env{SimURL: url}).AppInstances
}

// TgtdOn lists the targets of the tgtd listening on control port port (as Env.TgtTargets
// does: tgtadm --lld iscsi --mode target --op show).
func TgtdOn(port int) func(context.Context) ([]string, error) {
	return (&Env{TgtControlPort: port}).TgtTargets
}

// TakeSnapshot runs every configured probe. Errors of all probes are joined; the snapshot
// holds what the others saw.
func TakeSnapshot(ctx context.Context, p LeakProbes) (Snapshot, error) {
	var s Snapshot
	var errs []error
	if p.Client != nil {
		pvs, err := p.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("list PersistentVolumes: %w", err))
		} else {
			for _, pv := range pvs.Items {
				s.PVs = append(s.PVs, pv.Name)
			}
		}
	}
	if p.AppInstances != nil {
		ais, err := p.AppInstances(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("list Datera app_instances: %w", err))
		}
		for _, ai := range ais {
			s.DateraVolumes = append(s.DateraVolumes, ai.Name)
			for _, ini := range ai.ACL {
				s.ACLEntries = append(s.ACLEntries, ai.Name+" "+ini)
			}
		}
	}
	if p.TgtTargets != nil {
		t, err := p.TgtTargets(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("list tgtd targets: %w", err))
		}
		s.TgtTargets = t
	}
	var err error
	if len(p.MountRoots) > 0 {
		if s.Mounts, err = MountsUnder(p.MountRoots...); err != nil {
			errs = append(errs, err)
		}
	}
	if len(p.LoopRoots) > 0 {
		if s.LoopDevices, err = LoopsBackedUnder(p.LoopRoots...); err != nil {
			errs = append(errs, err)
		}
	}
	if len(p.PIDs) > 0 || len(p.CmdlineMarkers) > 0 {
		if s.Processes, err = Processes(p.PIDs, p.CmdlineMarkers); err != nil {
			errs = append(errs, err)
		}
	}
	for _, l := range []*[]string{&s.PVs, &s.DateraVolumes, &s.ACLEntries, &s.TgtTargets, &s.Mounts, &s.LoopDevices, &s.Processes} {
		slices.Sort(*l)
	}
	return s, errors.Join(errs...)
}

// Leaked lists what after holds that s (taken before) did not, one "<kind>: <item>" a line,
// in the order PVs, Datera volumes, ACL entries, tgtd targets, mounts, loop devices,
// processes. Empty: nothing leaked.
func (s Snapshot) Leaked(after Snapshot) []string {
	var out []string
	add := func(kind string, before, now []string) {
		for _, x := range now {
			if !slices.Contains(before, x) {
				out = append(out, kind+": "+x)
			}
		}
	}
	add("PersistentVolume", s.PVs, after.PVs)
	add("Datera volume", s.DateraVolumes, after.DateraVolumes)
	add("Datera ACL entry", s.ACLEntries, after.ACLEntries)
	add("tgtd target", s.TgtTargets, after.TgtTargets)
	add("mount", s.Mounts, after.Mounts)
	add("loop device", s.LoopDevices, after.LoopDevices)
	add("process", s.Processes, after.Processes)
	return out
}

// under reports whether path is root or below it.
func under(path string, roots []string) bool {
	for _, r := range roots {
		r = filepath.Clean(r)
		if path == r || strings.HasPrefix(path, r+"/") {
			return true
		}
	}
	return false
}

// MountsUnder lists the mount points at or under any of roots (this process's mount
// namespace, /proc/self/mountinfo).
func MountsUnder(roots ...string) ([]string, error) {
	mi, err := mount.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	var out []string
	for _, m := range mi {
		if under(m.MountPoint, roots) {
			out = append(out, m.MountPoint)
		}
	}
	return out, nil
}

// LoopsBackedUnder lists the attached loop devices whose backing file is under any of roots,
// as "/dev/loopN <backing file>" (from /sys/block/loop*/loop/backing_file; a deleted backing
// file keeps its path with " (deleted)" appended, and still counts).
func LoopsBackedUnder(roots ...string) ([]string, error) {
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // detached since the glob
		}
		backing := strings.TrimSpace(string(b))
		if under(strings.TrimSuffix(backing, " (deleted)"), roots) {
			dev := filepath.Base(filepath.Dir(filepath.Dir(f)))
			out = append(out, "/dev/"+dev+" "+backing)
		}
	}
	return out, nil
}

// Processes lists, as "<pid> <command line>", the running processes among pids and those
// (other than this one) whose command line contains any of markers. Zombies (exited, not yet
// reaped by their parent) are not running and are left out.
func Processes(pids []int, markers []string) ([]string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []string
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // exited since the listing
		}
		cmdline := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		match := slices.Contains(pids, pid)
		for _, m := range markers {
			if m != "" && strings.Contains(cmdline, m) {
				match = true
			}
		}
		if !match || zombie(pid) {
			continue
		}
		out = append(out, strconv.Itoa(pid)+" "+cmdline)
	}
	return out, nil
}

// zombie reports whether pid is in state Z (or gone).
func zombie(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	// "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}
