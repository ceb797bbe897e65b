package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// phaseDetached is the flex driver's record phase for a volume that is logged out and
// removed from the ACL (pkg/flex.PhaseDetached; repeated here so the agent does not link
// the driver).
const phaseDetached = "detached"

// AttachedVolumes lists the volumeIDs the FlexVolume driver has attached on this node,
// sorted (see the package documentation for the state directory contract). A missing
// directory means no volume was ever attached here.
func AttachedVolumes(dir string) (vols []string, unreadable []string, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return []string{}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read driver state directory: %w", err)
	}
	vols = []string{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") {
			continue
		}
		id := strings.TrimSuffix(name, ".json")
		if id == "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed between ReadDir and ReadFile: detached
		}
		var rec struct {
			Phase string `json:"phase"`
		}
		if err != nil || json.Unmarshal(b, &rec) != nil {
			unreadable = append(unreadable, name)
		} else if rec.Phase == phaseDetached {
			continue
		}
		vols = append(vols, id)
	}
	slices.Sort(vols)
	return vols, unreadable, nil
}
