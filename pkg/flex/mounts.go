package flex

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"
)

// mountTable is a snapshot of /proc/self/mountinfo.
type mountTable []mount.MountInfo

const mountInfoPath = "/proc/self/mountinfo"

func readMountTable() (mountTable, error) {
	mi, err := mount.ParseMountInfo(mountInfoPath)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", mountInfoPath, err)
	}
	return mountTable(mi), nil
}

// find returns the topmost mount at path, or nil.
func (t mountTable) find(path string) *mount.MountInfo {
	for i := len(t) - 1; i >= 0; i-- {
		if t[i].MountPoint == path {
			return &t[i]
		}
	}
	return nil
}

// sameFS lists the other mount points of the filesystem mounted as m (bind mounts of it or of
// its subdirectories), except the paths in exclude.
func (t mountTable) sameFS(m *mount.MountInfo, exclude ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range exclude {
		seen[e] = true
	}
	for _, e := range t {
		if e.Major == m.Major && e.Minor == m.Minor && !seen[e.MountPoint] {
			seen[e.MountPoint] = true
			out = append(out, e.MountPoint)
		}
	}
	return out
}

// isDevice reports whether the mount m is of the block device dev.
func isDevice(m *mount.MountInfo, dev string) (bool, error) {
	st, err := os.Stat(dev)
	if err != nil {
		return false, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return false, fmt.Errorf("stat %s: no device number", dev)
	}
	rdev := uint64(sys.Rdev) //nolint:unconvert // Rdev is not uint64 on every architecture
	return m.Major == int(unix.Major(rdev)) && m.Minor == int(unix.Minor(rdev)), nil
}
