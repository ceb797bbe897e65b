package iscsi

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDiskLUN: the volume's disk is found by its SCSI type. A disk at the wanted LUN (Datera's
// LUN 0) is taken without more scanning; a controller there (tgt's LUN 0) makes the whole
// target scanned and the one disk behind it chosen; no disk or several are errors; a LUN not
// visible yet is left to the device wait.
func TestDiskLUN(t *testing.T) {
	tests := []struct {
		name     string
		types    map[int]int // LUN → SCSI type mapped in sysfs
		want     int
		wantErr  string
		wantScan string // content of the host's scan file afterwards ("" = untouched)
	}{
		{name: "Datera: disk at LUN 0", types: map[int]int{0: 0}, want: 0},
		{name: "tgt: controller at 0, disk at 1", types: map[int]int{0: 12, 1: 0}, want: 1, wantScan: "0 0 -"},
		{name: "controller only", types: map[int]int{0: 12}, want: 0, wantErr: "has no disk LUN", wantScan: "0 0 -"},
		{name: "two disks", types: map[int]int{0: 12, 1: 0, 2: 0}, want: 0, wantErr: "has 2 disk LUNs [1 2]", wantScan: "0 0 -"},
		{name: "nothing mapped yet", types: nil, want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sys := t.TempDir()
			scan := sysfsSession(t, sys, "host3", "session1", portalA)
			for lun, typ := range tc.types {
				dev := filepath.Join(sys, "class", "scsi_host", "host3", "device", "session1", "target3:0:0", "3:0:0:"+strconv.Itoa(lun))
				require.NoError(t, os.MkdirAll(dev, 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(dev, "type"), []byte(strconv.Itoa(typ)+"\n"), 0o644))
			}
			got, err := Devices{SysfsDir: sys}.DiskLUN(testIQN, portalA, 0)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tc.want, got)
			b, err := os.ReadFile(scan)
			require.NoError(t, err)
			assert.Equal(t, tc.wantScan, string(b))
		})
	}
	_, err := Devices{SysfsDir: t.TempDir()}.DiskLUN(testIQN, portalA, 0)
	require.ErrorContains(t, err, "no iSCSI session")
}
