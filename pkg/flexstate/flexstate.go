// Package flexstate is the one home of the flex driver's state record: the file
// <state dir>/<volumeID>.json the driver writes for every volume it attaches on a node, and
// that the node agent reads to report which volumes are attached there (the extender keeps a
// ReadWriteOnce volume's pod on the node that holds it; the reconcile loop fences by it). The
// driver and the agent ship in one image but are not upgraded together (kubelet runs the
// installed driver binary; the agent is a DaemonSet), so the record is a versioned contract.
// This package has no dependency on the driver, so the agent links only the record.
//
// Contract version 1 (Version) is the first. Files: one <volumeID>.json per volume, with
// volumeID a pvoptions.ValidName; a file whose name starts with "." is a write in progress
// (temp file + rename) and is never read. Rules across versions:
//   - A field may be added without a new version when its absence means "not known": readers
//     ignore fields they do not know (AccessMode and Owner came this way; a record without
//     them is a volume of a version 1 PV: ReadWriteOnce, no recorded owner).
//   - A change to what a field means takes a new version. Readers accept every version from
//     oldestVersion to Version, at least the previous one.
//   - A reader refuses a newer version than it knows (Decode fails). The agent then counts the
//     volume as attached and names the file as unreadable (a wrong "attached" only keeps a
//     pod's volume pinned to this node; a wrong "detached" could let a second node attach a
//     ReadWriteOnce volume). The driver refuses to act on the record, saying which version it
//     found, rather than tear down an attachment it does not understand.
//
// testdata/record.golden.json pins the wire format.
package flexstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// Version is the record version this code writes, and the newest it reads.
const Version = 1

// oldestVersion is the oldest record version a reader still accepts.
const oldestVersion = 1

// Phases of a Record.
const (
	// PhaseAttaching: a mount is in progress or was interrupted; anything from the ACL entry to
	// the global mount may exist. Written before the first remote change, so nothing is ever
	// attached without a record that says so.
	PhaseAttaching = "attaching"
	// PhaseMounted: logged in, device mounted at the global path.
	PhaseMounted = "mounted"
	// PhaseDetached: logged out and the ACL entry removed; only local files remain.
	PhaseDetached = "detached"
)

// Record is the metadata of one volume attached on a node. Unmount, which gets only a path
// from kubelet, rebuilds everything from it. It holds no secret.
type Record struct {
	Version         int      `json:"version"`
	VolumeID        string   `json:"volumeID"`
	Phase           string   `json:"phase"`
	BackstoreServer string   `json:"backstoreServer"`
	Endpoint        string   `json:"endpoint"`
	Tenant          string   `json:"tenant,omitempty"`
	StorageInstance string   `json:"storageInstance,omitempty"`
	IQN             string   `json:"iqn,omitempty"`
	Portals         []string `json:"portals,omitempty"`
	LUN             int      `json:"lun"`
	Device          string   `json:"device,omitempty"`
	DevicePaths     []string `json:"devicePaths,omitempty"`
	GlobalMountPath string   `json:"globalMountPath"`
	FSType          string   `json:"fsType"`
	ReadOnly        bool     `json:"readOnly,omitempty"`
	// AccessMode is the mode the volume is attached in (ReadWriteOnce or ReadOnlyMany; absent
	// in a record of a version 1 PV, which is ReadWriteOnce).
	AccessMode string `json:"accessMode,omitempty"`
	// Owner is the claim the volume was attached for (nil for a version 1 PV).
	Owner         *pvoptions.Owner `json:"owner,omitempty"`
	InitiatorName string           `json:"initiatorName"`
	Mounts        []string         `json:"mounts"`
	UpdatedAt     time.Time        `json:"updatedAt"`
}

// AddMount records a pod mount of the volume; false when it was already recorded.
func (r *Record) AddMount(dir string) bool {
	if slices.Contains(r.Mounts, dir) {
		return false
	}
	r.Mounts = append(r.Mounts, dir)
	slices.Sort(r.Mounts)
	return true
}

// RemoveMount forgets a pod mount; false when it was not recorded.
func (r *Record) RemoveMount(dir string) bool {
	i := slices.Index(r.Mounts, dir)
	if i < 0 {
		return false
	}
	r.Mounts = slices.Delete(r.Mounts, i, i+1)
	return true
}

// FileName is the record file of a volume: <volumeID>.json.
func FileName(volumeID string) string { return volumeID + ".json" }

// VolumeIDOf returns the volume of a record file name; ok is false for anything else in the
// state directory (temp files, which start with ".", and names that are no volume ID).
func VolumeIDOf(name string) (volumeID string, ok bool) {
	id, ok := strings.CutSuffix(name, ".json")
	if !ok || strings.HasPrefix(name, ".") || !pvoptions.ValidName(id) {
		return "", false
	}
	return id, true
}

// Encode returns the file content of a record at Version (it sets r.Version; the caller sets
// UpdatedAt).
func Encode(r *Record) ([]byte, error) {
	r.Version = Version
	if r.Mounts == nil {
		r.Mounts = []string{}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode volume record %s: %w", r.VolumeID, err)
	}
	return append(b, '\n'), nil
}

// ErrUnknownVersion is returned by Decode for a record of a version this build does not read.
var ErrUnknownVersion = errors.New("volume record version not readable by this build")

// Decode parses a record file's content and checks its version.
func Decode(b []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("volume record is not valid JSON: %w", err)
	}
	if r.Version < oldestVersion || r.Version > Version {
		return nil, fmt.Errorf("%w: version %d (this build reads versions %d to %d; a newer driver wrote it)", ErrUnknownVersion, r.Version, oldestVersion, Version)
	}
	return &r, nil
}

// Attached lists the volumes attached on this node according to the records in dir, sorted:
// every record not in PhaseDetached, and every record file that cannot be read or decoded
// (listed again in unreadable: counting it attached is the safe error). A missing directory
// means no volume was ever attached here.
func Attached(dir string) (vols []string, unreadable []string, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return []string{}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read driver state directory: %w", err)
	}
	vols = []string{}
	for _, e := range entries {
		id, ok := VolumeIDOf(e.Name())
		if !ok || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed between ReadDir and ReadFile: detached
		}
		var rec *Record
		if err == nil {
			rec, err = Decode(b)
		}
		if err != nil {
			unreadable = append(unreadable, e.Name())
		} else if rec.Phase == PhaseDetached {
			continue
		}
		vols = append(vols, id)
	}
	slices.Sort(vols)
	return vols, unreadable, nil
}
